#include "vmm/bus/bus.h"

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vessel {
namespace {

// Records every access; reads return `fill` in every byte.
class RecordingDevice : public BusDevice {
 public:
  struct Access {
    bool write;
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  explicit RecordingDevice(uint8_t fill = 0) : fill_(fill) {}

  void Read(uint64_t offset, absl::Span<uint8_t> data) override {
    for (uint8_t& b : data) b = fill_;
    accesses.push_back({false, offset, std::vector<uint8_t>(data.size())});
  }
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    accesses.push_back({true, offset, std::vector<uint8_t>(data.begin(), data.end())});
  }

  std::vector<Access> accesses;

 private:
  uint8_t fill_;
};

TEST(BusTest, DispatchesWithOffsetRelativeToBase) {
  Bus bus("pio");
  auto dev = std::make_shared<RecordingDevice>(0x5a);
  ASSERT_TRUE(bus.Insert(dev, 0x3f8, 8, "serial").ok());

  uint8_t buf[2] = {0, 0};
  ASSERT_TRUE(bus.Read(0x3fd, absl::MakeSpan(buf, 1)));
  EXPECT_EQ(buf[0], 0x5a);
  const uint8_t out[2] = {0x12, 0x34};
  ASSERT_TRUE(bus.Write(0x3f8, absl::MakeConstSpan(out, 2)));
  ASSERT_TRUE(bus.Write(0x3ff, absl::MakeConstSpan(out, 1)));

  ASSERT_EQ(dev->accesses.size(), 3u);
  EXPECT_FALSE(dev->accesses[0].write);
  EXPECT_EQ(dev->accesses[0].offset, 5u);
  EXPECT_EQ(dev->accesses[0].data.size(), 1u);
  EXPECT_TRUE(dev->accesses[1].write);
  EXPECT_EQ(dev->accesses[1].offset, 0u);
  EXPECT_EQ(dev->accesses[1].data, (std::vector<uint8_t>{0x12, 0x34}));
  EXPECT_EQ(dev->accesses[2].offset, 7u);
}

TEST(BusTest, DispatchesToTheRightDevice) {
  Bus bus("mmio");
  auto a = std::make_shared<RecordingDevice>(0xaa);
  auto b = std::make_shared<RecordingDevice>(0xbb);
  ASSERT_TRUE(bus.Insert(a, 0x1000, 0x100, "a").ok());
  ASSERT_TRUE(bus.Insert(b, 0x1100, 0x100, "b").ok());  // adjacent is fine

  uint8_t v = 0;
  ASSERT_TRUE(bus.Read(0x10ff, absl::MakeSpan(&v, 1)));
  EXPECT_EQ(v, 0xaa);
  ASSERT_TRUE(bus.Read(0x1100, absl::MakeSpan(&v, 1)));
  EXPECT_EQ(v, 0xbb);
  ASSERT_EQ(b->accesses.size(), 1u);
  EXPECT_EQ(b->accesses[0].offset, 0u);
  ASSERT_EQ(a->accesses.size(), 1u);
  EXPECT_EQ(a->accesses[0].offset, 0xffu);
}

TEST(BusTest, UnmappedAccessReturnsFalse) {
  Bus bus("pio");
  auto dev = std::make_shared<RecordingDevice>();
  uint8_t v = 0x11;
  EXPECT_FALSE(bus.Read(0x80, absl::MakeSpan(&v, 1)));  // empty bus
  ASSERT_TRUE(bus.Insert(dev, 0x60, 5, "i8042").ok());
  EXPECT_FALSE(bus.Read(0x5f, absl::MakeSpan(&v, 1)));
  EXPECT_FALSE(bus.Read(0x65, absl::MakeSpan(&v, 1)));
  EXPECT_FALSE(bus.Write(0x65, absl::MakeConstSpan(&v, 1)));
  EXPECT_FALSE(bus.Write(0, absl::MakeConstSpan(&v, 1)));
  EXPECT_EQ(v, 0x11);
  EXPECT_TRUE(dev->accesses.empty());
}

TEST(BusTest, AccessStraddlingRangeEndIsNotDispatched) {
  Bus bus("pio");
  auto dev = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.Insert(dev, 0x70, 2, "rtc").ok());
  uint8_t buf[4] = {};
  EXPECT_TRUE(bus.Read(0x70, absl::MakeSpan(buf, 2)));   // exactly the range
  EXPECT_FALSE(bus.Read(0x71, absl::MakeSpan(buf, 2)));  // one byte past the end
  EXPECT_FALSE(bus.Read(0x70, absl::MakeSpan(buf, 4)));
  EXPECT_FALSE(bus.Write(0x71, absl::MakeConstSpan(buf, 4)));
  // Straddling the start: begins in a hole.
  EXPECT_FALSE(bus.Read(0x6f, absl::MakeSpan(buf, 2)));
  EXPECT_EQ(dev->accesses.size(), 1u);
}

TEST(BusTest, AccessStraddlingTwoDevicesIsNotDispatched) {
  Bus bus("pio");
  auto a = std::make_shared<RecordingDevice>();
  auto b = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.Insert(a, 0x10, 2, "a").ok());
  ASSERT_TRUE(bus.Insert(b, 0x12, 2, "b").ok());
  uint8_t buf[2] = {};
  EXPECT_FALSE(bus.Read(0x11, absl::MakeSpan(buf, 2)));
  EXPECT_TRUE(a->accesses.empty());
  EXPECT_TRUE(b->accesses.empty());
}

