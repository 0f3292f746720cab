// Identity page tables for entering the 64-bit kernel: [0, 4 GiB) mapped with 2 MiB pages.
#ifndef VESSEL_ARCH_X86_64_PAGE_TABLES_H_
#define VESSEL_ARCH_X86_64_PAGE_TABLES_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {

inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPteLarge = 1ull << 7;
inline constexpr int kIdentityMappedGiB = 4;

// Writes PML4 at `pml4_addr`, one PDPT at +4 KiB and four PDs after it. Returns the CR3 value.
absl::StatusOr<uint64_t> WriteIdentityPageTables(GuestMemory& memory, uint64_t pml4_addr);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_PAGE_TABLES_H_
