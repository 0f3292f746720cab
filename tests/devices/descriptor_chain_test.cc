// DescriptorChain validation (direct and indirect), ChainReader and ChainWriter.
#include "devices/virtio/descriptor_chain.h"

#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "devices/virtio/virtio_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"

namespace vessel::virtio {
namespace {

using testing::Buf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using testing::FakeDriver;
using ::testing::HasSubstr;
using testing::Msg;

constexpr uint16_t R = 0;
constexpr uint16_t W = VRING_DESC_F_WRITE;
constexpr uint16_t N = VRING_DESC_F_NEXT;
constexpr uint16_t I = VRING_DESC_F_INDIRECT;

// The chain at `head` of d's table (without going through the avail ring).
DescriptorChain ChainAt(FakeDriver& d, uint16_t head) {
  return DescriptorChain(d.mem(), FakeDriver::kDescTable, d.size(), head);
}

// Collect() must fail with InvalidArgument whose message contains every one of `parts`.
void ExpectChainError(const DescriptorChain& chain, std::vector<std::string> parts) {
  absl::StatusOr<std::vector<Descriptor>> all = chain.Collect();
  ASSERT_FALSE(all.ok()) << "chain of " << all->size() << " descriptors accepted";
  EXPECT_EQ(all.status().code(), absl::StatusCode::kInvalidArgument) << all.status();
  for (const std::string& p : parts) EXPECT_THAT(Msg(all.status()), HasSubstr(p));
}

TEST(DescriptorChainTest, WalksDirectChainWithNext) {
  FakeDriver d(8);
  // Non-consecutive indices: 5 -> 2 -> 7.
  d.WriteDesc(5, 0x40000, 16, R | N, 2);
  d.WriteDesc(2, 0x41000, 32, W | N, 7);
  d.WriteDesc(7, 0x42000, 48, W);
  DescriptorChain chain = ChainAt(d, 5);
  EXPECT_EQ(chain.head_index(), 5);
  std::vector<Descriptor> seen;
  for (;;) {
    absl::StatusOr<std::optional<Descriptor>> n = chain.Next();
    ASSERT_TRUE(n.ok()) << n.status();
    if (!n->has_value()) break;
    seen.push_back(**n);
  }
  EXPECT_THAT(seen, ElementsAre(Descriptor{0x40000, 16, false}, Descriptor{0x41000, 32, true},
                                Descriptor{0x42000, 48, true}));
  // Exhausted: stays at the end; Rewind starts over.
  absl::StatusOr<std::optional<Descriptor>> end = chain.Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
  chain.Rewind();
  absl::StatusOr<std::optional<Descriptor>> first = chain.Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(**first, (Descriptor{0x40000, 16, false}));
}

TEST(DescriptorChainTest, ReadableWritableTotals) {
  FakeDriver d(16);
  std::vector<Descriptor> expected =
      d.WriteChain(3, {{100, false}, {28, false}, {512, true}, {7, true}, {1, true}});
  DescriptorChain chain = ChainAt(d, 3);
  absl::StatusOr<std::vector<Descriptor>> all = chain.Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAreArray(expected));
  absl::StatusOr<uint64_t> readable = chain.ReadableBytes();
  absl::StatusOr<uint64_t> writable = chain.WritableBytes();
  ASSERT_TRUE(readable.ok() && writable.ok());
  EXPECT_EQ(*readable, 128u);
  EXPECT_EQ(*writable, 520u);
  EXPECT_EQ(ReadableBytes(*all), 128u);
  EXPECT_EQ(WritableBytes(*all), 520u);
}

TEST(DescriptorChainTest, BufferOutsideRamRejected) {
  FakeDriver d(8);
  d.WriteChain(0, {{16, false}, {16, true}});
  // Second descriptor straddles the end of RAM.
  d.WriteDesc(1, FakeDriver::kMemSize - 8, 16, W);
  ExpectChainError(ChainAt(d, 0), {"descriptor 1", "not in guest RAM"});
  // Wholly outside RAM, on the head.
  d.WriteDesc(0, 0x10000000, 1, R);
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "not in guest RAM"});
}