TEST(BusTest, OverlappingInsertsAreRefused) {
  Bus bus("pio");
  auto dev = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.Insert(dev, 0x100, 0x10, "first").ok());
  struct Case {
    uint64_t base, len;
    const char* what;
  };
  for (const Case& c : {Case{0x100, 0x10, "exact"}, Case{0xf8, 0x10, "partial front"},
                        Case{0x108, 0x10, "partial back"}, Case{0xf0, 0x40, "containing"},
                        Case{0x104, 0x4, "contained"}, Case{0x10f, 1, "last byte"},
                        Case{0xff, 2, "first byte"}}) {
    EXPECT_EQ(bus.Insert(dev, c.base, c.len, c.what).code(), absl::StatusCode::kAlreadyExists)
        << c.what;
  }
  // Neighbours on both sides still fit.
  EXPECT_TRUE(bus.Insert(dev, 0xf0, 0x10, "below").ok());
  EXPECT_TRUE(bus.Insert(dev, 0x110, 0x10, "above").ok());
}

TEST(BusTest, RefusedInsertLeavesExistingMappingInPlace) {
  Bus bus("pio");
  auto first = std::make_shared<RecordingDevice>(1);
  auto second = std::make_shared<RecordingDevice>(2);
  ASSERT_TRUE(bus.Insert(first, 0x100, 0x10, "first").ok());
  ASSERT_FALSE(bus.Insert(second, 0x100, 0x10, "second").ok());
  uint8_t v = 0;
  ASSERT_TRUE(bus.Read(0x100, absl::MakeSpan(&v, 1)));
  EXPECT_EQ(v, 1);
}

TEST(BusTest, BadRangesAreRefused) {
  Bus bus("mmio");
  auto dev = std::make_shared<RecordingDevice>();
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(bus.Insert(dev, 0x100, 0, "empty").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus.Insert(dev, max - 1, 4, "wraps").code(), absl::StatusCode::kInvalidArgument);
}

TEST(BusTest, RangeNearTopOfAddressSpace) {
  Bus bus("mmio");
  auto dev = std::make_shared<RecordingDevice>();
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  // [max - 0x1f, max - 0xf)
  ASSERT_TRUE(bus.Insert(dev, max - 0x1f, 0x10, "top").ok());
  uint8_t buf[2] = {};
  EXPECT_TRUE(bus.Read(max - 0x11, absl::MakeSpan(buf, 2)));
  EXPECT_FALSE(bus.Read(max - 0x10, absl::MakeSpan(buf, 2)));
  EXPECT_FALSE(bus.Read(max, absl::MakeSpan(buf, 2)));
  ASSERT_EQ(dev->accesses.size(), 1u);
  EXPECT_EQ(dev->accesses[0].offset, 0xeu);
}

}  // namespace
}  // namespace vessel
