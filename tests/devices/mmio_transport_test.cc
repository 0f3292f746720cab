// virtio-mmio register semantics against a recording fake device.
#include "devices/virtio/mmio_transport.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel::virtio {
namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

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
  absl::Status Pause() override {
    ++pauses;
    return absl::OkStatus();
  }
  void Unpause() override { ++unpauses; }
  absl::StatusOr<std::string> SaveState() const override { return saved_state; }
  absl::Status RestoreState(absl::string_view state) override {
    restored = std::string(state);
    return restore_result;
  }

  int activations = 0, resets = 0, config_writes = 0, pauses = 0, unpauses = 0;
  std::string saved_state = "recording-device-state";
  std::string restored;
  absl::Status restore_result;
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

  // A second transport + device on the same guest memory, as a restoring VM builds them.
  std::unique_ptr<MmioTransport> Fresh(RecordingDevice** dev) {
    auto d = std::make_unique<RecordingDevice>();
    *dev = d.get();
    return std::make_unique<MmioTransport>("restored", std::move(d), &memory_, irq_);
  }
  // The state of an active, paused transport with some registers moved off their defaults.
  snapshot::v1::VirtioMmioState ActiveState() {
    Activate();
    W(VIRTIO_MMIO_QUEUE_SEL, 1);
    dev_->interrupt->SignalUsedBuffers();
    EXPECT_TRUE(transport_->Pause().ok());
    absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : snapshot::v1::VirtioMmioState{};
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

// --- Snapshot and restore ---

TEST_F(MmioTransportTest, PauseReachesAnActiveDeviceOnceAndSaveNeedsIt) {
  Activate();
  absl::StatusOr<snapshot::v1::VirtioMmioState> running = transport_->SaveState();
  EXPECT_EQ(running.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(running.status()), ::testing::HasSubstr("paused"));
  ASSERT_TRUE(transport_->Pause().ok());
  ASSERT_TRUE(transport_->Pause().ok());  // idempotent
  EXPECT_EQ(dev_->pauses, 1);
  EXPECT_TRUE(transport_->paused());
  EXPECT_TRUE(transport_->SaveState().ok());
  transport_->Unpause();
  transport_->Unpause();
  EXPECT_EQ(dev_->unpauses, 1);
  EXPECT_FALSE(transport_->paused());
}

TEST_F(MmioTransportTest, PauseOfAnInactiveDeviceDoesNotReachIt) {
  Negotiate(1ull << VIRTIO_F_VERSION_1);
  ASSERT_TRUE(transport_->Pause().ok());
  transport_->Unpause();
  EXPECT_EQ(dev_->pauses, 0);
  EXPECT_EQ(dev_->unpauses, 0);
  // Inactive: saving needs no pause.
  absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_FALSE(state->active());
  RecordingDevice* dev2;
  std::unique_ptr<MmioTransport> t2 = Fresh(&dev2);
  ASSERT_TRUE(t2->RestoreState(*state).ok());
  EXPECT_EQ(dev2->activations, 0);
  EXPECT_EQ(dev2->restored, "recording-device-state");
  // The driver carries on from FEATURES_OK.
  EXPECT_EQ(t2->status(), R(VIRTIO_MMIO_STATUS));
}

TEST_F(MmioTransportTest, SaveRestoreRoundTripReactivatesWithTheSameQueues) {
  const snapshot::v1::VirtioMmioState state = ActiveState();
  EXPECT_EQ(state.device_type(), 42u);
  EXPECT_TRUE(state.active());
  EXPECT_EQ(state.queues_size(), 2);
  EXPECT_EQ(state.queues(1).desc_table(), 0x20000u);
  EXPECT_EQ(state.queue_sel(), 1u);
  EXPECT_EQ(state.interrupt_status(), static_cast<uint32_t>(VIRTIO_MMIO_INT_VRING));
  EXPECT_EQ(state.device_state(), "recording-device-state");

  RecordingDevice* dev2;
  std::unique_ptr<MmioTransport> t2 = Fresh(&dev2);
  ASSERT_TRUE(t2->RestoreState(state).ok());
  EXPECT_EQ(dev2->restored, "recording-device-state");
  EXPECT_EQ(dev2->activations, 1);
  EXPECT_EQ(dev2->queues, 2u);
  EXPECT_EQ(dev2->acked, (1ull << VIRTIO_F_VERSION_1) | (1ull << 3));
  EXPECT_EQ(t2->status(), transport_->status());
  EXPECT_EQ(t2->interrupt_status(), static_cast<uint32_t>(VIRTIO_MMIO_INT_VRING));
  // Every register reads back as before, through the restored transport.
  auto r2 = [&](uint64_t off) {
    uint8_t b[4];
    t2->Read(off, absl::MakeSpan(b, 4));
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
  };
  for (uint64_t off : {VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                       VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_STATUS}) {
    EXPECT_EQ(r2(off), R(off)) << "register " << off;
  }
  // Queue notifications reach the restored device; it saves again identically once paused.
  uint32_t one = 1;
  t2->Write(VIRTIO_MMIO_QUEUE_NOTIFY, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(&one), 4));
  EXPECT_EQ(dev2->notified, std::vector<uint16_t>{1});
  ASSERT_TRUE(t2->Pause().ok());
  absl::StatusOr<snapshot::v1::VirtioMmioState> again = t2->SaveState();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->SerializeAsString(), state.SerializeAsString());
}

