// KvmVcpu: one vCPU fd and its mmap'd kvm_run, with typed register accessors.
#ifndef VESSEL_VMM_KVM_KVM_VCPU_H_
#define VESSEL_VMM_KVM_KVM_VCPU_H_

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/base/scoped_mmap.h"

namespace vessel {

class KvmVcpu {
 public:
  KvmVcpu(uint32_t id, ScopedFd fd, ScopedMmap run)
      : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}
  KvmVcpu(KvmVcpu&&) = default;
  KvmVcpu& operator=(KvmVcpu&&) = default;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_.data()); }

  // One KVM_RUN. Returns the raw errno on failure (EINTR/EAGAIN are normal kicks).
  int Run();

  absl::StatusOr<kvm_regs> GetRegs() const;
  absl::Status SetRegs(const kvm_regs& regs);
  absl::StatusOr<kvm_sregs> GetSregs() const;
  absl::Status SetSregs(const kvm_sregs& sregs);
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::Status SetCpuid(const std::vector<kvm_cpuid_entry2>& entries);
  // KVM_SET_MSRS; fails unless every entry was accepted.
  absl::Status SetMsrs(const std::vector<kvm_msr_entry>& entries);
  // KVM_GET_MSRS for the given indices, in order.
  absl::StatusOr<std::vector<uint64_t>> GetMsrs(const std::vector<uint32_t>& indices) const;
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic);
  absl::StatusOr<kvm_vcpu_events> GetEvents() const;
  absl::Status SetEvents(const kvm_vcpu_events& events);
  // KVM_TRANSLATE: guest-virtual to guest-physical under the vCPU's current paging.
  absl::StatusOr<uint64_t> Translate(uint64_t gva) const;

  // A KVM_GET_x / KVM_SET_x ioctl whose argument is one fixed-size structure of `size` bytes, as
  // raw bytes (the snapshot state file keeps KVM structures that way). SetRaw refuses bytes of
  // another size, naming `name`.
  absl::StatusOr<std::string> GetRaw(unsigned long request, size_t size, const char* name) const;
  absl::Status SetRaw(unsigned long request, absl::string_view bytes, size_t size, const char* name);
#if defined(__x86_64__)
  // KVM_GET_CPUID2: the CPUID entries this vCPU was given.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetCpuid() const;
  // KVM_GET_XSAVE / KVM_SET_XSAVE as raw bytes of struct kvm_xsave.
  absl::StatusOr<std::string> GetXsave() const;
  absl::Status SetXsave(absl::string_view bytes);
#endif

 private:
  uint32_t id_;
  ScopedFd fd_;
  ScopedMmap run_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_KVM_VCPU_H_
