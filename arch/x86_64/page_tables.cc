#include "arch/x86_64/page_tables.h"

#include <array>

namespace vessel::x86 {

absl::StatusOr<uint64_t> WriteIdentityPageTables(GuestMemory& memory, uint64_t pml4_addr) {
  const uint64_t pdpt_addr = pml4_addr + 0x1000;
  const uint64_t pd_addr = pdpt_addr + 0x1000;
  std::array<uint64_t, 512> table{};
  table[0] = pdpt_addr | kPtePresent | kPteWritable;
  absl::Status s = memory.WriteObj(pml4_addr, table);
  if (!s.ok()) return s;
  table.fill(0);
  for (int i = 0; i < kIdentityMappedGiB; ++i) {
    table[i] = (pd_addr + i * 0x1000ull) | kPtePresent | kPteWritable;
  }
  s = memory.WriteObj(pdpt_addr, table);
  if (!s.ok()) return s;
  for (int pd = 0; pd < kIdentityMappedGiB; ++pd) {
    for (uint64_t i = 0; i < 512; ++i) {
      uint64_t addr = (uint64_t(pd) << 30) | (i << 21);
      table[i] = addr | kPtePresent | kPteWritable | kPteLarge;
    }
    s = memory.WriteObj(pd_addr + pd * 0x1000ull, table);
    if (!s.ok()) return s;
  }
  return pml4_addr;
}

}  // namespace vessel::x86
