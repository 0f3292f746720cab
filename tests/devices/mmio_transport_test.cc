// virtio-mmio register semantics against a recording fake device.
#include "devices/virtio/mmio_transport.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vessel::virtio {
namespace {

class RecordingDevice : public VirtioDevice {
 public:
  uint32_t device_type() const override { return 42; }
  uint64_t device_features() const override { return (1ull << VIRTIO_F_VERSION_1) | (1ull << 3); }
  std::vector<uint16_t> queue_max_sizes() const override { return {64, 32}; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(0x10 + offset + i);
  }
  void WriteConfig(uint64_t, absl::Span<const uint8_t>) override { ++config_writes; }
  absl::Status Activate(const ActivateContext& ctx) override {
    ++activations;
    acked = ctx.acked_features;
    queues = ctx.queues.size();
    interrupt = ctx.interrupt;
    return absl::OkStatus();
  }
  void NotifyQueue(uint16_t index) override { notified.push_back(index); }
  void Reset() override { ++resets; }

  int activations = 0, resets = 0, config_writes = 0;
  uint64_t acked = 0;
  size_t queues = 0;
  Interrupt* interrupt = nullptr;
  std::vector<uint16_t> notified;
};

class EdgeCounter : public IrqLine {
 public:
  void SetLevel(bool high) override {
    if (high && !level) ++edges;
    level = high;
  }
  bool level = false;
  int edges = 0;
};

class MmioTransportTest : public ::testing::Test {
 protected:
  MmioTransportTest()
      : memory_(GuestMemory::Create({{0, 1 << 20}}).value()),
        irq_(std::make_shared<EdgeCounter>()) {
    auto dev = std::make_unique<RecordingDevice>();
    dev_ = dev.get();
    transport_ = std::make_unique<MmioTransport>("test", std::move(dev), &memory_, irq_);
  }
  uint32_t R(uint64_t off) {
    uint8_t b[4];
    transport_->Read(off, absl::MakeSpan(b, 4));
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
  }
  void W(uint64_t off, uint32_t v) { transport_->Write(off, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(&v), 4)); }

