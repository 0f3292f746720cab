#include "arch/x86_64/page_tables.h"

#include <array>
#include <cstdint>
#include <cstdlib>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "arch/x86_64/layout.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {
namespace {

using Table = std::array<uint64_t, 512>;

constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;

GuestMemory MakeMemory(uint64_t bytes) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, bytes}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

Table ReadTable(const GuestMemory& mem, uint64_t addr) {
  absl::StatusOr<Table> t = mem.ReadObj<Table>(addr);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Table{};
}

// Walks the tables like the MMU does for a 2 MiB mapping; returns the physical address or ~0.
uint64_t Translate(const GuestMemory& mem, uint64_t cr3, uint64_t va) {
  const uint64_t pml4e = ReadTable(mem, cr3 & kAddrMask)[(va >> 39) & 511];
  if (!(pml4e & kPtePresent)) return ~0ull;
  const uint64_t pdpte = ReadTable(mem, pml4e & kAddrMask)[(va >> 30) & 511];
  if (!(pdpte & kPtePresent) || (pdpte & kPteLarge)) return ~0ull;
  const uint64_t pde = ReadTable(mem, pdpte & kAddrMask)[(va >> 21) & 511];
  if (!(pde & kPtePresent) || !(pde & kPteLarge)) return ~0ull;
  return (pde & 0x000fffffffe00000ull) | (va & 0x1fffff);
}

TEST(PageTablesTest, Pml4PointsAtPdpt) {
  GuestMemory mem = MakeMemory(1 << 20);
  absl::StatusOr<uint64_t> cr3 = WriteIdentityPageTables(mem, kPml4Addr);
  ASSERT_TRUE(cr3.ok()) << cr3.status();
  EXPECT_EQ(*cr3, kPml4Addr);
  const Table pml4 = ReadTable(mem, kPml4Addr);
  EXPECT_EQ(pml4[0], (kPml4Addr + 0x1000) | kPtePresent | kPteWritable);
  for (size_t i = 1; i < 512; ++i) EXPECT_EQ(pml4[i], 0u) << i;
}

TEST(PageTablesTest, PdptPointsAtFourPds) {
  GuestMemory mem = MakeMemory(1 << 20);
  ASSERT_TRUE(WriteIdentityPageTables(mem, kPml4Addr).ok());
  const Table pdpt = ReadTable(mem, kPml4Addr + 0x1000);
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(pdpt[i], (kPml4Addr + 0x2000 + i * 0x1000) | kPtePresent | kPteWritable) << i;
  }
  for (size_t i = 4; i < 512; ++i) EXPECT_EQ(pdpt[i], 0u) << i;
}

TEST(PageTablesTest, EveryPdEntryIdentityMapsA2MiBPage) {
  GuestMemory mem = MakeMemory(1 << 20);
  ASSERT_TRUE(WriteIdentityPageTables(mem, kPml4Addr).ok());
  for (uint64_t pd = 0; pd < 4; ++pd) {
    const Table t = ReadTable(mem, kPml4Addr + 0x2000 + pd * 0x1000);
    for (uint64_t i = 0; i < 512; ++i) {
      const uint64_t phys = (pd << 30) + (i << 21);
      ASSERT_EQ(t[i], phys | kPtePresent | kPteWritable | kPteLarge) << pd << "/" << i;
    }
  }
}

TEST(PageTablesTest, WalkIdentityMapsFirstFourGiB) {
  GuestMemory mem = MakeMemory(1 << 20);
  ASSERT_TRUE(WriteIdentityPageTables(mem, kPml4Addr).ok());
  for (uint64_t va : {0ull, 0x1234ull, 0x100000ull, 0x1000000ull, 0x7fffffffull, 0xc0000000ull,
                      0xfee00000ull, 0xffffffffull}) {
    EXPECT_EQ(Translate(mem, kPml4Addr, va), va) << std::hex << va;
  }
  EXPECT_EQ(Translate(mem, kPml4Addr, 0x100000000ull), ~0ull);
  EXPECT_EQ(Translate(mem, kPml4Addr, 0xffffffff80000000ull), ~0ull);
}

TEST(PageTablesTest, TablesFitBelowCmdline) {
  // PML4 + PDPT + 4 PDs = 6 pages, all before the next structure in the layout.
  EXPECT_LE(kPml4Addr + 6 * 0x1000, kCmdlineAddr);
}

TEST(PageTablesTest, OtherBaseAddress) {
  GuestMemory mem = MakeMemory(1 << 20);
  absl::StatusOr<uint64_t> cr3 = WriteIdentityPageTables(mem, 0x40000);
  ASSERT_TRUE(cr3.ok());
  EXPECT_EQ(*cr3, 0x40000u);
  EXPECT_EQ(Translate(mem, *cr3, 0xabcdef12ull), 0xabcdef12ull);
  EXPECT_EQ(ReadTable(mem, 0x40000)[0], 0x41000 | kPtePresent | kPteWritable);
}

TEST(PageTablesTest, FailsWhenTablesDoNotFitInRam) {
  GuestMemory mem = MakeMemory(0x10000);
  // The last PD would end at 0x10000 + 0x1000.
  EXPECT_EQ(WriteIdentityPageTables(mem, 0xb000).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(WriteIdentityPageTables(mem, 0x10000).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(WriteIdentityPageTables(mem, 0xa000).ok());
}

}  // namespace
}  // namespace vessel::x86
