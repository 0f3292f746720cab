#include "vmm/legacy/serial.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/bus/irq_line.h"

namespace vessel {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Register offsets from COM1's base.
constexpr uint64_t kRbrThr = 0;
constexpr uint64_t kIer = 1;
constexpr uint64_t kIirFcr = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

constexpr uint8_t kIerRda = 0x01;
constexpr uint8_t kIerThre = 0x02;
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThreTemt = 0x60;
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirRda = 0x04;

// Records every level the device drives.
class RecordingIrqLine : public IrqLine {
 public:
  void SetLevel(bool high) override { levels.push_back(high); }
  bool high() const { return !levels.empty() && levels.back(); }
  int rising_edges() const {
    int edges = 0;
    bool prev = false;
    for (bool l : levels) {
      if (l && !prev) ++edges;
      prev = l;
    }
    return edges;
  }
  std::vector<bool> levels;
};

class SerialTest : public ::testing::Test {
 protected:
  SerialTest()
      : irq_(std::make_shared<RecordingIrqLine>()),
        serial_(irq_,
                [this](absl::string_view bytes) { output_.append(bytes.data(), bytes.size()); }) {}

  uint8_t ReadReg(uint64_t offset) {
    uint8_t v = 0xcc;
    serial_.Read(offset, absl::MakeSpan(&v, 1));
    return v;
  }
  void WriteReg(uint64_t offset, uint8_t value) {
    serial_.Write(offset, absl::MakeConstSpan(&value, 1));
  }

  std::shared_ptr<RecordingIrqLine> irq_;
  std::string output_;
  Serial16550 serial_;
};

TEST_F(SerialTest, ThrWriteGoesToSink) {
  WriteReg(kRbrThr, 'h');
  WriteReg(kRbrThr, 'i');
  WriteReg(kRbrThr, 0);
  EXPECT_EQ(output_, std::string("hi\0", 3));
}

TEST_F(SerialTest, WritesToOtherRegistersDoNotReachSink) {
  WriteReg(kScr, 'x');
  WriteReg(kLcr, 0x03);
  WriteReg(kMcr, 0x0b);
  WriteReg(8, 'y');  // beyond the register file
  EXPECT_EQ(output_, "");
}

TEST(SerialNoWiringTest, NoSinkOrIrqIsTolerated) {
  Serial16550 serial(nullptr, nullptr);
  uint8_t v = 'a';
  serial.Write(kIer, absl::MakeConstSpan(&kIerThre, 1));
  serial.Write(kRbrThr, absl::MakeConstSpan(&v, 1));
  serial.Read(kIirFcr, absl::MakeSpan(&v, 1));
  EXPECT_EQ(v, kIirThre);
}

TEST_F(SerialTest, DlabSwitchesOffsetsZeroAndOneToDivisorLatch) {
  EXPECT_EQ(ReadReg(kRbrThr), 0);  // RBR, no input
  WriteReg(kLcr, 0x83);
  EXPECT_EQ(ReadReg(kLcr), 0x83);
  EXPECT_EQ(ReadReg(kRbrThr), 0x0c);  // default DLL: 9600 baud
  EXPECT_EQ(ReadReg(kIer), 0x00);     // DLM
  WriteReg(kRbrThr, 0x01);
  WriteReg(kIer, 0x02);
  EXPECT_EQ(ReadReg(kRbrThr), 0x01);
  EXPECT_EQ(ReadReg(kIer), 0x02);
  EXPECT_EQ(output_, "");  // DLL writes are not transmitted
  EXPECT_THAT(irq_->levels, IsEmpty());  // DLM write did not touch IER

  WriteReg(kLcr, 0x03);
  EXPECT_EQ(ReadReg(kIer), 0x00);
  WriteReg(kRbrThr, 'z');
  EXPECT_EQ(output_, "z");
  WriteReg(kLcr, 0x83);
  EXPECT_EQ(ReadReg(kRbrThr), 0x01);
  EXPECT_EQ(ReadReg(kIer), 0x02);
}

TEST_F(SerialTest, DlabReadDoesNotConsumeInput) {
  serial_.QueueInput("q");
  WriteReg(kLcr, 0x80);
  EXPECT_EQ(ReadReg(kRbrThr), 0x0c);
  WriteReg(kLcr, 0x00);
  EXPECT_EQ(ReadReg(kRbrThr), 'q');
}

TEST_F(SerialTest, IerMasksToFourBits) {
  WriteReg(kIer, 0xf5);
  EXPECT_EQ(ReadReg(kIer), 0x05);
  WriteReg(kIer, 0xff);
  EXPECT_EQ(ReadReg(kIer), 0x0f);
}

TEST_F(SerialTest, LsrReportsTransmitterEmptyAndDataReady) {
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt);
  serial_.QueueInput("a");
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt | kLsrDr);
  EXPECT_EQ(ReadReg(kRbrThr), 'a');
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt);
}

