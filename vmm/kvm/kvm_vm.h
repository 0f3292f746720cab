// KvmVm: one KVM virtual machine fd: memory slots, in-kernel irqchip/PIT, interrupt lines, vCPUs.
#ifndef VESSEL_VMM_KVM_KVM_VM_H_
#define VESSEL_VMM_KVM_KVM_VM_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/base/scoped_fd.h"

namespace vessel {

class KvmVcpu;

class KvmVm {
 public:
  KvmVm(ScopedFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  KvmVm(KvmVm&&) = default;
  KvmVm& operator=(KvmVm&&) = default;

  int fd() const { return fd_.get(); }
  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  absl::Status SetTssAddress(uint64_t gpa);
  absl::Status SetIdentityMapAddress(uint64_t gpa);
  absl::Status CreateIrqchip();
  absl::Status CreatePit();
  // KVM_IRQ_LINE on the in-kernel PIC/IOAPIC. Safe from any thread.
  absl::Status SetIrqLine(uint32_t irq, bool level);
  absl::StatusOr<KvmVcpu> CreateVcpu(uint32_t id);
  // KVM_IOEVENTFD: a `len`-byte MMIO write of `datamatch` to `gpa` signals `eventfd` instead of
  // exiting to userspace. Undone when the VM fd closes.
  absl::Status RegisterIoeventfd(uint64_t gpa, uint32_t len, uint64_t datamatch, int eventfd);
  // KVM_IRQFD: each write to `eventfd` injects an edge on `gsi` of the in-kernel irqchip.
  absl::Status RegisterIrqfd(int eventfd, uint32_t gsi);
  // A VM ioctl on one fixed-size structure, as raw bytes (see KvmVcpu::GetRaw). The argument is
  // initialised from `in` (KVM_GET_IRQCHIP reads its chip_id from it); empty means zeros.
  absl::StatusOr<std::string> GetRaw(unsigned long request, size_t size, const char* name,
                                     absl::string_view in = {}) const;
  absl::Status SetRaw(unsigned long request, absl::string_view bytes, size_t size, const char* name);

 private:
  ScopedFd fd_;
  int vcpu_mmap_size_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_KVM_VM_H_
