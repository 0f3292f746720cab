// KVM register ids for KVM_SET_ONE_REG on arm64 and the boot register state, as plain arithmetic
// so it is unit-tested on any host (kvm_arm.cc static_asserts it against the arm64 uapi headers).
//
// A core register id is KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset of the field
// in arm64's struct kvm_regs / 4); struct kvm_regs starts with user_pt_regs {regs[31], sp, pc,
// pstate}.
#ifndef VESSEL_ARCH_AARCH64_REGS_H_
#define VESSEL_ARCH_AARCH64_REGS_H_

#include <cstdint>

namespace vessel::aarch64 {

inline constexpr uint64_t kKvmRegArm64 = 0x6000000000000000ull;
inline constexpr uint64_t kKvmRegSizeU64 = 0x0030000000000000ull;
inline constexpr uint64_t kKvmRegArmCore = 0x0010ull << 16;

constexpr uint64_t CoreRegId(uint64_t offset_in_kvm_regs) {
  return kKvmRegArm64 | kKvmRegSizeU64 | kKvmRegArmCore | (offset_in_kvm_regs / sizeof(uint32_t));
}
constexpr uint64_t XRegId(uint32_t n) { return CoreRegId(8 * uint64_t{n}); }  // x0..x30
inline constexpr uint64_t kSpRegId = CoreRegId(8 * 31);
inline constexpr uint64_t kPcRegId = CoreRegId(8 * 32);
inline constexpr uint64_t kPstateRegId = CoreRegId(8 * 33);

// PSTATE at kernel entry: EL1h (SP_EL1), D, A, I and F masked (booting.rst: "All forms of
// interrupts must be masked").
inline constexpr uint64_t kPsrModeEl1h = 0x5;
inline constexpr uint64_t kPsrF = 1 << 6;
inline constexpr uint64_t kPsrI = 1 << 7;
inline constexpr uint64_t kPsrA = 1 << 8;
inline constexpr uint64_t kPsrD = 1 << 9;
inline constexpr uint64_t kBootPstate = kPsrModeEl1h | kPsrF | kPsrI | kPsrA | kPsrD;  // 0x3c5

// The MPIDR KVM gives vCPU `id` (arch/arm64/kvm/sys_regs.c reset_mpidr): Aff0 = id[3:0],
// Aff1 = id[11:4], Aff2 = id[19:12]; the device tree's cpu@N reg must match it.
constexpr uint64_t MpidrAffinity(uint32_t id) {
  return (uint64_t{id} & 0xf) | (((uint64_t{id} >> 4) & 0xff) << 8) |
         (((uint64_t{id} >> 12) & 0xff) << 16);
}

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_REGS_H_
