#include "arch/x86_64/e820.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arch/x86_64/layout.h"

namespace vessel::x86 {

RamLayout SplitRam(uint64_t mem_bytes) {
  uint64_t low = std::min(mem_bytes, kMmioGapStart);
  return RamLayout{low, mem_bytes - low};
}

absl::StatusOr<std::vector<boot_e820_entry>> BuildE820(uint64_t mem_bytes) {
  // Kernel at 1 MiB, boot structures below: anything under 2 MiB cannot boot Linux.
  if (mem_bytes < 2 * kHighMemoryStart) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest memory of ", mem_bytes, " bytes is too small: give at least 2 MiB"));
  }
  RamLayout ram = SplitRam(mem_bytes);
  std::vector<boot_e820_entry> map;
  map.push_back({0, kMpTableAddr, kE820Ram});
  map.push_back({kMpTableAddr, kBaseMemoryEnd - kMpTableAddr, kE820Reserved});
  map.push_back({kHighMemoryStart, ram.low_end - kHighMemoryStart, kE820Ram});
  map.push_back({kVirtioMmioBase, kVirtioMmioSize, kE820Reserved});
  if (ram.high_bytes > 0) map.push_back({kMmioGapEnd, ram.high_bytes, kE820Ram});
  if (map.size() > E820_MAX_ENTRIES_ZEROPAGE) return absl::InternalError("e820: too many entries");
  return map;
}

}  // namespace vessel::x86
