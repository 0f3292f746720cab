#include "arch/x86_64/kvm_state.h"

#include <cpuid.h>
#include <linux/kvm.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/base/errors.h"
#include "vmm/kvm/kvm_flex_ioctls.h"

namespace vessel::x86 {
namespace {

// KVM_GET_IRQCHIP reads chip_id from its argument.
std::string IrqchipIn(uint32_t chip_id) {
  kvm_irqchip chip;
  std::memset(&chip, 0, sizeof(chip));
  chip.chip_id = chip_id;
  return std::string(reinterpret_cast<const char*>(&chip), sizeof(chip));
}

absl::Status SetIrqchip(KvmVm& vm, const std::string& bytes, uint32_t chip_id, const char* name) {
  if (bytes.size() != sizeof(kvm_irqchip)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the state holds ", bytes.size(),
                                                   " bytes, KVM expects ", sizeof(kvm_irqchip)));
  }
  kvm_irqchip chip;
  std::memcpy(&chip, bytes.data(), sizeof(chip));
  if (chip.chip_id != chip_id) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": chip id ", chip.chip_id, ", expected ", chip_id));
  }
  return vm.SetRaw(KVM_SET_IRQCHIP, bytes, sizeof(kvm_irqchip), name);
}

}  // namespace

std::string HostCpuVendor() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return "";
  char vendor[13];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  vendor[12] = '\0';
  return vendor;
}

absl::Status SaveVmState(KvmVm& vm, snapshot::v1::X86VmState& out) {
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_pic_master(),
                          vm.GetRaw(KVM_GET_IRQCHIP, sizeof(kvm_irqchip), "KVM_GET_IRQCHIP (PIC master)",
                                    IrqchipIn(KVM_IRQCHIP_PIC_MASTER)));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_pic_slave(),
                          vm.GetRaw(KVM_GET_IRQCHIP, sizeof(kvm_irqchip), "KVM_GET_IRQCHIP (PIC slave)",
                                    IrqchipIn(KVM_IRQCHIP_PIC_SLAVE)));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_ioapic(),
                          vm.GetRaw(KVM_GET_IRQCHIP, sizeof(kvm_irqchip), "KVM_GET_IRQCHIP (IOAPIC)",
                                    IrqchipIn(KVM_IRQCHIP_IOAPIC)));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_pit2(),
                          vm.GetRaw(KVM_GET_PIT2, sizeof(kvm_pit_state2), "KVM_GET_PIT2"));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_clock(),
                          vm.GetRaw(KVM_GET_CLOCK, sizeof(kvm_clock_data), "KVM_GET_CLOCK"));
  return absl::OkStatus();
}

absl::Status RestoreVmState(KvmVm& vm, const snapshot::v1::X86VmState& in) {
  VESSEL_RETURN_IF_ERROR(vm.SetRaw(KVM_SET_PIT2, in.pit2(), sizeof(kvm_pit_state2), "KVM_SET_PIT2"));
  if (in.clock().size() != sizeof(kvm_clock_data)) {
    return absl::InvalidArgumentError(absl::StrCat("KVM_SET_CLOCK: the state holds ", in.clock().size(),
                                                   " bytes, KVM expects ", sizeof(kvm_clock_data)));
  }
  // The guest's clock continues from the snapshot's instant (no jump by the time the snapshot
  // spent on disk, which could be days for a template); the agent then sets the wall clock.
  kvm_clock_data clock;
  std::memcpy(&clock, in.clock().data(), sizeof(clock));
  clock.flags = 0;
  VESSEL_RETURN_IF_ERROR(vm.SetRaw(KVM_SET_CLOCK,
                                   absl::string_view(reinterpret_cast<const char*>(&clock), sizeof(clock)),
                                   sizeof(clock), "KVM_SET_CLOCK"));
  VESSEL_RETURN_IF_ERROR(SetIrqchip(vm, in.pic_master(), KVM_IRQCHIP_PIC_MASTER, "KVM_SET_IRQCHIP (PIC master)"));
  VESSEL_RETURN_IF_ERROR(SetIrqchip(vm, in.pic_slave(), KVM_IRQCHIP_PIC_SLAVE, "KVM_SET_IRQCHIP (PIC slave)"));
  VESSEL_RETURN_IF_ERROR(SetIrqchip(vm, in.ioapic(), KVM_IRQCHIP_IOAPIC, "KVM_SET_IRQCHIP (IOAPIC)"));
  return absl::OkStatus();
}

VcpuStateOptions VcpuStateOptionsFor(const KvmSystem& kvm) {
  VcpuStateOptions o;
  absl::StatusOr<std::vector<uint32_t>> msrs = kvm.MsrIndexList();
  if (msrs.ok()) o.msr_indices = std::move(*msrs);
  o.xsave = kvm.CheckExtension(KVM_CAP_XSAVE) > 0;
  o.xcrs = kvm.CheckExtension(KVM_CAP_XCRS) > 0;
  return o;
}

