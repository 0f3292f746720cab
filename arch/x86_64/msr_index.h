// Architectural MSR numbers vessel programs or reads.
#ifndef VESSEL_ARCH_X86_64_MSR_INDEX_H_
#define VESSEL_ARCH_X86_64_MSR_INDEX_H_

#include <cstdint>

namespace vessel::x86 {

inline constexpr uint32_t kMsrIa32SysenterCs = 0x174;
inline constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
inline constexpr uint32_t kMsrIa32SysenterEip = 0x176;
inline constexpr uint32_t kMsrIa32Tsc = 0x10;
inline constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSyscallMask = 0xc0000084;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
inline constexpr uint64_t kMiscEnableFastString = 1;

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_MSR_INDEX_H_
