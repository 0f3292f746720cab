#include "vmm/memory/guest_memory.h"

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Two regions with a one-page gap: [0x1000, 0x3000) and [0x4000, 0x6000).
GuestMemory TwoRegionsWithGap() {
  absl::StatusOr<GuestMemory> mem =
      GuestMemory::Create({{0x4000, 2 * kPage}, {0x1000, 2 * kPage}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

// Two adjacent regions: [0, 0x2000) and [0x2000, 0x4000).
GuestMemory TwoAdjacentRegions() {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 2 * kPage}, {0x2000, 2 * kPage}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

// All bytes of [gpa, gpa+len) read back as `value`.
void ExpectFilledWith(const GuestMemory& mem, uint64_t gpa, uint64_t len, uint8_t value) {
  std::vector<uint8_t> buf(len, static_cast<uint8_t>(~value));
  ASSERT_TRUE(mem.Read(gpa, buf.data(), len).ok());
  EXPECT_THAT(buf, ::testing::Each(value)) << "at " << gpa;
}

TEST(GuestMemoryCreateTest, RejectsEmptyRangeList) {
  EXPECT_EQ(GuestMemory::Create({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsZeroSizedRange) {
  EXPECT_EQ(GuestMemory::Create({{0, 0}}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsUnalignedAddress) {
  EXPECT_EQ(GuestMemory::Create({{0x800, kPage}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsUnalignedSize) {
  EXPECT_EQ(GuestMemory::Create({{0, kPage + 1}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsWrappingRange) {
  EXPECT_EQ(GuestMemory::Create({{kMax - kPage + 1, 2 * kPage}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, RejectsOverlappingRanges) {
  EXPECT_EQ(GuestMemory::Create({{0, 2 * kPage}, {kPage, 2 * kPage}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Given out of order: sorted before the check.
  EXPECT_EQ(GuestMemory::Create({{kPage, 2 * kPage}, {0, 2 * kPage}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GuestMemory::Create({{0, kPage}, {0, kPage}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GuestMemoryCreateTest, SortsRegionsAndSumsSize) {
  GuestMemory mem = TwoRegionsWithGap();
  ASSERT_EQ(mem.regions().size(), 2u);
  EXPECT_EQ(mem.regions()[0].gpa, 0x1000u);
  EXPECT_EQ(mem.regions()[0].size, 2 * kPage);
  EXPECT_EQ(mem.regions()[1].gpa, 0x4000u);
  EXPECT_EQ(mem.regions()[1].end(), 0x6000u);
  EXPECT_NE(mem.regions()[0].host, nullptr);
  EXPECT_EQ(mem.total_size(), 4 * kPage);
}

TEST(GuestMemoryCreateTest, AcceptsAdjacentRanges) {
  GuestMemory mem = TwoAdjacentRegions();
  EXPECT_EQ(mem.regions().size(), 2u);
  EXPECT_EQ(mem.total_size(), 4 * kPage);
}

TEST(GuestMemoryCreateTest, FreshMemoryIsZero) {
  GuestMemory mem = TwoRegionsWithGap();
  ExpectFilledWith(mem, 0x1000, 2 * kPage, 0);
  ExpectFilledWith(mem, 0x4000, 2 * kPage, 0);
}

TEST(GuestMemoryAccessTest, WriteReadRoundTrip) {
  GuestMemory mem = TwoRegionsWithGap();
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5, 6, 7};
  ASSERT_TRUE(mem.Write(0x1ffd, data.data(), data.size()).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(mem.Read(0x1ffd, back.data(), back.size()).ok());
  EXPECT_EQ(back, data);
  // The write landed in the host mapping at the right offset.
  EXPECT_EQ(mem.regions()[0].host[0xffd], 1);
  EXPECT_EQ(mem.regions()[0].host[0x1003], 7);
}

TEST(GuestMemoryAccessTest, AccessAtFirstAndLastByteOfRegion) {
  GuestMemory mem = TwoRegionsWithGap();
  uint8_t b = 0xab;
  EXPECT_TRUE(mem.Write(0x1000, &b, 1).ok());
  EXPECT_TRUE(mem.Write(0x2fff, &b, 1).ok());
  EXPECT_TRUE(mem.Write(0x5fff, &b, 1).ok());
  EXPECT_EQ(mem.regions()[0].host[0], 0xab);
  EXPECT_EQ(mem.regions()[0].host[0x1fff], 0xab);
  EXPECT_EQ(mem.regions()[1].host[0x1fff], 0xab);
}

TEST(GuestMemoryAccessTest, FillRoundTrip) {
  GuestMemory mem = TwoRegionsWithGap();
  ASSERT_TRUE(mem.Fill(0x4010, 0x5a, 0x20).ok());
  ExpectFilledWith(mem, 0x4010, 0x20, 0x5a);
  ExpectFilledWith(mem, 0x4000, 0x10, 0);
  ExpectFilledWith(mem, 0x4030, 0x10, 0);
}

struct Pod {
  uint32_t a;
  uint16_t b;
  uint8_t c[10];
};

TEST(GuestMemoryAccessTest, ReadObjWriteObjRoundTrip) {
  GuestMemory mem = TwoRegionsWithGap();
  const Pod in = {0xdeadbeef, 0x1234, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
  ASSERT_TRUE(mem.WriteObj(0x4100, in).ok());
  absl::StatusOr<Pod> out = mem.ReadObj<Pod>(0x4100);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->a, in.a);
  EXPECT_EQ(out->b, in.b);
  EXPECT_EQ(std::vector<uint8_t>(out->c, out->c + 10), std::vector<uint8_t>(in.c, in.c + 10));

  ASSERT_TRUE(mem.WriteObj<uint64_t>(0x1008, 0x0102030405060708ull).ok());
  EXPECT_EQ(mem.regions()[0].host[8], 0x08);  // little endian
  absl::StatusOr<uint64_t> v = mem.ReadObj<uint64_t>(0x1008);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x0102030405060708ull);
}

TEST(GuestMemoryAccessTest, ReadObjOutsideRamFails) {
  GuestMemory mem = TwoRegionsWithGap();
  EXPECT_EQ(mem.ReadObj<uint64_t>(0x2ffc).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.WriteObj<uint64_t>(0x2ffc, ~0ull).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x2ff0, 0x10, 0);
}

TEST(GuestMemoryAccessTest, AccessSpanningAdjacentRegionsSucceeds) {
  GuestMemory mem = TwoAdjacentRegions();
  std::vector<uint8_t> data(0x100);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i + 1);
  ASSERT_TRUE(mem.Contains(0x1f80, data.size()));
  ASSERT_TRUE(mem.Write(0x1f80, data.data(), data.size()).ok());
  // Split across both host mappings.
  EXPECT_EQ(mem.regions()[0].host[0x1f80], 1);
  EXPECT_EQ(mem.regions()[0].host[0x1fff], 0x80);
  EXPECT_EQ(mem.regions()[1].host[0], 0x81);
  EXPECT_EQ(mem.regions()[1].host[0x7f], 0x00);  // 0x100 truncated to uint8_t
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(mem.Read(0x1f80, back.data(), back.size()).ok());
  EXPECT_EQ(back, data);

  ASSERT_TRUE(mem.Fill(0x1ff0, 0x77, 0x20).ok());
  ExpectFilledWith(mem, 0x1ff0, 0x20, 0x77);
  // The whole of RAM at once.
  std::vector<uint8_t> all(4 * kPage);
  EXPECT_TRUE(mem.Read(0, all.data(), all.size()).ok());
}

TEST(GuestMemoryAccessTest, AccessLeavingRamFailsAndWritesNothing) {
  GuestMemory mem = TwoRegionsWithGap();
  std::vector<uint8_t> data(0x20, 0xee);
  // Starts in the first region, runs into the gap.
  absl::Status s = mem.Write(0x2ff0, data.data(), data.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Fill(0x2ff0, 0xee, 0x20).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x2ff0, 0x10, 0);
  // Starts in the last region, runs past the end of RAM.
  EXPECT_EQ(mem.Write(0x5ff0, data.data(), data.size()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Fill(0x5ff0, 0xee, 0x20).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x5ff0, 0x10, 0);
  std::vector<uint8_t> out(0x20, 0x11);
  EXPECT_EQ(mem.Read(0x5ff0, out.data(), out.size()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(out, ::testing::Each(0x11));
}

TEST(GuestMemoryAccessTest, AccessCrossingGapFailsAndWritesNothing) {
  GuestMemory mem = TwoRegionsWithGap();
  // [0x2000, 0x5000): both ends in RAM, the middle page is not.
  std::vector<uint8_t> data(0x3000, 0xee);
  EXPECT_FALSE(mem.Contains(0x2000, data.size()));
  EXPECT_EQ(mem.Write(0x2000, data.data(), data.size()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Fill(0x2000, 0xee, data.size()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Read(0x2000, data.data(), data.size()).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x1000, 2 * kPage, 0);
  ExpectFilledWith(mem, 0x4000, 2 * kPage, 0);
}

TEST(GuestMemoryAccessTest, AccessStartingOutsideRamFails) {
  GuestMemory mem = TwoRegionsWithGap();
  uint8_t b = 1;
  for (uint64_t gpa : {uint64_t{0}, uint64_t{0xfff}, uint64_t{0x3000}, uint64_t{0x3fff},
                       uint64_t{0x6000}, uint64_t{1} << 40, kMax}) {
    EXPECT_EQ(mem.Write(gpa, &b, 1).code(), absl::StatusCode::kOutOfRange) << gpa;
    EXPECT_EQ(mem.Read(gpa, &b, 1).code(), absl::StatusCode::kOutOfRange) << gpa;
    EXPECT_EQ(mem.Fill(gpa, 1, 1).code(), absl::StatusCode::kOutOfRange) << gpa;
    EXPECT_FALSE(mem.Contains(gpa, 1)) << gpa;
  }
  // Starts before RAM and runs into it.
  std::vector<uint8_t> data(0x20, 0xee);
  EXPECT_EQ(mem.Write(0xff0, data.data(), data.size()).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x1000, 0x10, 0);
}

TEST(GuestMemoryAccessTest, AccessWrappingAroundFails) {
  GuestMemory mem = TwoRegionsWithGap();
  uint8_t buf[16] = {};
  // gpa + len wraps to an address inside RAM.
  EXPECT_FALSE(mem.Contains(0x1000, kMax));
  EXPECT_FALSE(mem.Contains(kMax, 0x1002));
  EXPECT_EQ(mem.Read(kMax - 1, buf, 0x1004).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Fill(0x1000, 0xee, kMax).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Fill(0x4000, 0xee, kMax - 0x3fff).code(), absl::StatusCode::kOutOfRange);
  ExpectFilledWith(mem, 0x1000, 2 * kPage, 0);
  ExpectFilledWith(mem, 0x4000, 2 * kPage, 0);
}

TEST(GuestMemoryAccessTest, ZeroLengthAccessSucceedsAnywhere) {
  GuestMemory mem = TwoRegionsWithGap();
  uint8_t b = 0;
  EXPECT_TRUE(mem.Contains(0x3000, 0));
  EXPECT_TRUE(mem.Read(0x3000, &b, 0).ok());
  EXPECT_TRUE(mem.Write(kMax, &b, 0).ok());
  EXPECT_TRUE(mem.Fill(0, 1, 0).ok());
}

TEST(GuestMemorySliceTest, SliceWithinOneRegion) {
  GuestMemory mem = TwoRegionsWithGap();
  absl::StatusOr<absl::Span<uint8_t>> s = mem.Slice(0x4100, 0x100);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->size(), 0x100u);
  EXPECT_EQ(s->data(), mem.regions()[1].host + 0x100);
  (*s)[0] = 0x42;
  EXPECT_EQ(*mem.ReadObj<uint8_t>(0x4100), 0x42);
  // Exactly to the end of the region.
  EXPECT_TRUE(mem.Slice(0x1000, 2 * kPage).ok());
  EXPECT_TRUE(mem.Slice(0x5fff, 1).ok());
}

TEST(GuestMemorySliceTest, SliceLeavingRegionFails) {
  GuestMemory mem = TwoRegionsWithGap();
  EXPECT_EQ(mem.Slice(0x2f00, 0x101).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Slice(0x3000, 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Slice(0x5000, kMax).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(mem.Slice(0, 1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(GuestMemorySliceTest, SliceAcrossAdjacentRegionsFails) {
  GuestMemory mem = TwoAdjacentRegions();
  // Readable as a whole, but not one host mapping.
  EXPECT_TRUE(mem.Contains(0x1ff0, 0x20));
  EXPECT_EQ(mem.Slice(0x1ff0, 0x20).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(mem.Slice(0x1ff0, 0x10).ok());
}

TEST(GuestMemorySliceTest, ZeroLengthSliceInRam) {
  GuestMemory mem = TwoRegionsWithGap();
  absl::StatusOr<absl::Span<uint8_t>> s = mem.Slice(0x1000, 0);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->empty());
}

TEST(GuestMemoryTest, MoveKeepsMappings) {
  GuestMemory a = TwoRegionsWithGap();
  ASSERT_TRUE(a.WriteObj<uint32_t>(0x1000, 0xcafef00d).ok());
  GuestMemory b = std::move(a);
  EXPECT_EQ(*b.ReadObj<uint32_t>(0x1000), 0xcafef00du);
}

}  // namespace
}  // namespace vessel