TEST(DescriptorChainTest, BufferWrappingAddressSpaceRejected) {
  FakeDriver d(8);
  d.WriteDesc(4, 0xfffffffffffff000ull, 0x2000, R);
  ExpectChainError(ChainAt(d, 4), {"descriptor 4", "wraps"});
}

TEST(DescriptorChainTest, NextIndexOutOfRangeRejected) {
  FakeDriver d(8);
  d.WriteDesc(0, 0x40000, 16, R | N, 8);  // table has 8 entries: 0..7
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "next index 8 out of range"});
  d.WriteDesc(0, 0x40000, 16, R | N, 7);
  d.WriteDesc(7, 0x40000, 16, R);
  EXPECT_TRUE(ChainAt(d, 0).Collect().ok());
}

TEST(DescriptorChainTest, HeadIndexOutOfRangeRejected) {
  FakeDriver d(8);
  ExpectChainError(ChainAt(d, 8), {"descriptor 8", "out of range"});
}

TEST(DescriptorChainTest, NextLoopDetected) {
  FakeDriver d(8);
  d.WriteDesc(2, 0x40000, 16, R | N, 6);  // A -> B
  d.WriteDesc(6, 0x41000, 16, R | N, 2);  // B -> A
  DescriptorChain chain = ChainAt(d, 2);
  ExpectChainError(chain, {"loop"});
  // Next() yields the descriptors it could validate, then the error, which is sticky.
  int yielded = 0;
  absl::Status error;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<std::optional<Descriptor>> n = chain.Next();
    if (!n.ok()) {
      error = n.status();
      break;
    }
    ASSERT_TRUE(n->has_value()) << "a looping chain ended";
    ++yielded;
  }
  EXPECT_EQ(yielded, 7);  // at most table-size descriptors per table
  EXPECT_FALSE(error.ok());
  EXPECT_EQ(chain.Next().status(), error);
}

TEST(DescriptorChainTest, ChainLongerThanQueueSizeRejected) {
  FakeDriver d(8);
  // Exactly queue-size descriptors: fine.
  std::vector<Buf> eight(8, Buf{4, false});
  d.WriteChain(0, eight);
  absl::StatusOr<std::vector<Descriptor>> all = ChainAt(d, 0).Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 8u);
  // The last one continues back to the first: longer than the queue.
  d.WriteDesc(7, 0x40000, 4, R | N, 0);
  ExpectChainError(ChainAt(d, 0), {"descriptor 7", "past 8 descriptors"});
}

TEST(DescriptorChainTest, ReadableAfterWritableRejected) {
  FakeDriver d(8);
  d.WriteChain(0, {{16, false}, {16, true}, {16, false}});
  ExpectChainError(ChainAt(d, 0),
                   {"descriptor 2", "device-readable buffer after a device-writable"});
}

TEST(DescriptorChainTest, ZeroLengthBufferAccepted) {
  FakeDriver d(8);
  d.WriteDesc(0, 0x40000, 0, W);
  absl::StatusOr<std::vector<Descriptor>> all = ChainAt(d, 0).Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAre(Descriptor{0x40000, 0, true}));
}

// --- Indirect tables ---

