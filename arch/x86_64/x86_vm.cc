#include "arch/x86_64/x86_vm.h"

#include <linux/kvm.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/x86_64/boot_params.h"
#include "arch/x86_64/e820.h"
#include "arch/x86_64/elf_symbols.h"
#include "arch/x86_64/kernel_loader.h"
#include "arch/x86_64/kvm_state.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"
#include "arch/x86_64/vcpu_setup.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"
#include "vmm/kvm/kvm_irq_line.h"
#include "vmm/legacy/cmos_rtc.h"
#include "vmm/legacy/i8042.h"
#include "vmm/legacy/power_port.h"

namespace vessel::x86 {
namespace {

// virtio-mmio interrupts use IOAPIC pins 5..23 (below: legacy ISA devices, COM1 on 4).
constexpr uint32_t kFirstVirtioGsi = 5;
constexpr size_t kMaxVirtioDevices = kIoapicPins - kFirstVirtioGsi;
constexpr uint64_t kVirtioWindowSize = 0x1000;
// Command line every guest gets: serial console, reboot through the keyboard controller, reboot on
// panic (so a dead guest ends the VM), no port-0x80 I/O delays, no PCI probing.
constexpr char kBaseCmdline[] = "console=ttyS0 reboot=k panic=-1 io_delay=none pci=off";

}  // namespace

uint32_t X86Vm::max_vcpus() const { return kMaxVcpus; }
size_t X86Vm::max_virtio_devices() const { return kMaxVirtioDevices; }

absl::Status X86Vm::SetUpVm(const KvmSystem& kvm, KvmVm& vm) {
  VESSEL_RETURN_IF_ERROR(vm.SetTssAddress(kTssAddr));
  VESSEL_RETURN_IF_ERROR(vm.SetIdentityMapAddress(kIdentityMapAddr));
  VESSEL_RETURN_IF_ERROR(vm.CreateIrqchip());
  VESSEL_RETURN_IF_ERROR(vm.CreatePit());
  VESSEL_ASSIGN_OR_RETURN(supported_cpuid_, kvm.SupportedCpuid());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GuestRange>> X86Vm::RamRanges(uint64_t mem_bytes) const {
  RamLayout ram = SplitRam(mem_bytes);
  std::vector<GuestRange> ranges = {{0, ram.low_end}};
  if (ram.high_bytes > 0) ranges.push_back({kMmioGapEnd, ram.high_bytes});
  return ranges;
}

absl::Status X86Vm::InitVcpu(KvmVm&, KvmVcpu&) { return absl::OkStatus(); }

// The PIC/IOAPIC exist since SetUpVm: KVM needs them before the vCPUs.
absl::Status X86Vm::SetUpIrqchip(KvmVm&, uint32_t vcpus) {
  vcpus_ = vcpus;
  return absl::OkStatus();
}

absl::StatusOr<arch::PlatformDevices> X86Vm::AddPlatformDevices(const arch::PlatformDeviceContext& ctx) {
  Bus& io = *ctx.io_bus;
  arch::PlatformDevices out;
  out.console = std::make_shared<Serial16550>(
      std::make_shared<KvmIrqLine>(ctx.vm, Serial16550::kCom1Irq), ctx.console_sink);
  VESSEL_RETURN_IF_ERROR(io.Insert(out.console, Serial16550::kCom1Base, 8, "COM1 16550"));
  auto reset = ctx.reset;
  auto poweroff = ctx.poweroff;
  auto i8042 = std::make_shared<I8042>(
      [reset] { reset("guest reset the machine through the i8042 keyboard controller"); });
  // 0x61 (speaker) inside this range is served by KVM's in-kernel PIT and never exits to us.
  VESSEL_RETURN_IF_ERROR(
      io.Insert(i8042, I8042::kDataPort, I8042::kCommandPort - I8042::kDataPort + 1, "i8042"));
  auto power = std::make_shared<PowerPort>(
      [poweroff] { poweroff("guest powered off"); },
      [reset] { reset("guest reset the machine through the power port"); });
  VESSEL_RETURN_IF_ERROR(io.Insert(power, PowerPort::kPort, 1, "power port"));
  out.debug_port = std::make_shared<DebugPort>(ctx.created);
  VESSEL_RETURN_IF_ERROR(io.Insert(out.debug_port, DebugPort::kPort, 1, "boot-timing port"));
  VESSEL_RETURN_IF_ERROR(io.Insert(std::make_shared<CmosRtc>(), CmosRtc::kPort, 2, "CMOS RTC"));
  return out;
}

absl::StatusOr<arch::VirtioWindow> X86Vm::VirtioWindowAt(size_t index) const {
  if (index >= kMaxVirtioDevices) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio device ", index + 1, ": at most ", kMaxVirtioDevices, " fit"));
  }
  return arch::VirtioWindow{kVirtioMmioBase + index * kVirtioWindowSize, kVirtioWindowSize,
                            kFirstVirtioGsi + static_cast<uint32_t>(index)};
}

std::string X86Vm::KernelCmdline(absl::Span<const arch::VirtioWindow> virtio,
                                 absl::string_view extra) const {
  std::string cmdline = kBaseCmdline;
  if (platform_.flavor == KvmFlavor::kPvm) absl::StrAppend(&cmdline, " ", PvmCmdlineAdditions());
  for (const arch::VirtioWindow& w : virtio) {
    absl::StrAppendFormat(&cmdline, " virtio_mmio.device=%dK@%#x:%d", w.size >> 10, w.base, w.gsi);
  }
  if (!extra.empty()) absl::StrAppend(&cmdline, " ", extra);
  return cmdline;
}

absl::Status X86Vm::LoadBoot(const arch::BootRequest& req, GuestMemory& memory) {
  absl::StatusOr<KernelImage> image = ParseKernel(req.kernel);
  if (!image.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(req.kernel_path, ": ", image.status().message()));
  }
  VESSEL_RETURN_IF_ERROR(LoadKernel(*image, req.kernel, memory));
  entry_ = image->entry;