  // Configures queue `q` with valid rings at `base` and marks it ready.
  void SetUpQueue(uint32_t q, uint64_t base) {
    W(VIRTIO_MMIO_QUEUE_SEL, q);
    W(VIRTIO_MMIO_QUEUE_NUM, 16);
    W(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<uint32_t>(base));
    W(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<uint32_t>(base + 0x1000));
    W(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<uint32_t>(base + 0x2000));
    W(VIRTIO_MMIO_QUEUE_READY, 1);
  }
  void Negotiate(uint64_t features) {
    W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    W(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    W(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features));
    W(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    W(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> 32));
    W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  }
  void Activate() {
    Negotiate((1ull << VIRTIO_F_VERSION_1) | (1ull << 3));
    SetUpQueue(0, 0x10000);
    SetUpQueue(1, 0x20000);
    W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                              VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  GuestMemory memory_;
  std::shared_ptr<EdgeCounter> irq_;
  RecordingDevice* dev_;
  std::unique_ptr<MmioTransport> transport_;
};

TEST_F(MmioTransportTest, IdentityRegisters) {
  EXPECT_EQ(R(VIRTIO_MMIO_MAGIC_VALUE), 0x74726976u);
  EXPECT_EQ(R(VIRTIO_MMIO_VERSION), 2u);
  EXPECT_EQ(R(VIRTIO_MMIO_DEVICE_ID), 42u);
  W(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  EXPECT_EQ(R(VIRTIO_MMIO_DEVICE_FEATURES), 1u << 3);
  W(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  EXPECT_EQ(R(VIRTIO_MMIO_DEVICE_FEATURES), 1u);  // VERSION_1 is bit 32
  W(VIRTIO_MMIO_QUEUE_SEL, 1);
  EXPECT_EQ(R(VIRTIO_MMIO_QUEUE_NUM_MAX), 32u);
  W(VIRTIO_MMIO_QUEUE_SEL, 7);
  EXPECT_EQ(R(VIRTIO_MMIO_QUEUE_NUM_MAX), 0u);
}

TEST_F(MmioTransportTest, FullNegotiationActivatesTheDevice) {
  Activate();
  EXPECT_EQ(dev_->activations, 1);
  EXPECT_EQ(dev_->queues, 2u);
  EXPECT_EQ(dev_->acked, (1ull << VIRTIO_F_VERSION_1) | (1ull << 3));
  EXPECT_TRUE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK);
  W(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
  W(VIRTIO_MMIO_QUEUE_NOTIFY, 9);  // no such queue: ignored
  EXPECT_EQ(dev_->notified, std::vector<uint16_t>{1});
}

TEST_F(MmioTransportTest, LegacyDriverWithoutVersion1IsRefused) {
  Negotiate(1ull << 3);
  EXPECT_FALSE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
}

TEST_F(MmioTransportTest, UnofferedFeatureIsRefused) {
  Negotiate((1ull << VIRTIO_F_VERSION_1) | (1ull << 5));
  EXPECT_FALSE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
}

TEST_F(MmioTransportTest, NotifyBeforeDriverOkIsIgnored) {
  Negotiate(1ull << VIRTIO_F_VERSION_1);
  W(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  EXPECT_TRUE(dev_->notified.empty());
}

TEST_F(MmioTransportTest, QueueOutsideRamSetsNeedsReset) {
  Negotiate(1ull << VIRTIO_F_VERSION_1);
  SetUpQueue(0, 0xfff000);  // beyond the 1 MiB of RAM
  W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                            VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_EQ(dev_->activations, 0);
  EXPECT_TRUE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_TRUE(R(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
  EXPECT_EQ(irq_->edges, 1);
}

TEST_F(MmioTransportTest, InterruptsAreEdgesAndAckClearsStatus) {
  Activate();
  dev_->interrupt->SignalUsedBuffers();
  dev_->interrupt->SignalUsedBuffers();
  EXPECT_EQ(irq_->edges, 2);
  EXPECT_FALSE(irq_->level);
  EXPECT_EQ(R(VIRTIO_MMIO_INTERRUPT_STATUS), static_cast<uint32_t>(VIRTIO_MMIO_INT_VRING));
  W(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
  EXPECT_EQ(R(VIRTIO_MMIO_INTERRUPT_STATUS), 0u);
  const uint32_t gen = R(VIRTIO_MMIO_CONFIG_GENERATION);
  dev_->interrupt->SignalConfigChange();
  EXPECT_NE(R(VIRTIO_MMIO_CONFIG_GENERATION), gen);
}

TEST_F(MmioTransportTest, WritingZeroStatusResetsEverything) {
  Activate();
  W(VIRTIO_MMIO_STATUS, 0);
  EXPECT_EQ(dev_->resets, 1);
  EXPECT_EQ(R(VIRTIO_MMIO_STATUS), 0u);
  W(VIRTIO_MMIO_QUEUE_SEL, 0);
  EXPECT_EQ(R(VIRTIO_MMIO_QUEUE_READY), 0u);
  EXPECT_EQ(R(VIRTIO_MMIO_QUEUE_DESC_LOW), 0u);
  W(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  EXPECT_TRUE(dev_->notified.empty());
  Activate();  // the driver can bring it up again
  EXPECT_EQ(dev_->activations, 2);
}

TEST_F(MmioTransportTest, DeviceReportedNeedsResetShowsInStatusUntilReset) {
  Activate();
  dev_->interrupt->SignalNeedsReset();
  EXPECT_TRUE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_TRUE(R(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
  W(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
  EXPECT_TRUE(dev_->notified.empty());
  W(VIRTIO_MMIO_STATUS, 0);
  EXPECT_FALSE(R(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST_F(MmioTransportTest, QueueRegistersAreFrozenAfterDriverOk) {
  Activate();
  W(VIRTIO_MMIO_QUEUE_SEL, 0);
  W(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
  EXPECT_EQ(R(VIRTIO_MMIO_QUEUE_DESC_LOW), 0x10000u);
}

TEST_F(MmioTransportTest, BadWidthsAndOffsetsAreIgnored) {
  uint8_t b[2] = {0xff, 0xff};
  transport_->Read(VIRTIO_MMIO_MAGIC_VALUE, absl::MakeSpan(b, 2));
  EXPECT_EQ(b[0], 0);
  uint8_t one = 1;
  transport_->Write(VIRTIO_MMIO_STATUS, absl::MakeConstSpan(&one, 1));
  EXPECT_EQ(R(VIRTIO_MMIO_STATUS), 0u);
  EXPECT_EQ(R(0x0c8), 0u);  // undefined register
  W(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  W(VIRTIO_MMIO_STATUS, 0x10);  // clearing ACKNOWLEDGE without reset: refused
  EXPECT_EQ(R(VIRTIO_MMIO_STATUS), static_cast<uint32_t>(VIRTIO_CONFIG_S_ACKNOWLEDGE));
}

TEST_F(MmioTransportTest, ConfigSpaceGoesToTheDevice) {
  uint8_t b[3];
  transport_->Read(VIRTIO_MMIO_CONFIG + 4, absl::MakeSpan(b, 3));
  EXPECT_EQ(b[0], 0x14);
  EXPECT_EQ(b[2], 0x16);
  const uint32_t gen = R(VIRTIO_MMIO_CONFIG_GENERATION);
  transport_->Write(VIRTIO_MMIO_CONFIG, absl::MakeConstSpan(b, 1));
  EXPECT_EQ(dev_->config_writes, 1);
  EXPECT_NE(R(VIRTIO_MMIO_CONFIG_GENERATION), gen);
}

}  // namespace
}  // namespace vessel::virtio