TEST(DescriptorChainTest, IndirectTableWalked) {
  FakeDriver d(8);
  std::vector<Descriptor> expected =
      d.WriteIndirectChain(3, {{10, false}, {20, false}, {30, true}, {40, true}});
  DescriptorChain chain = ChainAt(d, 3);
  absl::StatusOr<std::vector<Descriptor>> all = chain.Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAreArray(expected));
  EXPECT_EQ(*chain.ReadableBytes(), 30u);
  EXPECT_EQ(*chain.WritableBytes(), 70u);
  // Walk it with Next() into the indirect table, then start over: same descriptors.
  std::vector<Descriptor> walked;
  for (;;) {
    absl::StatusOr<std::optional<Descriptor>> n = chain.Next();
    ASSERT_TRUE(n.ok()) << n.status();
    if (!n->has_value()) break;
    walked.push_back(**n);
  }
  EXPECT_THAT(walked, ElementsAreArray(expected));
  chain.Rewind();
  absl::StatusOr<std::optional<Descriptor>> first = chain.Next();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ(**first, expected[0]);
  absl::StatusOr<std::vector<Descriptor>> again = chain.Collect();  // from the head, mid-walk
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(*again, ElementsAreArray(expected));
}

TEST(DescriptorChainTest, IndirectAfterDirectDescriptors) {
  FakeDriver d(8);
  const uint64_t table = d.AllocIndirectTable(2);
  d.WriteTableDesc(table, 0, 0x50000, 8, R | N, 1);
  d.WriteTableDesc(table, 1, 0x51000, 8, W);
  d.WriteDesc(0, 0x40000, 4, R | N, 1);
  d.WriteDesc(1, table, 32, I | W);  // WRITE on an indirect descriptor is ignored
  absl::StatusOr<std::vector<Descriptor>> all = ChainAt(d, 0).Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAre(Descriptor{0x40000, 4, false}, Descriptor{0x50000, 8, false},
                                Descriptor{0x51000, 8, true}));
  // A writable direct descriptor followed by a readable indirect one breaks the ordering.
  d.WriteDesc(0, 0x40000, 4, W | N, 1);
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor 0", "device-readable"});
}

TEST(DescriptorChainTest, IndirectLengthNotMultipleOf16Rejected) {
  FakeDriver d(8);
  d.WriteIndirectChain(0, {{8, false}, {8, false}});
  d.WriteDesc(0, FakeDriver::kIndirectArea, 24, I);
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "indirect table length 24"});
}

TEST(DescriptorChainTest, IndirectLengthZeroRejected) {
  FakeDriver d(8);
  d.WriteDesc(0, FakeDriver::kIndirectArea, 0, I);
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "indirect table length 0"});
}

TEST(DescriptorChainTest, IndirectTableTooLargeRejected) {
  FakeDriver d(8);
  d.WriteDesc(0, 0, (DescriptorChain::kMaxIndirectEntries + 1) * 16, I);
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "65537 entries exceeds"});
}

TEST(DescriptorChainTest, IndirectTableOutsideRamRejected) {
  FakeDriver d(8);
  d.WriteDesc(0, FakeDriver::kMemSize - 16, 32, I);  // second entry past the end of RAM
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "indirect table", "not in guest RAM"});
}

TEST(DescriptorChainTest, NestedIndirectRejected) {
  FakeDriver d(8);
  const uint64_t inner = d.AllocIndirectTable(1);
  d.WriteTableDesc(inner, 0, 0x50000, 8, R);
  const uint64_t outer = d.AllocIndirectTable(2);
  d.WriteTableDesc(outer, 0, 0x51000, 8, R | N, 1);
  d.WriteTableDesc(outer, 1, inner, 16, I);
  d.WriteDesc(0, outer, 32, I);
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor 1", "nesting"});
}

TEST(DescriptorChainTest, IndirectWithNextRejected) {
  FakeDriver d(8);
  d.WriteIndirectChain(0, {{8, false}});
  d.WriteDesc(0, FakeDriver::kIndirectArea, 16, I | N, 1);
  d.WriteDesc(1, 0x40000, 8, R);
  ExpectChainError(ChainAt(d, 0), {"descriptor 0", "INDIRECT descriptor also has the NEXT flag"});
}

TEST(DescriptorChainTest, IndirectReadableAfterWritableRejected) {
  FakeDriver d(8);
  d.WriteIndirectChain(0, {{8, false}, {8, true}, {8, false}});
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor 2", "device-readable"});
}

