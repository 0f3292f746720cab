// The x86_64 guest-physical memory map vessel builds. One place for every fixed address.
#ifndef VESSEL_ARCH_X86_64_LAYOUT_H_
#define VESSEL_ARCH_X86_64_LAYOUT_H_

#include <cstdint>

namespace vessel::x86 {

inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kIdtAddr = 0x540;  // after the 5-entry boot GDT (0x500-0x527)
inline constexpr uint64_t kZeroPageAddr = 0x7000;     // struct boot_params
inline constexpr uint64_t kBootStackPointer = 0x8ff0;
inline constexpr uint64_t kPml4Addr = 0x9000;          // then PDPT, then 4 PDs: 0x9000-0xdfff
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMaxBytes = 0x10000;  // room reserved for the command line
inline constexpr uint64_t kMpTableAddr = 0x9f000;      // MP configuration table (3 KiB)
inline constexpr uint64_t kMpFloatingPointerAddr = 0x9fc00;  // last KiB of base memory
inline constexpr uint64_t kBaseMemoryEnd = 0xa0000;
inline constexpr uint64_t kHighMemoryStart = 0x100000;  // 1 MiB: where kernels load
// [3 GiB, 4 GiB) is never RAM: devices, IOAPIC, LAPIC and KVM's TSS live there.
inline constexpr uint64_t kMmioGapStart = 0xc0000000;
inline constexpr uint64_t kMmioGapEnd = 0x100000000;
inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr uint64_t kVirtioMmioSize = 0x10000000;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;
inline constexpr uint64_t kIdentityMapAddr = 0xfffbc000;  // one page, KVM's EPT identity map
inline constexpr uint64_t kTssAddr = 0xfffbd000;          // three pages
// Linux's kernel text mapping base for non-relocated kernels (__START_KERNEL_map).
inline constexpr uint64_t kKernelVirtualBase = 0xffffffff80000000ULL;
inline constexpr uint32_t kMaxVcpus = 128;

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_LAYOUT_H_
