// Aarch64Vm: the aarch64 ArchVm. RAM from 0x4000_0000 (layout.h); an arm64 Image at RAM's start,
// the initrd below the DTB in the last 2 MiB; vCPUs through KVM_ARM_VCPU_INIT with PSCI 0.2 (the
// guest powers off and brings up secondaries with PSCI calls, which end the VM as system events);
// a GICv3 (GICv2 fallback); the 16550 UART on MMIO at 0x0900_0000; virtio-mmio windows from
// 0x0a00_0000 on SPIs 16.., described in the DTB rather than on the command line.
//
// Everything but the KVM calls (kvm_arm.h) is plain C++, so on x86_64 this class is built and
// unit-tested up to InitVcpu/SetUpIrqchip/SetUpVcpu, which fail there with Unimplemented.
#ifndef VESSEL_ARCH_AARCH64_AARCH64_VM_H_
#define VESSEL_ARCH_AARCH64_AARCH64_VM_H_

#include <optional>
#include <string>
#include <vector>

#include "arch/aarch64/boot_layout.h"
#include "arch/aarch64/gic.h"
#include "arch/aarch64/kvm_arm.h"
#include "arch/arch.h"

namespace vessel::aarch64 {

class Aarch64Vm : public arch::ArchVm {
 public:
  // `gic`: force a GIC version (tests, hosts without GICv3 emulation); default tries v3 then v2.
  explicit Aarch64Vm(std::optional<GicVersion> gic = std::nullopt) : forced_gic_(gic) {}

  absl::string_view name() const override { return "aarch64"; }
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
  std::string DescribeVcpu(const KvmVcpu& vcpu, const GuestMemory& memory) const override;

  // After LoadBoot: where everything went and the DTB that was written.
  const BootLayout& boot_layout() const { return layout_; }
  const std::vector<uint8_t>& fdt() const { return fdt_; }
  // The GIC the DTB describes: the one SetUpIrqchip created, else `forced_gic` (default GICv3).
  GicVersion gic_version() const;

 private:
  std::optional<GicVersion> forced_gic_;
  std::optional<KvmGic> gic_;
  BootLayout layout_;
  std::vector<uint8_t> fdt_;
};

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_AARCH64_VM_H_