TEST_F(SerialTest, LsrAndMsrAreReadOnly) {
  WriteReg(kLsr, 0xff);
  WriteReg(kMsr, 0x00);
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt);
  EXPECT_EQ(ReadReg(kMsr), 0xb0);  // DCD, DSR, CTS
}

TEST_F(SerialTest, QueuedInputReadableInOrder) {
  serial_.QueueInput("abc");
  serial_.QueueInput("d");
  std::string got;
  while (ReadReg(kLsr) & kLsrDr) got.push_back(static_cast<char>(ReadReg(kRbrThr)));
  EXPECT_EQ(got, "abcd");
  EXPECT_EQ(ReadReg(kRbrThr), 0);  // empty RBR reads 0
}

TEST_F(SerialTest, IirPriorities) {
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);
  serial_.QueueInput("xy");
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);  // nothing enabled
  WriteReg(kIer, kIerRda | kIerThre);
  // Receive data outranks THR empty, and reading IIR then leaves THRE pending.
  EXPECT_EQ(ReadReg(kIirFcr), kIirRda);
  EXPECT_EQ(ReadReg(kIirFcr), kIirRda);
  EXPECT_EQ(ReadReg(kRbrThr), 'x');
  EXPECT_EQ(ReadReg(kIirFcr), kIirRda);
  EXPECT_EQ(ReadReg(kRbrThr), 'y');
  EXPECT_EQ(ReadReg(kIirFcr), kIirThre);
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);  // the read cleared THRE
}

TEST_F(SerialTest, RdaOnlyWhenEnabled) {
  WriteReg(kIer, kIerThre);
  ASSERT_EQ(ReadReg(kIirFcr), kIirThre);
  serial_.QueueInput("x");
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);
  EXPECT_FALSE(irq_->high());
}

TEST_F(SerialTest, FifoBitsAfterFcrEnable) {
  WriteReg(kIirFcr, 0x01);
  EXPECT_EQ(ReadReg(kIirFcr), 0xc0 | kIirNone);
  WriteReg(kIer, kIerThre);
  EXPECT_EQ(ReadReg(kIirFcr), 0xc0 | kIirThre);
  WriteReg(kIirFcr, 0x00);
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);
}

TEST_F(SerialTest, FcrClearReceiveFifoDropsInput) {
  serial_.QueueInput("abc");
  WriteReg(kIirFcr, 0x03);
  EXPECT_EQ(ReadReg(kLsr) & kLsrDr, 0);
  EXPECT_EQ(ReadReg(kRbrThr), 0);
}

TEST_F(SerialTest, EnablingThreInterruptRaisesIrq) {
  EXPECT_FALSE(irq_->high());
  WriteReg(kIer, kIerThre);
  EXPECT_TRUE(irq_->high());
  EXPECT_THAT(irq_->levels, ElementsAre(true));
}

TEST_F(SerialTest, ReadingIirClearsThreAndLowersIrq) {
  WriteReg(kIer, kIerThre);
  ASSERT_TRUE(irq_->high());
  EXPECT_EQ(ReadReg(kIirFcr), kIirThre);
  EXPECT_FALSE(irq_->high());
  EXPECT_THAT(irq_->levels, ElementsAre(true, false));
}

TEST_F(SerialTest, EachThrWriteGivesANewEdgeAfterIirRead) {
  WriteReg(kIer, kIerThre);
  ASSERT_EQ(ReadReg(kIirFcr), kIirThre);
  ASSERT_FALSE(irq_->high());
  for (char c : std::string("abc")) {
    WriteReg(kRbrThr, static_cast<uint8_t>(c));
    EXPECT_TRUE(irq_->high()) << c;
    EXPECT_EQ(ReadReg(kIirFcr), kIirThre) << c;
    EXPECT_FALSE(irq_->high()) << c;
  }
  EXPECT_EQ(irq_->rising_edges(), 4);
  EXPECT_EQ(output_, "abc");
}

TEST_F(SerialTest, ThrWriteWithoutIirReadKeepsLineHighWithoutNewEdge) {
  WriteReg(kIer, kIerThre);
  WriteReg(kRbrThr, 'a');
  WriteReg(kRbrThr, 'b');
  EXPECT_THAT(irq_->levels, ElementsAre(true));
}

TEST_F(SerialTest, ThrWriteWithoutEtbeiRaisesNothing) {
  WriteReg(kRbrThr, 'a');
  EXPECT_THAT(irq_->levels, IsEmpty());
  EXPECT_EQ(ReadReg(kIirFcr), kIirNone);
}

TEST_F(SerialTest, DisablingThreInterruptLowersIrq) {
  WriteReg(kIer, kIerThre);
  ASSERT_TRUE(irq_->high());
  WriteReg(kIer, 0);
  EXPECT_FALSE(irq_->high());
}

