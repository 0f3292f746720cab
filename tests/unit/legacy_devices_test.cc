// I8042, PowerPort, DebugPort and CmosRtc: the small legacy port devices.
#include <chrono>
#include <cstdint>
#include <ctime>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/legacy/cmos_rtc.h"
#include "vmm/legacy/debug_port.h"
#include "vmm/legacy/i8042.h"
#include "vmm/legacy/power_port.h"

namespace vessel {
namespace {

using ::testing::ElementsAre;

uint8_t ReadByte(BusDevice& dev, uint64_t offset) {
  uint8_t v = 0xcc;
  dev.Read(offset, absl::MakeSpan(&v, 1));
  return v;
}

void WriteByte(BusDevice& dev, uint64_t offset, uint8_t value) {
  dev.Write(offset, absl::MakeConstSpan(&value, 1));
}

// ---- I8042 ----

TEST(I8042Test, ResetCommandOnCommandPortCallsReset) {
  int resets = 0;
  I8042 kbd([&] { ++resets; });
  WriteByte(kbd, I8042::kCommandPort - I8042::kDataPort, I8042::kResetCommand);
  EXPECT_EQ(resets, 1);
  WriteByte(kbd, 4, 0xfe);
  EXPECT_EQ(resets, 2);
}

TEST(I8042Test, ResetCommandElsewhereOrOtherCommandsIgnored) {
  int resets = 0;
  I8042 kbd([&] { ++resets; });
  for (uint64_t offset : {0, 1, 2, 3}) WriteByte(kbd, offset, 0xfe);
  for (int cmd = 0; cmd < 256; ++cmd) {
    if (cmd != 0xfe) WriteByte(kbd, 4, static_cast<uint8_t>(cmd));
  }
  kbd.Write(4, absl::Span<const uint8_t>());
  EXPECT_EQ(resets, 0);
}

TEST(I8042Test, ReadsAsIdleController) {
  I8042 kbd(nullptr);
  EXPECT_EQ(ReadByte(kbd, 0), 0x00);  // data
  EXPECT_EQ(ReadByte(kbd, 4), 0x04);  // status: system flag, buffers empty
  EXPECT_EQ(ReadByte(kbd, 1), 0xff);
  EXPECT_EQ(ReadByte(kbd, 3), 0xff);
  uint8_t wide[2] = {0, 0};
  kbd.Read(4, absl::MakeSpan(wide, 2));
  EXPECT_THAT(wide, ElementsAre(0x04, 0xff));
  WriteByte(kbd, 4, 0xfe);  // no callback: must not crash
}

// ---- PowerPort ----

struct PowerCounts {
  int poweroff = 0;
  int reset = 0;
};

TEST(PowerPortTest, PowerOffValueCallsPowerOff) {
  PowerCounts c;
  PowerPort port([&] { ++c.poweroff; }, [&] { ++c.reset; });
  WriteByte(port, 0, PowerPort::kPowerOff);
  EXPECT_EQ(c.poweroff, 1);
  EXPECT_EQ(c.reset, 0);
  WriteByte(port, 0, 0x34);
  EXPECT_EQ(c.poweroff, 2);
}

TEST(PowerPortTest, ResetValueCallsReset) {
  PowerCounts c;
  PowerPort port([&] { ++c.poweroff; }, [&] { ++c.reset; });
  WriteByte(port, 0, PowerPort::kReset);
  EXPECT_EQ(c.reset, 1);
  EXPECT_EQ(c.poweroff, 0);
}

TEST(PowerPortTest, OtherValuesAndOffsetsIgnored) {
  PowerCounts c;
  PowerPort port([&] { ++c.poweroff; }, [&] { ++c.reset; });
  for (int v = 0; v < 256; ++v) {
    if (v != 0x34 && v != 0x01) WriteByte(port, 0, static_cast<uint8_t>(v));
  }
  WriteByte(port, 1, 0x34);
  WriteByte(port, 1, 0x01);
  port.Write(0, absl::Span<const uint8_t>());
  EXPECT_EQ(c.poweroff, 0);
  EXPECT_EQ(c.reset, 0);
  EXPECT_EQ(ReadByte(port, 0), 0);
}

TEST(PowerPortTest, MissingCallbacksTolerated) {
  PowerPort port(nullptr, nullptr);
  WriteByte(port, 0, PowerPort::kPowerOff);
  WriteByte(port, 0, PowerPort::kReset);
}

// ---- DebugPort ----

TEST(DebugPortTest, RecordsFirstWriteOfEachCodeOnly) {
  const auto start = std::chrono::steady_clock::now();
  DebugPort port(start);
  WriteByte(port, 0, 0x40);
  WriteByte(port, 0, 0x41);
  WriteByte(port, 0, 0x40);
  WriteByte(port, 0, 0x00);
  WriteByte(port, 0, 0x41);
  const std::vector<DebugPort::Mark> marks = port.marks();
  ASSERT_EQ(marks.size(), 3u);
  EXPECT_EQ(marks[0].code, 0x40);
  EXPECT_EQ(marks[1].code, 0x41);
  EXPECT_EQ(marks[2].code, 0x00);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  for (const DebugPort::Mark& m : marks) {
    EXPECT_GE(m.since_start.count(), 0);
    EXPECT_LE(m.since_start, elapsed);
  }
  EXPECT_LE(marks[0].since_start, marks[1].since_start);
  EXPECT_LE(marks[1].since_start, marks[2].since_start);
}

TEST(DebugPortTest, MeasuresFromStart) {
  const auto start = std::chrono::steady_clock::now() - std::chrono::seconds(5);
  DebugPort port(start);
  WriteByte(port, 0, 0x60);
  ASSERT_EQ(port.marks().size(), 1u);
  EXPECT_GE(port.marks()[0].since_start, std::chrono::seconds(5));
}

TEST(DebugPortTest, IgnoresOtherOffsetsAndEmptyWrites) {
  DebugPort port(std::chrono::steady_clock::now());
  WriteByte(port, 1, 0x40);
  port.Write(0, absl::Span<const uint8_t>());
  EXPECT_TRUE(port.marks().empty());
  EXPECT_EQ(ReadByte(port, 0), 0xff);
}

TEST(DebugPortTest, RangeNames) {
  EXPECT_EQ(DebugPort::RangeName(0x00), "firmware");
  EXPECT_EQ(DebugPort::RangeName(0x1f), "firmware");
  EXPECT_EQ(DebugPort::RangeName(0x20), "bootloader");
  EXPECT_EQ(DebugPort::RangeName(0x3f), "bootloader");
  EXPECT_EQ(DebugPort::RangeName(0x40), "kernel");
  EXPECT_EQ(DebugPort::RangeName(0x5f), "kernel");
  EXPECT_EQ(DebugPort::RangeName(0x60), "userspace");
  EXPECT_EQ(DebugPort::RangeName(0x7f), "userspace");
  EXPECT_EQ(DebugPort::RangeName(0x80), "other");
  EXPECT_EQ(DebugPort::RangeName(0xff), "other");
}

// ---- CmosRtc ----

// 2024-02-29 13:45:56 UTC, a Thursday.
constexpr std::time_t kLeapDay = 1709214356;
// 1999-12-31 23:59:09 UTC, a Friday.
constexpr std::time_t kMillenniumEve = 946684749;

uint8_t ReadCmos(CmosRtc& rtc, uint8_t index) {
  WriteByte(rtc, 0, index);
  return ReadByte(rtc, 1);
}

TEST(CmosRtcTest, ReportsClockInBcd) {
  CmosRtc rtc([] { return kLeapDay; });
  EXPECT_EQ(ReadCmos(rtc, 0x00), 0x56);  // seconds
  EXPECT_EQ(ReadCmos(rtc, 0x02), 0x45);  // minutes
  EXPECT_EQ(ReadCmos(rtc, 0x04), 0x13);  // hours, 24-hour
  EXPECT_EQ(ReadCmos(rtc, 0x06), 0x05);  // day of week, Sunday = 1
  EXPECT_EQ(ReadCmos(rtc, 0x07), 0x29);  // day of month
  EXPECT_EQ(ReadCmos(rtc, 0x08), 0x02);  // month
  EXPECT_EQ(ReadCmos(rtc, 0x09), 0x24);  // year
  EXPECT_EQ(ReadCmos(rtc, 0x32), 0x20);  // century
}

TEST(CmosRtcTest, ReportsOtherClockInBcd) {
  CmosRtc rtc([] { return kMillenniumEve; });
  EXPECT_EQ(ReadCmos(rtc, 0x00), 0x09);
  EXPECT_EQ(ReadCmos(rtc, 0x02), 0x59);
  EXPECT_EQ(ReadCmos(rtc, 0x04), 0x23);
  EXPECT_EQ(ReadCmos(rtc, 0x06), 0x06);
  EXPECT_EQ(ReadCmos(rtc, 0x07), 0x31);
  EXPECT_EQ(ReadCmos(rtc, 0x08), 0x12);
  EXPECT_EQ(ReadCmos(rtc, 0x09), 0x99);
  EXPECT_EQ(ReadCmos(rtc, 0x32), 0x19);
}

TEST(CmosRtcTest, StatusRegisters) {
  CmosRtc rtc([] { return kLeapDay; });
  EXPECT_EQ(ReadCmos(rtc, 0x0a) & 0x80, 0);  // update not in progress
  EXPECT_EQ(ReadCmos(rtc, 0x0a), 0x26);
  EXPECT_EQ(ReadCmos(rtc, 0x0b), 0x02);  // 24-hour, BCD
  EXPECT_EQ(ReadCmos(rtc, 0x0c), 0x00);
  EXPECT_EQ(ReadCmos(rtc, 0x0d), 0x80);  // valid RAM and time
  EXPECT_EQ(ReadCmos(rtc, 0x10), 0x00);  // other CMOS bytes read 0
}

TEST(CmosRtcTest, NmiBitInIndexWriteIsMasked) {
  CmosRtc rtc([] { return kLeapDay; });
  WriteByte(rtc, 0, 0x80 | 0x04);
  EXPECT_EQ(ReadByte(rtc, 0), 0x04);  // the index port reads back the index
  EXPECT_EQ(ReadByte(rtc, 1), 0x13);  // hours
  EXPECT_EQ(ReadCmos(rtc, 0x80 | 0x0d), 0x80);
}

TEST(CmosRtcTest, ClockIsReadAtEachAccess) {
  std::time_t now = kLeapDay;
  CmosRtc rtc([&now] { return now; });
  EXPECT_EQ(ReadCmos(rtc, 0x00), 0x56);
  now += 2;
  EXPECT_EQ(ReadByte(rtc, 1), 0x58);
}

TEST(CmosRtcTest, WritesToDataPortAreIgnored) {
  CmosRtc rtc([] { return kLeapDay; });
  WriteByte(rtc, 0, 0x00);
  WriteByte(rtc, 1, 0x00);
  EXPECT_EQ(ReadByte(rtc, 1), 0x56);
  EXPECT_EQ(ReadByte(rtc, 0), 0x00);  // index unchanged by the data write
}

TEST(CmosRtcTest, WideReadFillsUpperBytes) {
  CmosRtc rtc([] { return kLeapDay; });
  WriteByte(rtc, 0, 0x0b);
  uint8_t wide[2] = {0, 0};
  rtc.Read(1, absl::MakeSpan(wide, 2));
  EXPECT_THAT(wide, ElementsAre(0x02, 0xff));
}

}  // namespace
}  // namespace vessel
