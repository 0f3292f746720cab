// The e820 memory map handed to the guest in boot_params.
#ifndef VESSEL_ARCH_X86_64_E820_H_
#define VESSEL_ARCH_X86_64_E820_H_

#include <asm/bootparam.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vessel::x86 {

inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

// Splits `mem_bytes` of RAM around the MMIO gap: low RAM [0, min(mem, 3 GiB)), the rest from 4 GiB.
struct RamLayout {
  uint64_t low_end;     // end of RAM below the MMIO gap
  uint64_t high_bytes;  // RAM from 4 GiB upwards
};
RamLayout SplitRam(uint64_t mem_bytes);

// RAM as e820 entries plus the reserved MP table area and virtio MMIO window. Sorted, disjoint.
absl::StatusOr<std::vector<boot_e820_entry>> BuildE820(uint64_t mem_bytes);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_E820_H_