TEST(DescriptorChainTest, IndirectNextOutOfTableRejected) {
  FakeDriver d(32);
  const uint64_t table = d.AllocIndirectTable(2);
  d.WriteTableDesc(table, 0, 0x50000, 8, R | N, 1);
  d.WriteTableDesc(table, 1, 0x51000, 8, R | N, 2);  // the table has 2 entries, the queue 32
  d.WriteDesc(0, table, 32, I);
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor 1", "next index 2 out of range"});
}

TEST(DescriptorChainTest, IndirectLoopDetected) {
  FakeDriver d(8);
  const uint64_t table = d.AllocIndirectTable(3);
  d.WriteTableDesc(table, 0, 0x50000, 8, R | N, 1);
  d.WriteTableDesc(table, 1, 0x51000, 8, R | N, 0);
  d.WriteDesc(0, table, 48, I);
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor", "past 3 descriptors"});
}

TEST(DescriptorChainTest, IndirectBufferOutsideRamRejected) {
  FakeDriver d(8);
  const uint64_t table = d.AllocIndirectTable(1);
  d.WriteTableDesc(table, 0, FakeDriver::kMemSize, 8, W);
  d.WriteDesc(0, table, 16, I);
  ExpectChainError(ChainAt(d, 0), {"indirect table descriptor 0", "not in guest RAM"});
}

// --- ChainReader / ChainWriter ---

std::vector<uint8_t> Iota(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(ChainReaderTest, ReadsAcrossReadableBuffers) {
  FakeDriver d(8);
  std::vector<Descriptor> descs = d.WriteChain(0, {{3, false}, {5, false}, {4, false}, {6, true}});
  // Fill the readable buffers with 1..12 in stream order, the writable one with 0xee.
  uint8_t next = 1;
  for (const Descriptor& b : descs) {
    std::vector<uint8_t> bytes = b.is_write ? std::vector<uint8_t>(b.len, 0xee) : Iota(b.len, next);
    if (!b.is_write) next = static_cast<uint8_t>(next + b.len);
    ASSERT_TRUE(d.mem().Write(b.addr, bytes.data(), bytes.size()).ok());
  }
  absl::StatusOr<ChainReader> reader = ChainReader::Create(d.mem(), ChainAt(d, 0));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->remaining(), 12u);

  uint8_t a[2], b[8];
  ASSERT_TRUE(reader->Read(a, sizeof(a)).ok());
  ASSERT_TRUE(reader->Read(b, sizeof(b)).ok());  // crosses into the third buffer
  EXPECT_THAT(a, ElementsAre(1, 2));
  EXPECT_THAT(b, ElementsAre(3, 4, 5, 6, 7, 8, 9, 10));
  EXPECT_EQ(reader->bytes_read(), 10u);
  EXPECT_EQ(reader->remaining(), 2u);

  // Short: fails, consumes nothing.
  uint8_t c[3] = {0, 0, 0};
  absl::Status s = reader->Read(c, sizeof(c));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_THAT(Msg(s), HasSubstr("only 2 device-readable bytes"));
  EXPECT_EQ(reader->remaining(), 2u);
  absl::StatusOr<uint16_t> last = reader->ReadObj<uint16_t>();
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, 11 | (12 << 8));
  EXPECT_EQ(reader->remaining(), 0u);
  EXPECT_FALSE(reader->Read(c, 1).ok());
  EXPECT_TRUE(reader->Read(c, 0).ok());
}

TEST(ChainReaderTest, SkipAndReadObj) {
  FakeDriver d(8);
  std::vector<Descriptor> descs = d.WriteChain(0, {{4, false}, {8, false}});
  const uint64_t value = 0x1122334455667788ull;
  ASSERT_TRUE(d.mem().WriteObj(descs[0].addr + 2, static_cast<uint16_t>(value)).ok());
  ASSERT_TRUE(d.mem().Write(descs[1].addr, reinterpret_cast<const uint8_t*>(&value) + 2, 6).ok());
  ChainReader reader(d.mem(), descs);
  ASSERT_TRUE(reader.Skip(2).ok());
  absl::StatusOr<uint64_t> v = reader.ReadObj<uint64_t>();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, value);
  EXPECT_EQ(reader.Skip(3).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(reader.Skip(2).ok());
}