TEST_F(SerialTest, ReceiveDataRaisesIrqUntilDrained) {
  WriteReg(kIer, kIerRda);
  EXPECT_THAT(irq_->levels, IsEmpty());
  serial_.QueueInput("ab");
  EXPECT_TRUE(irq_->high());
  EXPECT_EQ(ReadReg(kRbrThr), 'a');
  EXPECT_TRUE(irq_->high());
  EXPECT_EQ(ReadReg(kRbrThr), 'b');
  EXPECT_FALSE(irq_->high());
  EXPECT_THAT(irq_->levels, ElementsAre(true, false));
}

TEST_F(SerialTest, LoopbackRoutesThrToRbr) {
  WriteReg(kMcr, 0x10);
  WriteReg(kRbrThr, 'L');
  EXPECT_EQ(output_, "");
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt | kLsrDr);
  EXPECT_EQ(ReadReg(kRbrThr), 'L');
  WriteReg(kMcr, 0x00);
  WriteReg(kRbrThr, 'N');
  EXPECT_EQ(output_, "N");
  EXPECT_EQ(ReadReg(kLsr) & kLsrDr, 0);
}

TEST_F(SerialTest, LoopbackMsrReflectsMcr) {
  WriteReg(kMcr, 0x10);
  EXPECT_EQ(ReadReg(kMsr), 0x00);
  WriteReg(kMcr, 0x11);  // DTR -> DSR
  EXPECT_EQ(ReadReg(kMsr), 0x20);
  WriteReg(kMcr, 0x12);  // RTS -> CTS
  EXPECT_EQ(ReadReg(kMsr), 0x10);
  WriteReg(kMcr, 0x14);  // OUT1 -> RI
  EXPECT_EQ(ReadReg(kMsr), 0x40);
  WriteReg(kMcr, 0x18);  // OUT2 -> DCD
  EXPECT_EQ(ReadReg(kMsr), 0x80);
  WriteReg(kMcr, 0xff);  // masked to 5 bits
  EXPECT_EQ(ReadReg(kMcr), 0x1f);
  EXPECT_EQ(ReadReg(kMsr), 0xf0);
}

TEST_F(SerialTest, ScratchRegisterReadWrite) {
  EXPECT_EQ(ReadReg(kScr), 0);
  WriteReg(kScr, 0xa5);
  EXPECT_EQ(ReadReg(kScr), 0xa5);
  WriteReg(kScr, 0x5a);
  EXPECT_EQ(ReadReg(kScr), 0x5a);
}

TEST_F(SerialTest, InputBeyondLimitIsDroppedAndCounted) {
  std::string input(Serial16550::kMaxInputBytes, 'a');
  serial_.QueueInput(input);
  EXPECT_EQ(serial_.dropped_input(), 0u);
  serial_.QueueInput("0123456789");
  EXPECT_EQ(serial_.dropped_input(), 10u);
  // Overrun is reported once.
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt | kLsrDr | kLsrOe);
  EXPECT_EQ(ReadReg(kLsr), kLsrThreTemt | kLsrDr);
  size_t n = 0;
  while (ReadReg(kLsr) & kLsrDr) {
    ASSERT_EQ(ReadReg(kRbrThr), 'a');
    ++n;
  }
  EXPECT_EQ(n, Serial16550::kMaxInputBytes);
  // Room again.
  serial_.QueueInput("z");
  EXPECT_EQ(ReadReg(kRbrThr), 'z');
  EXPECT_EQ(serial_.dropped_input(), 10u);
}

TEST_F(SerialTest, WideReadsFillUpperBytes) {
  serial_.QueueInput("w");
  uint8_t buf4[4] = {0, 0, 0, 0};
  serial_.Read(kLsr, absl::MakeSpan(buf4, 4));
  EXPECT_THAT(buf4, ElementsAre(kLsrThreTemt | kLsrDr, 0xff, 0xff, 0xff));
  uint8_t buf2[2] = {0, 0};
  serial_.Read(kRbrThr, absl::MakeSpan(buf2, 2));
  EXPECT_THAT(buf2, ElementsAre('w', 0xff));
  // Empty and out-of-range accesses are harmless.
  serial_.Read(kLsr, absl::Span<uint8_t>());
  serial_.Read(9, absl::MakeSpan(buf2, 2));
  EXPECT_THAT(buf2, ElementsAre(0xff, 0xff));
  serial_.Write(kRbrThr, absl::Span<const uint8_t>());
  EXPECT_EQ(output_, "");
}

TEST_F(SerialTest, WideWriteTransmitsLowByteOnly) {
  const uint8_t buf[2] = {'A', 'B'};
  serial_.Write(kRbrThr, absl::MakeConstSpan(buf, 2));
  EXPECT_EQ(output_, "A");
}

}  // namespace
}  // namespace vessel
