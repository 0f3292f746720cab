#include "vmm/kvm/kvm_vcpu.h"

#include <sys/ioctl.h>

#include <algorithm>


#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/base/errors.h"
#include "vmm/kvm/raw_ioctl.h"
#include "vmm/kvm/kvm_flex_ioctls.h"

namespace vessel {

int KvmVcpu::Run() { return ::ioctl(fd_.get(), KVM_RUN, 0) == 0 ? 0 : errno; }

absl::StatusOr<kvm_regs> KvmVcpu::GetRegs() const {
  kvm_regs regs;
  if (::ioctl(fd_.get(), KVM_GET_REGS, &regs) != 0) return ErrnoStatus("KVM_GET_REGS");
  return regs;
}

absl::Status KvmVcpu::SetRegs(const kvm_regs& regs) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &regs) != 0) return ErrnoStatus("KVM_SET_REGS");
  return absl::OkStatus();
}

absl::StatusOr<kvm_sregs> KvmVcpu::GetSregs() const {
  kvm_sregs sregs;
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &sregs) != 0) return ErrnoStatus("KVM_GET_SREGS");
  return sregs;
}

absl::Status KvmVcpu::SetSregs(const kvm_sregs& sregs) {
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &sregs) != 0) return ErrnoStatus("KVM_SET_SREGS");
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetFpu(const kvm_fpu& fpu) {
  if (::ioctl(fd_.get(), KVM_SET_FPU, &fpu) != 0) return ErrnoStatus("KVM_SET_FPU");
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  if (vessel_kvm_set_cpuid2(fd_.get(), entries.data(), static_cast<uint32_t>(entries.size())) != 0) {
    return ErrnoStatus("KVM_SET_CPUID2");
  }
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetMsrs(const std::vector<kvm_msr_entry>& entries) {
  int n = vessel_kvm_set_msrs(fd_.get(), entries.data(), static_cast<uint32_t>(entries.size()));
  if (n < 0) return ErrnoStatus("KVM_SET_MSRS");
  if (static_cast<size_t>(n) != entries.size()) {
    return absl::InternalError(absl::StrFormat("KVM_SET_MSRS: KVM refused MSR %#x",
                                               entries[static_cast<size_t>(n)].index));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> KvmVcpu::GetMsrs(const std::vector<uint32_t>& indices) const {
  std::vector<kvm_msr_entry> entries(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
  int n = vessel_kvm_get_msrs(fd_.get(), entries.data(), static_cast<uint32_t>(entries.size()));
  if (n < 0 || static_cast<size_t>(n) != indices.size()) return ErrnoStatus("KVM_GET_MSRS");
  std::vector<uint64_t> values;
  for (const kvm_msr_entry& e : entries) values.push_back(e.data);
  return values;
}

absl::StatusOr<kvm_lapic_state> KvmVcpu::GetLapic() const {
  kvm_lapic_state lapic;
  if (::ioctl(fd_.get(), KVM_GET_LAPIC, &lapic) != 0) return ErrnoStatus("KVM_GET_LAPIC");
  return lapic;
}

absl::Status KvmVcpu::SetLapic(const kvm_lapic_state& lapic) {
  if (::ioctl(fd_.get(), KVM_SET_LAPIC, &lapic) != 0) return ErrnoStatus("KVM_SET_LAPIC");
  return absl::OkStatus();
}

absl::StatusOr<kvm_vcpu_events> KvmVcpu::GetEvents() const {
  kvm_vcpu_events events;
  if (::ioctl(fd_.get(), KVM_GET_VCPU_EVENTS, &events) != 0) return ErrnoStatus("KVM_GET_VCPU_EVENTS");
  return events;
}

absl::Status KvmVcpu::SetEvents(const kvm_vcpu_events& events) {
  if (::ioctl(fd_.get(), KVM_SET_VCPU_EVENTS, &events) != 0) return ErrnoStatus("KVM_SET_VCPU_EVENTS");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> KvmVcpu::Translate(uint64_t gva) const {
  kvm_translation tr = {};
  tr.linear_address = gva;
  if (::ioctl(fd_.get(), KVM_TRANSLATE, &tr) != 0) return ErrnoStatus("KVM_TRANSLATE");
  if (!tr.valid) {
    return absl::NotFoundError(absl::StrFormat("guest virtual address %#x is not mapped", gva));
  }
  return static_cast<uint64_t>(tr.physical_address);
}

absl::StatusOr<std::string> KvmVcpu::GetRaw(unsigned long request, size_t size,
                                            const char* name) const {
  return RawIoctlGet(fd_.get(), request, size, name);
}

absl::Status KvmVcpu::SetRaw(unsigned long request, absl::string_view bytes, size_t size,
                             const char* name) {
  return RawIoctlSet(fd_.get(), request, bytes, size, name);
}

#if defined(__x86_64__)
absl::StatusOr<std::vector<kvm_cpuid_entry2>> KvmVcpu::GetCpuid() const {
  uint32_t n = 256;
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::vector<kvm_cpuid_entry2> entries(n);
    uint32_t got = n;
    if (vessel_kvm_get_cpuid2(fd_.get(), entries.data(), &got) == 0) {
      entries.resize(got);
      return entries;
    }
    if (errno != E2BIG) return ErrnoStatus("KVM_GET_CPUID2");
    n = std::max(got, n * 2);
  }
  return absl::InternalError("KVM_GET_CPUID2: too many entries");
}

absl::StatusOr<std::string> KvmVcpu::GetXsave() const {
  std::string bytes(vessel_kvm_xsave_size(), '\0');
  if (vessel_kvm_get_xsave(fd_.get(), bytes.data()) < 0) return ErrnoStatus("KVM_GET_XSAVE");
  return bytes;
}

absl::Status KvmVcpu::SetXsave(absl::string_view bytes) {
  if (bytes.size() != vessel_kvm_xsave_size()) {
    return absl::InvalidArgumentError(absl::StrCat("KVM_SET_XSAVE: the state holds ", bytes.size(),
                                                   " bytes, KVM expects ", vessel_kvm_xsave_size()));
  }
  std::string copy(bytes);
  if (vessel_kvm_set_xsave(fd_.get(), copy.data()) < 0) return ErrnoStatus("KVM_SET_XSAVE");
  return absl::OkStatus();
}
#endif

}  // namespace vessel
