// ArchVm: what vmm/machine.cc asks of the guest architecture, so the VMM core includes nothing from
// arch/x86_64 or arch/aarch64. One ArchVm per Machine; the machine calls it in this order:
//
//   SetUpVm            after KVM_CREATE_VM (x86: TSS, identity map, PIC/IOAPIC, PIT)
//   RamRanges          the guest RAM it then maps
//   InitVcpu           after each KVM_CREATE_VCPU (arm64: KVM_ARM_VCPU_INIT)
//   SetUpIrqchip       after every vCPU exists (arm64: the GIC)
//   AddPlatformDevices the console UART and the other non-virtio devices (x86: i8042, power port,
//                      boot-timing port, CMOS RTC on port I/O)
//   VirtioWindowAt     the MMIO window and interrupt of the i-th virtio device
//   KernelCmdline      the whole kernel command line
//   LoadBoot           kernel + initrd + boot structures (x86: zero page, e820, MP table, page
//                      tables; arm64: the DTB)
//   SetUpVcpu          each vCPU's boot state
// and while running: AfterExit, HandleInternalError, DescribeVcpu, CompatSummary.
#ifndef VESSEL_ARCH_ARCH_H_
#define VESSEL_ARCH_ARCH_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/bus/bus.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/kvm/platform.h"
#include "vmm/legacy/debug_port.h"
#include "vmm/legacy/serial.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::arch {

// One virtio-mmio device's registers and interrupt.
struct VirtioWindow {
  uint64_t base = 0;
  uint64_t size = 0;
  uint32_t gsi = 0;  // for KVM_IRQFD: x86 IOAPIC pin, arm64 SPI number
};

// What the machine gives AddPlatformDevices.
struct PlatformDeviceContext {
  KvmVm* vm = nullptr;
  Bus* io_bus = nullptr;  // port I/O; unused where the architecture has none
  Bus* mmio_bus = nullptr;
  Serial16550::OutputSink console_sink;
  std::function<void(std::string detail)> poweroff;  // guest asked to power off
  std::function<void(std::string detail)> reset;     // guest asked to reset
  std::chrono::steady_clock::time_point created;     // the boot-timing port's zero
};

struct PlatformDevices {
  std::shared_ptr<Serial16550> console;   // the guest's ttyS0
  std::shared_ptr<DebugPort> debug_port;  // boot-timing marks; null where there is none
};

struct BootRequest {
  uint32_t vcpus = 1;
  uint64_t mem_bytes = 0;
  std::string kernel_path;  // for messages
  absl::Span<const uint8_t> kernel;
  absl::Span<const uint8_t> initrd;  // empty: none
  std::string cmdline;
  std::vector<VirtioWindow> virtio;  // every virtio device, in window order
};

class ArchVm {
 public:
  virtual ~ArchVm() = default;

  virtual absl::string_view name() const = 0;  // "x86_64", "aarch64"
  virtual uint32_t max_vcpus() const = 0;
  virtual size_t max_virtio_devices() const = 0;

  virtual absl::Status SetUpVm(const KvmSystem& kvm, KvmVm& vm) = 0;
  virtual absl::StatusOr<std::vector<GuestRange>> RamRanges(uint64_t mem_bytes) const = 0;
  virtual absl::Status InitVcpu(KvmVm& vm, KvmVcpu& vcpu) = 0;
  virtual absl::Status SetUpIrqchip(KvmVm& vm, uint32_t vcpus) = 0;
  virtual absl::StatusOr<PlatformDevices> AddPlatformDevices(const PlatformDeviceContext& ctx) = 0;
  // Fails for index >= max_virtio_devices().
  virtual absl::StatusOr<VirtioWindow> VirtioWindowAt(size_t index) const = 0;
  virtual std::string KernelCmdline(absl::Span<const VirtioWindow> virtio,
                                    absl::string_view extra) const = 0;
  virtual absl::Status LoadBoot(const BootRequest& request, GuestMemory& memory) = 0;
  virtual absl::Status SetUpVcpu(KvmVcpu& vcpu) = 0;

  // Called by each vCPU thread after every exit (x86 kvm_pvm: keeps its #PF trap planted).
  virtual void AfterExit() {}
  // KVM_EXIT_INTERNAL_ERROR: true when handled and the vCPU may run on.
  virtual absl::StatusOr<bool> HandleInternalError(KvmVcpu& vcpu) {
    (void)vcpu;
    return false;
  }
  // Registers (and instruction bytes where it can) for crash messages.
  virtual std::string DescribeVcpu(const KvmVcpu& vcpu, const GuestMemory& memory) const = 0;
  // The platform compatibility profile's counters; empty when none is active.
  virtual std::string CompatSummary() const { return ""; }

  // --- Snapshot and restore (vmm/snapshot/README.md) ---
  // The host CPU's vendor as a snapshot records it ("AuthenticAMD"); a restore on another vendor
  // is refused.
  virtual std::string HostCpuVendor() const { return ""; }
  // Reads the VM's and every vCPU's KVM state into `state` (x86: irqchips, PIT, clock, the compat
  // profile; per vCPU registers, FPU/xsave, MSRs, LAPIC, events, MP state, debug registers).
  // Every vCPU is out of KVM_RUN.
  virtual absl::Status SaveState(const KvmSystem& kvm, KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                                 snapshot::v1::SnapshotState& state) {
    (void)kvm, (void)vm, (void)vcpus, (void)state;
    return absl::UnimplementedError(absl::StrCat("snapshots are not supported on ", name(), " yet"));
  }
  // Replaces LoadBoot + SetUpVcpu for a VM restored from `state`, built with the same shape and
  // with guest memory already mapped from the snapshot. Checks each structure's size first.
  virtual absl::Status RestoreState(KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                                    const snapshot::v1::SnapshotState& state, GuestMemory& memory) {
    (void)vm, (void)vcpus, (void)state, (void)memory;
    return absl::UnimplementedError(absl::StrCat("snapshots are not supported on ", name(), " yet"));
  }
};

// The ArchVm for the architecture this binary is built for.
std::unique_ptr<ArchVm> CreateHostArch(const Platform& platform);

}  // namespace vessel::arch

#endif  // VESSEL_ARCH_ARCH_H_