  BootParamsInput boot;
  boot.header = image->header;
  if (!req.initrd.empty()) {
    VESSEL_ASSIGN_OR_RETURN(uint64_t initrd_addr,
                            PlaceInitrd(*image, req.initrd.size(), SplitRam(req.mem_bytes).low_end));
    VESSEL_RETURN_IF_ERROR(memory.Write(initrd_addr, req.initrd.data(), req.initrd.size()));
    boot.initrd_addr = initrd_addr;
    boot.initrd_size = req.initrd.size();
  }
  VESSEL_RETURN_IF_ERROR(CheckCmdline(*image, req.cmdline));
  VESSEL_RETURN_IF_ERROR(memory.Write(kCmdlineAddr, req.cmdline.c_str(), req.cmdline.size() + 1));
  boot.cmdline_addr = kCmdlineAddr;
  boot.cmdline_size = static_cast<uint32_t>(req.cmdline.size());
  VESSEL_ASSIGN_OR_RETURN(boot.e820, BuildE820(req.mem_bytes));
  VESSEL_ASSIGN_OR_RETURN(boot_params zero_page, BuildBootParams(boot));
  VESSEL_RETURN_IF_ERROR(memory.WriteObj(kZeroPageAddr, zero_page));
  VESSEL_RETURN_IF_ERROR(WriteMpTable(memory, req.vcpus));
  VESSEL_RETURN_IF_ERROR(WriteBootStructures(memory));
  vcpus_ = req.vcpus;

  if (platform_.flavor == KvmFlavor::kPvm) {
    std::optional<uint64_t> pf_entry;
    if (image->format == KernelFormat::kElf) {
      absl::StatusOr<uint64_t> sym = FindElfSymbol(req.kernel, "asm_exc_page_fault");
      if (sym.ok()) pf_entry = *sym;
    }
    compat_ = std::make_unique<PvmCompat>(&memory, pf_entry);
    compat_->MaintainTrap();
    LogInfo("platform: ", platform_.Name(), ": compatibility profile on (", PvmCmdlineAdditions(),
            pf_entry ? absl::StrFormat(", SYSCALL fix via #PF trap at %#x", *pf_entry) : "", ")");
  }
  return absl::OkStatus();
}

absl::Status X86Vm::SetUpVcpu(KvmVcpu& vcpu) {
  VcpuBootInfo info{vcpus_, entry_, supported_cpuid_, nullptr};
  if (compat_) info.adjust_cpuid = MaskPvmHypercallFeatures;
  return SetupVcpu(vcpu, info);
}

void X86Vm::AfterExit() {
  if (compat_) compat_->MaintainTrap();
}

absl::StatusOr<bool> X86Vm::HandleInternalError(KvmVcpu& vcpu) {
  if (!compat_ || vcpu.run()->internal.suberror != KVM_INTERNAL_ERROR_EMULATION) return false;
  return compat_->HandleEmulationFailure(vcpu);
}

