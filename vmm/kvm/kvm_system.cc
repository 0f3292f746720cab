#include "vmm/kvm/kvm_system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/kvm/kvm_flex_ioctls.h"
#include "vmm/kvm/kvm_vm.h"

namespace vessel {

const std::vector<RequiredCap>& RequiredKvmCaps() {
  static const auto* caps = new std::vector<RequiredCap>{
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
      {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
      {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
  };
  return *caps;
}

absl::StatusOr<KvmSystem> KvmSystem::Open(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    if (err == ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " does not exist: this host has no KVM. Enable virtualization (VT-x/AMD-V) in the "
                "firmware or nested virtualization for this VM, then load kvm_intel or kvm_amd"));
    }
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(absl::StrCat(
          "no permission to open ", path, ": run as root or add this user to the 'kvm' group "
          "(usermod -aG kvm $USER) and log in again"));
    }
    return ErrnoStatus(absl::StrCat("open ", path));
  }
  int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " speaks KVM API version ", version, "; vessel needs ", KVM_API_VERSION));
  }
  KvmSystem sys(std::move(fd));
  std::string missing;
  for (const RequiredCap& c : RequiredKvmCaps()) {
    if (sys.CheckExtension(c.cap) <= 0) absl::StrAppend(&missing, missing.empty() ? "" : ", ", c.name);
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "KVM at ", path, " lacks capabilities vessel needs: ", missing,
        ". Use a newer host kernel (5.10 or later) with the in-kernel irqchip"));
  }
  sys.vcpu_mmap_size_ = ::ioctl(sys.fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (sys.vcpu_mmap_size_ < static_cast<int>(sizeof(kvm_run))) {
    return ErrnoStatus("KVM_GET_VCPU_MMAP_SIZE");
  }
  return sys;
}

int KvmSystem::CheckExtension(int cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> KvmSystem::SupportedCpuid() const {
  for (uint32_t n = 128; n <= 4096; n *= 2) {
    std::vector<kvm_cpuid_entry2> entries(n);
    uint32_t count = n;
    if (vessel_kvm_get_supported_cpuid(fd_.get(), entries.data(), &count) == 0) {
      entries.resize(count);
      return entries;
    }
    if (errno != E2BIG) return ErrnoStatus("KVM_GET_SUPPORTED_CPUID");
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

absl::StatusOr<KvmVm> KvmSystem::CreateVm() const {
  int vm;
  do {
    vm = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (vm < 0 && errno == EINTR);
  if (vm < 0) return ErrnoStatus("KVM_CREATE_VM");
  return KvmVm(ScopedFd(vm), vcpu_mmap_size_);
}

#if defined(__x86_64__)
absl::StatusOr<std::vector<uint32_t>> KvmSystem::MsrIndexList() const {
  uint32_t n = 512;
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::vector<uint32_t> indices(n);
    uint32_t got = n;
    if (vessel_kvm_get_msr_index_list(fd_.get(), indices.data(), &got) == 0) {
      indices.resize(got);
      return indices;
    }
    if (errno != E2BIG) return ErrnoStatus("KVM_GET_MSR_INDEX_LIST");
    n = std::max(got, n * 2);
  }
  return absl::InternalError("KVM_GET_MSR_INDEX_LIST: too many MSRs");
}
#endif

}  // namespace vessel
