#include "arch/x86_64/e820.h"

#include <cstdint>
#include <ostream>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "arch/x86_64/layout.h"

namespace vessel::x86 {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// boot_e820_entry is packed: copy its fields out before comparing.
struct Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  bool operator==(const Entry&) const = default;
};

void PrintTo(const Entry& e, std::ostream* os) {
  *os << std::hex << "{0x" << e.addr << ", 0x" << e.size << ", " << std::dec << e.type << "}";
}

std::vector<Entry> Unpack(const std::vector<boot_e820_entry>& map) {
  std::vector<Entry> out;
  for (const boot_e820_entry& e : map) out.push_back({e.addr, e.size, e.type});
  return out;
}

std::vector<Entry> MapFor(uint64_t mem_bytes) {
  absl::StatusOr<std::vector<boot_e820_entry>> map = BuildE820(mem_bytes);
  EXPECT_TRUE(map.ok()) << map.status();
  return map.ok() ? Unpack(*map) : std::vector<Entry>{};
}

void ExpectSortedAndDisjoint(const std::vector<Entry>& map) {
  for (size_t i = 0; i < map.size(); ++i) {
    EXPECT_GT(map[i].size, 0u) << i;
    EXPECT_GE(map[i].addr + map[i].size, map[i].addr) << i;  // no wrap
    if (i > 0) {
      EXPECT_LE(map[i - 1].addr + map[i - 1].size, map[i].addr) << i;
    }
  }
}

uint64_t RamBytes(const std::vector<Entry>& map) {
  uint64_t total = 0;
  for (const Entry& e : map) {
    if (e.type == kE820Ram) total += e.size;
  }
  return total;
}

TEST(SplitRamTest, SplitsAroundMmioGap) {
  EXPECT_EQ(SplitRam(128 * kMiB).low_end, 128 * kMiB);
  EXPECT_EQ(SplitRam(128 * kMiB).high_bytes, 0u);
  EXPECT_EQ(SplitRam(3 * kGiB).low_end, 3 * kGiB);
  EXPECT_EQ(SplitRam(3 * kGiB).high_bytes, 0u);
  EXPECT_EQ(SplitRam(4 * kGiB).low_end, 3 * kGiB);
  EXPECT_EQ(SplitRam(4 * kGiB).high_bytes, 1 * kGiB);
  EXPECT_EQ(SplitRam(16 * kGiB).high_bytes, 13 * kGiB);
}

TEST(E820Test, SmallGuest) {
  const std::vector<Entry> map = MapFor(128 * kMiB);
  const std::vector<Entry> want = {
      {0, 0x9f000, kE820Ram},
      {0x9f000, 0x1000, kE820Reserved},
      {0x100000, 127 * kMiB, kE820Ram},
      {0xd0000000, 0x10000000, kE820Reserved},
  };
  EXPECT_EQ(map, want);
  ExpectSortedAndDisjoint(map);
}

TEST(E820Test, ExactlyThreeGiBHasNoHighRam) {
  const std::vector<Entry> map = MapFor(3 * kGiB);
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map[2], (Entry{0x100000, 3 * kGiB - kMiB, kE820Ram}));
  for (const Entry& e : map) EXPECT_LT(e.addr, kMmioGapEnd);
  ExpectSortedAndDisjoint(map);
}

TEST(E820Test, FourGiBPutsRestAboveFourGiB) {
  const std::vector<Entry> map = MapFor(4 * kGiB);
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[2], (Entry{0x100000, 3 * kGiB - kMiB, kE820Ram}));
  EXPECT_EQ(map[4], (Entry{4 * kGiB, 1 * kGiB, kE820Ram}));
  ExpectSortedAndDisjoint(map);
  // No RAM in the MMIO gap.
  for (const Entry& e : map) {
    if (e.type != kE820Ram) continue;
    EXPECT_TRUE(e.addr + e.size <= kMmioGapStart || e.addr >= kMmioGapEnd)
        << std::hex << e.addr;
  }
}

TEST(E820Test, RamTotalsMatchRequestMinusHoles) {
  // Everything except the MP table page and the [0xa0000, 1 MiB) hole is RAM.
  const uint64_t holes = (kBaseMemoryEnd - kMpTableAddr) + (kHighMemoryStart - kBaseMemoryEnd);
  for (uint64_t mem : {2 * kMiB, 128 * kMiB, 3 * kGiB, 4 * kGiB, 6 * kGiB + 2 * kMiB}) {
    EXPECT_EQ(RamBytes(MapFor(mem)), mem - holes) << mem;
  }
}

TEST(E820Test, MpTableAreaIsReserved) {
  const std::vector<Entry> map = MapFor(256 * kMiB);
  bool covered = false;
  for (const Entry& e : map) {
    if (e.addr <= kMpTableAddr && kMpFloatingPointerAddr + 16 <= e.addr + e.size) {
      covered = true;
      EXPECT_EQ(e.type, kE820Reserved);
    }
  }
  EXPECT_TRUE(covered);
}

TEST(E820Test, TooSmallIsRefused) {
  EXPECT_EQ(BuildE820(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildE820(1 * kMiB).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildE820(2 * kMiB - 4096).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BuildE820(2 * kMiB).ok());
}

}  // namespace
}  // namespace vessel::x86