std::string X86Vm::DescribeVcpu(const KvmVcpu& vcpu, const GuestMemory& memory) const {
  absl::StatusOr<kvm_regs> regs = vcpu.GetRegs();
  absl::StatusOr<kvm_sregs> sregs = vcpu.GetSregs();
  if (!regs.ok() || !sregs.ok()) return "registers unavailable";
  std::string out = absl::StrFormat("RIP %#x RSP %#x CPL %d CR0 %#x CR3 %#x", regs->rip, regs->rsp,
                                    sregs->cs.selector & 3, sregs->cr0, sregs->cr3);
  absl::StatusOr<uint64_t> gpa = vcpu.Translate(regs->rip);
  uint8_t bytes[16];
  if (gpa.ok() && memory.Read(*gpa, bytes, sizeof(bytes)).ok()) {
    absl::StrAppend(&out, ", instruction bytes:");
    for (uint8_t b : bytes) absl::StrAppendFormat(&out, " %02x", b);
  } else {
    absl::StrAppend(&out, ", RIP not in guest RAM");
  }
  return out;
}

std::string X86Vm::CompatSummary() const { return compat_ ? compat_->Summary() : ""; }

std::string X86Vm::HostCpuVendor() const { return x86::HostCpuVendor(); }

absl::Status X86Vm::SaveState(const KvmSystem& kvm, KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                              snapshot::v1::SnapshotState& state) {
  snapshot::v1::X86VmState* vm_state = state.mutable_x86_vm();
  VESSEL_RETURN_IF_ERROR(SaveVmState(vm, *vm_state));
  vm_state->set_entry(entry_);
  if (compat_) {
    PvmCompat::State c = compat_->GetState();
    snapshot::v1::PvmCompatState* out = vm_state->mutable_compat();
    out->set_has_trap(c.trap_gva.has_value());
    out->set_trap_gva(c.trap_gva.value_or(0));
    out->set_trap_gpa(c.trap_gpa);
    out->set_trap_disabled(c.trap_disabled);
    out->set_int3_injected(c.int3_injected);
    out->set_fwait_skipped(c.fwait_skipped);
    out->set_page_fault_traps(c.page_fault_traps);
    out->set_syscalls_fixed(c.syscalls_fixed);
    out->set_trap_plants(c.trap_plants);
  }
  const VcpuStateOptions options = VcpuStateOptionsFor(kvm);
  for (KvmVcpu& vcpu : vcpus) {
    int skipped = 0;
    absl::Status s = SaveVcpuState(vcpu, options, *state.add_x86_vcpus(), &skipped);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("vCPU ", vcpu.id(), ": ", s.message()));
    if (skipped > 0) {
      LogInfo("snapshot: vCPU ", vcpu.id(), ": ", skipped, " of ", options.msr_indices.size(),
              " MSRs KVM lists do not read on this host; left out");
    }
  }
  return absl::OkStatus();
}

absl::Status X86Vm::RestoreState(KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                                 const snapshot::v1::SnapshotState& state, GuestMemory& memory) {
  if (static_cast<size_t>(state.x86_vcpus_size()) != vcpus.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the snapshot holds ", state.x86_vcpus_size(),
                                                   " vCPUs, the VM has ", vcpus.size()));
  }
  if ((platform_.flavor == KvmFlavor::kPvm) != state.x86_vm().has_compat()) {
    return absl::FailedPreconditionError(
        "the snapshot was taken with a different kvm_pvm compatibility profile setting");
  }
  VESSEL_RETURN_IF_ERROR(RestoreVmState(vm, state.x86_vm()));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    absl::Status s = RestoreVcpuState(vcpus[i], state.x86_vcpus(static_cast<int>(i)));
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("vCPU ", i, ": ", s.message()));
  }
  vcpus_ = static_cast<uint32_t>(vcpus.size());
  entry_ = state.x86_vm().entry();
  if (state.x86_vm().has_compat()) {
    const snapshot::v1::PvmCompatState& in = state.x86_vm().compat();
    PvmCompat::State c;
    if (in.has_trap()) c.trap_gva = in.trap_gva();
    c.trap_gpa = in.trap_gpa();
    c.trap_disabled = in.trap_disabled();
    c.int3_injected = in.int3_injected();
    c.fwait_skipped = in.fwait_skipped();
    c.page_fault_traps = in.page_fault_traps();
    c.syscalls_fixed = in.syscalls_fixed();
    c.trap_plants = in.trap_plants();
    compat_ = PvmCompat::FromState(&memory, c);
  }
  return absl::OkStatus();
}

}  // namespace vessel::x86