TEST(ChainWriterTest, WritesAcrossWritableBuffers) {
  FakeDriver d(8);
  std::vector<Descriptor> descs = d.WriteChain(0, {{4, false}, {3, true}, {2, true}, {5, true}});
  absl::StatusOr<ChainWriter> writer = ChainWriter::Create(d.mem(), ChainAt(d, 0));
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ(writer->remaining(), 10u);

  std::vector<uint8_t> data = Iota(7, 0x10);
  ASSERT_TRUE(writer->Write(data.data(), data.size()).ok());
  EXPECT_EQ(writer->bytes_written(), 7u);
  EXPECT_EQ(writer->remaining(), 3u);
  // The readable buffer was not touched; the writable ones hold the stream in order.
  std::vector<uint8_t> got(4);
  ASSERT_TRUE(d.mem().Read(descs[0].addr, got.data(), 4).ok());
  EXPECT_THAT(got, ElementsAre(0, 0, 0, 0));
  got.resize(3);
  ASSERT_TRUE(d.mem().Read(descs[1].addr, got.data(), 3).ok());
  EXPECT_THAT(got, ElementsAre(0x10, 0x11, 0x12));
  got.resize(2);
  ASSERT_TRUE(d.mem().Read(descs[2].addr, got.data(), 2).ok());
  EXPECT_THAT(got, ElementsAre(0x13, 0x14));
  got.resize(5);
  ASSERT_TRUE(d.mem().Read(descs[3].addr, got.data(), 5).ok());
  EXPECT_THAT(got, ElementsAre(0x15, 0x16, 0, 0, 0));

  // Short: fails, writes nothing.
  std::vector<uint8_t> big(4, 0xaa);
  absl::Status s = writer->Write(big.data(), big.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_THAT(Msg(s), HasSubstr("only 3 device-writable bytes"));
  ASSERT_TRUE(d.mem().Read(descs[3].addr, got.data(), 5).ok());
  EXPECT_THAT(got, ElementsAre(0x15, 0x16, 0, 0, 0));
  EXPECT_EQ(writer->bytes_written(), 7u);

  uint8_t tail[3] = {0xa, 0xb, 0xc};
  ASSERT_TRUE(writer->Write(tail, 3).ok());
  ASSERT_TRUE(d.mem().Read(descs[3].addr, got.data(), 5).ok());
  EXPECT_THAT(got, ElementsAre(0x15, 0x16, 0xa, 0xb, 0xc));
  EXPECT_EQ(writer->bytes_written(), 10u);
  EXPECT_FALSE(writer->WriteObj<uint8_t>(1).ok());
}

TEST(ChainWriterTest, NoWritableBuffers) {
  FakeDriver d(8);
  std::vector<Descriptor> descs = d.WriteChain(0, {{16, false}});
  ChainWriter writer(d.mem(), descs);
  EXPECT_EQ(writer.remaining(), 0u);
  EXPECT_EQ(writer.WriteObj<uint32_t>(7).code(), absl::StatusCode::kOutOfRange);
  ChainReader reader(d.mem(), std::vector<Descriptor>{{0x40000, 16, true}});
  EXPECT_EQ(reader.remaining(), 0u);
}

TEST(ChainReaderTest, CreateFailsOnBadChain) {
  FakeDriver d(8);
  d.WriteDesc(0, FakeDriver::kMemSize, 16, R);
  EXPECT_FALSE(ChainReader::Create(d.mem(), ChainAt(d, 0)).ok());
  EXPECT_FALSE(ChainWriter::Create(d.mem(), ChainAt(d, 0)).ok());
}

}  // namespace
}  // namespace vessel::virtio
