// The arm64 KVM calls vessel needs, over raw VM / vCPU fds: vCPU init (PSCI 0.2, secondaries
// powered off), core registers, and the in-kernel GIC. Real on aarch64 hosts; elsewhere each call
// fails with Unimplemented, so the code that uses them (aarch64_vm.cc) builds and is unit-tested on
// x86_64 up to the first KVM call.
#ifndef VESSEL_ARCH_AARCH64_KVM_ARM_H_
#define VESSEL_ARCH_AARCH64_KVM_ARM_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "arch/aarch64/gic.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::aarch64 {

// True when this build can make the calls below (an aarch64 build).
bool KvmArmAvailable();

// KVM_ARM_PREFERRED_TARGET on the VM, then KVM_ARM_VCPU_INIT on the vCPU with PSCI 0.2; a vCPU
// other than the boot one also gets KVM_ARM_VCPU_POWER_OFF (it waits for PSCI CPU_ON).
absl::Status InitVcpu(int vm_fd, int vcpu_fd, bool powered_off);

// KVM_SET_ONE_REG of a 64-bit register (ids from regs.h).
absl::Status SetOneReg(int vcpu_fd, uint64_t id, uint64_t value);
absl::StatusOr<uint64_t> GetOneReg(int vcpu_fd, uint64_t id);

// The boot vCPU's entry state: PSTATE EL1h with DAIF masked, PC = kernel, X0 = DTB, X1-X3 = 0.
absl::Status SetBootRegs(int vcpu_fd, uint64_t pc, uint64_t fdt_addr);

// The in-kernel GIC: KVM_CREATE_DEVICE, its addresses (KVM_DEV_ARM_VGIC_GRP_ADDR), the number of
// IRQs, then KVM_DEV_ARM_VGIC_CTRL_INIT. Must come after every vCPU is created. Without
// `version`, tries GICv3 and falls back to GICv2 (hosts with a GICv2-only CPU interface).
struct KvmGic {
  ScopedFd fd;
  GicLayout layout;
};
absl::StatusOr<KvmGic> CreateGic(int vm_fd, uint32_t vcpus, std::optional<GicVersion> version);

// KVM_IRQ_LINE's irq field for an SPI: (KVM_ARM_IRQ_TYPE_SPI << 24) | interrupt ID.
constexpr uint32_t SpiIrqLine(uint32_t spi) { return (1u << 24) | (32 + spi); }

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_KVM_ARM_H_
