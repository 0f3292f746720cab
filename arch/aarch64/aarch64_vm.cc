#include "arch/aarch64/aarch64_vm.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/aarch64/fdt.h"
#include "arch/aarch64/image.h"
#include "arch/aarch64/layout.h"
#include "arch/aarch64/regs.h"
#include "vmm/base/errors.h"
#include "vmm/kvm/kvm_irq_line.h"

namespace vessel::aarch64 {
namespace {

// Serial console, reboot on panic (a dead guest ends the VM through PSCI SYSTEM_RESET).
constexpr char kBaseCmdline[] = "console=ttyS0 panic=-1";

}  // namespace

uint32_t Aarch64Vm::max_vcpus() const {
  return forced_gic_ == GicVersion::kV2 ? kMaxVcpusGicV2 : kMaxVcpus;
}
size_t Aarch64Vm::max_virtio_devices() const { return kMaxVirtioDevices; }

absl::Status Aarch64Vm::SetUpVm(const KvmSystem&, KvmVm&) { return absl::OkStatus(); }

absl::StatusOr<std::vector<GuestRange>> Aarch64Vm::RamRanges(uint64_t mem_bytes) const {
  if (mem_bytes == 0 || mem_bytes > kMaxRamEnd - kRamBase) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d MiB of RAM from %#x does not fit below the 40-bit guest-physical limit; lower --mem-mib",
        mem_bytes >> 20, kRamBase));
  }
  return std::vector<GuestRange>{{kRamBase, mem_bytes}};
}

absl::Status Aarch64Vm::InitVcpu(KvmVm& vm, KvmVcpu& vcpu) {
  absl::Status s = aarch64::InitVcpu(vm.fd(), vcpu.fd(), /*powered_off=*/vcpu.id() != 0);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("vCPU ", vcpu.id(), ": ", s.message()));
  return absl::OkStatus();
}

absl::Status Aarch64Vm::SetUpIrqchip(KvmVm& vm, uint32_t vcpus) {
  VESSEL_ASSIGN_OR_RETURN(KvmGic gic, CreateGic(vm.fd(), vcpus, forced_gic_));
  gic_.emplace(std::move(gic));
  return absl::OkStatus();
}

GicVersion Aarch64Vm::gic_version() const {
  if (gic_.has_value()) return gic_->layout.version;
  return forced_gic_.value_or(GicVersion::kV3);
}

absl::StatusOr<arch::PlatformDevices> Aarch64Vm::AddPlatformDevices(const arch::PlatformDeviceContext& ctx) {
  arch::PlatformDevices out;
  out.console = std::make_shared<Serial16550>(
      std::make_shared<KvmIrqLine>(ctx.vm, SpiIrqLine(kUartSpi)), ctx.console_sink);
  VESSEL_RETURN_IF_ERROR(ctx.mmio_bus->Insert(out.console, kUartBase, 8, "16550 UART"));
  return out;  // power off and reset arrive as PSCI system events; no boot-timing port
}

absl::StatusOr<arch::VirtioWindow> Aarch64Vm::VirtioWindowAt(size_t index) const {
  if (index >= kMaxVirtioDevices) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio device ", index + 1, ": at most ", kMaxVirtioDevices, " fit"));
  }
  return arch::VirtioWindow{kVirtioMmioBase + index * kVirtioMmioWindowSize, kVirtioMmioWindowSize,
                            kFirstVirtioSpi + static_cast<uint32_t>(index)};
}

std::string Aarch64Vm::KernelCmdline(absl::Span<const arch::VirtioWindow>,
                                     absl::string_view extra) const {
  std::string cmdline = kBaseCmdline;
  if (!extra.empty()) absl::StrAppend(&cmdline, " ", extra);
  return cmdline;  // the virtio devices are in the DTB
}

absl::Status Aarch64Vm::LoadBoot(const arch::BootRequest& req, GuestMemory& memory) {
  absl::StatusOr<ImageHeader> image = ParseImageHeader(req.kernel);
  if (!image.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(req.kernel_path, ": ", image.status().message()));
  }
  VESSEL_ASSIGN_OR_RETURN(layout_, PlaceBoot(*image, kRamBase, req.mem_bytes, req.initrd.size()));
  VESSEL_RETURN_IF_ERROR(memory.Write(layout_.kernel_addr, req.kernel.data(), req.kernel.size()));
  if (!req.initrd.empty()) {
    VESSEL_RETURN_IF_ERROR(memory.Write(layout_.initrd_addr, req.initrd.data(), req.initrd.size()));
  }
  FdtConfig fdt;
  fdt.vcpus = req.vcpus;
  fdt.ram_base = kRamBase;
  fdt.ram_size = req.mem_bytes;
  fdt.bootargs = req.cmdline;
  if (!req.initrd.empty()) {
    fdt.initrd_start = layout_.initrd_addr;
    fdt.initrd_end = layout_.initrd_addr + layout_.initrd_size;
  }
  VESSEL_ASSIGN_OR_RETURN(fdt.gic, GicLayoutFor(gic_version(), req.vcpus));
  for (const arch::VirtioWindow& w : req.virtio) fdt.virtio.push_back({w.base, w.size, w.gsi});
  VESSEL_ASSIGN_OR_RETURN(fdt_, BuildFdt(fdt));
  return memory.Write(layout_.fdt_addr, fdt_.data(), fdt_.size());
}

absl::Status Aarch64Vm::SetUpVcpu(KvmVcpu& vcpu) {
  if (vcpu.id() != 0) return absl::OkStatus();  // secondaries start powered off (PSCI CPU_ON)
  return SetBootRegs(vcpu.fd(), layout_.kernel_addr, layout_.fdt_addr);
}

std::string Aarch64Vm::DescribeVcpu(const KvmVcpu& vcpu, const GuestMemory& memory) const {
  absl::StatusOr<uint64_t> pc = GetOneReg(vcpu.fd(), kPcRegId);
  absl::StatusOr<uint64_t> pstate = GetOneReg(vcpu.fd(), kPstateRegId);
  if (!pc.ok() || !pstate.ok()) return "registers unavailable";
  std::string out = absl::StrFormat("PC %#x PSTATE %#x", *pc, *pstate);
  uint32_t insn = 0;
  if (memory.Read(*pc, &insn, sizeof(insn)).ok()) {  // meaningful while the MMU is off
    absl::StrAppendFormat(&out, ", instruction at PC (if physical): %08x", insn);
  }
  return out;
}

}  // namespace vessel::aarch64