TEST_F(MmioTransportTest, NeedsResetStateIsRestoredWithoutActivation) {
  Activate();
  dev_->interrupt->SignalNeedsReset();
  ASSERT_TRUE(transport_->Pause().ok());
  absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
  ASSERT_TRUE(state.ok());
  RecordingDevice* dev2;
  std::unique_ptr<MmioTransport> t2 = Fresh(&dev2);
  ASSERT_TRUE(t2->RestoreState(*state).ok());
  EXPECT_EQ(dev2->activations, 0);
  EXPECT_TRUE(t2->status() & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST_F(MmioTransportTest, MalformedStatesAreRefusedAndLeaveTheTransportReset) {
  const snapshot::v1::VirtioMmioState good = ActiveState();
  struct Case {
    const char* what;
    std::function<void(snapshot::v1::VirtioMmioState&)> mutate;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"device type", [](auto& s) { s.set_device_type(2); }, "device_type 2"},
      {"queue count", [](auto& s) { s.mutable_queues()->RemoveLast(); }, "1 queues"},
      {"queue max size", [](auto& s) { s.mutable_queues(0)->set_max_size(128); }, "max_size 128"},
      {"queue size", [](auto& s) { s.mutable_queues(1)->set_size(12); }, "size 12"},
      {"queue size too big", [](auto& s) { s.mutable_queues(1)->set_size(64); }, "size 64"},
      {"index", [](auto& s) { s.mutable_queues(0)->set_next_avail(70000); }, "next_avail"},
      {"ring outside RAM", [](auto& s) { s.mutable_queues(0)->set_used_ring(0xfff000); },
       "not wholly in guest RAM"},
      {"misaligned ring", [](auto& s) { s.mutable_queues(1)->set_desc_table(0x20008); },
       "aligned"},
      {"unoffered feature", [](auto& s) { s.set_driver_features(s.driver_features() | (1ull << 5)); },
       "offers"},
      {"DRIVER_OK without FEATURES_OK",
       [](auto& s) { s.set_status(s.status() & ~uint32_t{VIRTIO_CONFIG_S_FEATURES_OK}); },
       "FEATURES_OK"},
      {"active without DRIVER_OK",
       [](auto& s) { s.set_status(s.status() & ~uint32_t{VIRTIO_CONFIG_S_DRIVER_OK}); },
       "DRIVER_OK"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    snapshot::v1::VirtioMmioState bad = good;
    c.mutate(bad);
    RecordingDevice* dev2;
    std::unique_ptr<MmioTransport> t2 = Fresh(&dev2);
    absl::Status s = t2->RestoreState(bad);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(Msg(s), ::testing::HasSubstr("restored"));  // the transport's name
    EXPECT_THAT(Msg(s), ::testing::HasSubstr(c.message));
    EXPECT_EQ(dev2->activations, 0);
    EXPECT_EQ(t2->status(), 0u);
    EXPECT_EQ(t2->interrupt_status(), 0u);
  }
}

TEST_F(MmioTransportTest, DeviceStateErrorsAreRefusedAndResetTheDevice) {
  const snapshot::v1::VirtioMmioState state = ActiveState();
  RecordingDevice* dev2;
  std::unique_ptr<MmioTransport> t2 = Fresh(&dev2);
  dev2->restore_result = absl::InvalidArgumentError("garbage device state");
  absl::Status s = t2->RestoreState(state);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), ::testing::HasSubstr("garbage device state"));
  EXPECT_EQ(dev2->activations, 0);
  EXPECT_EQ(dev2->resets, 1);
  EXPECT_EQ(t2->status(), 0u);
  // A later, good restore on the same transport works.
  dev2->restore_result = absl::OkStatus();
  EXPECT_TRUE(t2->RestoreState(state).ok());
  EXPECT_EQ(dev2->activations, 1);
}

TEST_F(MmioTransportTest, RestoreNeedsAFreshTransport) {
  const snapshot::v1::VirtioMmioState state = ActiveState();
  absl::Status s = transport_->RestoreState(state);  // this one is active
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dev_->activations, 1);
}

}  // namespace
}  // namespace vessel::virtio
