// X86Vm: the x86_64 ArchVm. Guest RAM split around the [3 GiB, 4 GiB) MMIO gap; the Linux 64-bit
// boot protocol (ELF vmlinux or bzImage, zero page, e820, MP table, identity page tables); COM1,
// i8042 reset, power port 0x600, boot-timing port 0x80 and the CMOS RTC on port I/O; virtio-mmio
// windows from 0xd000_0000 on IOAPIC pins 5..23, announced with virtio_mmio.device= arguments; on
// kvm_pvm the compatibility profile (compat/).
#ifndef VESSEL_ARCH_X86_64_X86_VM_H_
#define VESSEL_ARCH_X86_64_X86_VM_H_

#include <linux/kvm.h>

#include <memory>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "arch/x86_64/compat/pvm_compat.h"

namespace vessel::x86 {

class X86Vm : public arch::ArchVm {
 public:
  explicit X86Vm(const Platform& platform) : platform_(platform) {}

  absl::string_view name() const override { return "x86_64"; }
  uint32_t max_vcpus() const override;
  size_t max_virtio_devices() const override;
  absl::Status SetUpVm(const KvmSystem& kvm, KvmVm& vm) override;
  absl::StatusOr<std::vector<GuestRange>> RamRanges(uint64_t mem_bytes) const override;
  absl::Status InitVcpu(KvmVm& vm, KvmVcpu& vcpu) override;
  absl::Status SetUpIrqchip(KvmVm& vm, uint32_t vcpus) override;
  absl::StatusOr<arch::PlatformDevices> AddPlatformDevices(const arch::PlatformDeviceContext& ctx) override;
  absl::StatusOr<arch::VirtioWindow> VirtioWindowAt(size_t index) const override;
  std::string KernelCmdline(absl::Span<const arch::VirtioWindow> virtio,
                            absl::string_view extra) const override;
  absl::Status LoadBoot(const arch::BootRequest& request, GuestMemory& memory) override;
  absl::Status SetUpVcpu(KvmVcpu& vcpu) override;
  void AfterExit() override;
  absl::StatusOr<bool> HandleInternalError(KvmVcpu& vcpu) override;
  std::string DescribeVcpu(const KvmVcpu& vcpu, const GuestMemory& memory) const override;
  std::string CompatSummary() const override;
  std::string HostCpuVendor() const override;
  absl::Status SaveState(const KvmSystem& kvm, KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                         snapshot::v1::SnapshotState& state) override;
  absl::Status RestoreState(KvmVm& vm, std::vector<KvmVcpu>& vcpus,
                            const snapshot::v1::SnapshotState& state, GuestMemory& memory) override;

 private:
  Platform platform_;
  std::vector<kvm_cpuid_entry2> supported_cpuid_;
  uint32_t vcpus_ = 0;
  uint64_t entry_ = 0;
  std::unique_ptr<PvmCompat> compat_;  // only on kvm_pvm
};

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_X86_VM_H_