absl::Status SaveVcpuState(KvmVcpu& vcpu, const VcpuStateOptions& options,
                           snapshot::v1::X86VcpuState& out, int* skipped) {
  out.set_id(vcpu.id());
  VESSEL_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vcpu.GetCpuid());
  out.set_cpuid(std::string(reinterpret_cast<const char*>(cpuid.data()),
                            cpuid.size() * sizeof(kvm_cpuid_entry2)));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_regs(), vcpu.GetRaw(KVM_GET_REGS, sizeof(kvm_regs), "KVM_GET_REGS"));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_sregs(), vcpu.GetRaw(KVM_GET_SREGS, sizeof(kvm_sregs), "KVM_GET_SREGS"));
  if (options.xsave) {
    VESSEL_ASSIGN_OR_RETURN(*out.mutable_xsave(), vcpu.GetXsave());
  } else {
    VESSEL_ASSIGN_OR_RETURN(*out.mutable_fpu(), vcpu.GetRaw(KVM_GET_FPU, sizeof(kvm_fpu), "KVM_GET_FPU"));
  }
  if (options.xcrs) {
    VESSEL_ASSIGN_OR_RETURN(*out.mutable_xcrs(), vcpu.GetRaw(KVM_GET_XCRS, sizeof(kvm_xcrs), "KVM_GET_XCRS"));
  }
  // KVM_GET_MSRS stops at the first MSR it cannot read: skip that one and go on.
  std::vector<kvm_msr_entry> entries;
  for (uint32_t index : options.msr_indices) {
    kvm_msr_entry e;
    std::memset(&e, 0, sizeof(e));
    e.index = index;
    entries.push_back(e);
  }
  size_t start = 0;
  int skipped_count = 0;
  while (start < entries.size()) {
    const uint32_t n = static_cast<uint32_t>(entries.size() - start);
    int got = vessel_kvm_get_msrs(vcpu.fd(), entries.data() + start, n);
    if (got < 0) return ErrnoStatus("KVM_GET_MSRS");
    for (int i = 0; i < got; ++i) {
      snapshot::v1::Msr* msr = out.add_msrs();
      msr->set_index(entries[start + i].index);
      msr->set_value(entries[start + i].data);
    }
    start += static_cast<size_t>(got);
    if (start < entries.size()) {
      ++skipped_count;
      ++start;
    }
  }
  if (skipped != nullptr) *skipped = skipped_count;
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_lapic(),
                          vcpu.GetRaw(KVM_GET_LAPIC, sizeof(kvm_lapic_state), "KVM_GET_LAPIC"));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_mp_state(),
                          vcpu.GetRaw(KVM_GET_MP_STATE, sizeof(kvm_mp_state), "KVM_GET_MP_STATE"));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_debugregs(),
                          vcpu.GetRaw(KVM_GET_DEBUGREGS, sizeof(kvm_debugregs), "KVM_GET_DEBUGREGS"));
  VESSEL_ASSIGN_OR_RETURN(*out.mutable_events(),
                          vcpu.GetRaw(KVM_GET_VCPU_EVENTS, sizeof(kvm_vcpu_events), "KVM_GET_VCPU_EVENTS"));
  return absl::OkStatus();
}

absl::Status RestoreVcpuState(KvmVcpu& vcpu, const snapshot::v1::X86VcpuState& in) {
  if (in.cpuid().empty() || in.cpuid().size() % sizeof(kvm_cpuid_entry2) != 0 ||
      in.cpuid().size() / sizeof(kvm_cpuid_entry2) > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("vCPU ", vcpu.id(), ": CPUID state of ", in.cpuid().size(), " bytes is not a list of ",
                     sizeof(kvm_cpuid_entry2), "-byte entries"));
  }
  std::vector<kvm_cpuid_entry2> cpuid(in.cpuid().size() / sizeof(kvm_cpuid_entry2));
  std::memcpy(cpuid.data(), in.cpuid().data(), in.cpuid().size());
  VESSEL_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));
  VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_MP_STATE, in.mp_state(), sizeof(kvm_mp_state), "KVM_SET_MP_STATE"));
  VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_REGS, in.regs(), sizeof(kvm_regs), "KVM_SET_REGS"));
  VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_SREGS, in.sregs(), sizeof(kvm_sregs), "KVM_SET_SREGS"));
  if (!in.xsave().empty()) {
    VESSEL_RETURN_IF_ERROR(vcpu.SetXsave(in.xsave()));
  } else {
    VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_FPU, in.fpu(), sizeof(kvm_fpu), "KVM_SET_FPU"));
  }
  if (!in.xcrs().empty()) {
    VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_XCRS, in.xcrs(), sizeof(kvm_xcrs), "KVM_SET_XCRS"));
  }
  VESSEL_RETURN_IF_ERROR(
      vcpu.SetRaw(KVM_SET_DEBUGREGS, in.debugregs(), sizeof(kvm_debugregs), "KVM_SET_DEBUGREGS"));
  VESSEL_RETURN_IF_ERROR(vcpu.SetRaw(KVM_SET_LAPIC, in.lapic(), sizeof(kvm_lapic_state), "KVM_SET_LAPIC"));
  std::vector<kvm_msr_entry> msrs;
  for (const snapshot::v1::Msr& m : in.msrs()) {
    kvm_msr_entry e;
    std::memset(&e, 0, sizeof(e));
    e.index = m.index();
    e.data = m.value();
    msrs.push_back(e);
  }
  if (!msrs.empty()) {
    absl::Status s = vcpu.SetMsrs(msrs);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("vCPU ", vcpu.id(), ": ", s.message()));
  }
  VESSEL_RETURN_IF_ERROR(
      vcpu.SetRaw(KVM_SET_VCPU_EVENTS, in.events(), sizeof(kvm_vcpu_events), "KVM_SET_VCPU_EVENTS"));
  return absl::OkStatus();
}

}  // namespace vessel::x86
