// KvmSystem: the open /dev/kvm handle, its API version and capabilities.
#ifndef VESSEL_VMM_KVM_KVM_SYSTEM_H_
#define VESSEL_VMM_KVM_KVM_SYSTEM_H_

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/scoped_fd.h"

namespace vessel {

class KvmVm;

class KvmSystem {
 public:
  // Opens `path`, checks KVM_GET_API_VERSION == 12 and every capability vessel needs. Errors say
  // what is missing and how to fix it (no device, no permission, old kernel).
  static absl::StatusOr<KvmSystem> Open(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION on the system fd (0 when absent).
  int CheckExtension(int cap) const;
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  // KVM_GET_SUPPORTED_CPUID.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> SupportedCpuid() const;
  absl::StatusOr<KvmVm> CreateVm() const;
#if defined(__x86_64__)
  // KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores for a vCPU.
  absl::StatusOr<std::vector<uint32_t>> MsrIndexList() const;
#endif

 private:
  explicit KvmSystem(ScopedFd fd) : fd_(std::move(fd)) {}
  ScopedFd fd_;
  int vcpu_mmap_size_ = 0;
};

// Capabilities vessel requires, with the name used in error messages.
struct RequiredCap {
  int cap;
  const char* name;
};
const std::vector<RequiredCap>& RequiredKvmCaps();

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_KVM_SYSTEM_H_
