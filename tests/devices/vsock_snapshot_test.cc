// virtio-vsock pause / save / restore through the virtio-mmio transport, with FakeVsockGuest as
// the guest driver and real Unix sockets.
#include <sys/socket.h>

#include <atomic>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "devices/virtio/mmio_transport.h"
#include "devices/vsock/vsock_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/mmio_driver.h"
#include "tests/devices/vsock_test_guest.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel::vsock {
namespace {

using ::testing::HasSubstr;
using testing::FakeVsockGuest;
using testing::ReadLine;
using testing::ReadN;
using testing::RxPacket;
using testing::UnixConnect;
using testing::UnixListen;
using testing::WriteAll;
using virtio::MmioTransport;

constexpr uint32_t kHostPort = 1024;

class VsockSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.guest_cid = testing::kGuestCid;
    config_.uds_path = dir_.path() + "/v.sock";
    guest_ = std::make_unique<FakeVsockGuest>([this](uint16_t q) { transport_->HandleNotify(q); });
    transport_ = MakeTransport(config_, &dev_);
    ASSERT_NE(transport_, nullptr);
  }
  void TearDown() override {
    transport_.reset();
    guest_.reset();
  }
  std::unique_ptr<MmioTransport> MakeTransport(const VsockConfig& config, VsockDevice** dev) {
    absl::StatusOr<std::unique_ptr<VsockDevice>> d = VsockDevice::Create(config);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return nullptr;
    *dev = d->get();
    return std::make_unique<MmioTransport>("virtio-vsock test", std::move(*d), &guest_->mem(),
                                           nullptr);
  }
  void BringUp(int rx = 16) {
    virtio::testing::MmioBringUp(*transport_, 0, {&guest_->rx(), &guest_->tx(), &guest_->ev()});
    guest_->PostRx(rx);
  }
  // One event buffer in the event queue (as the Linux driver keeps them posted).
  void PostEventBuffer() {
    event_buf_ = guest_->ev().WriteChain(0, {{sizeof(virtio_vsock_event), true}})[0].addr;
    ASSERT_TRUE(guest_->mem().WriteObj<uint32_t>(event_buf_, 0xdeadbeef).ok());
    guest_->ev().Publish(0);
  }
  // Host → guest over the Unix listener, accepted by the guest.
  uint32_t HostConnect(ScopedFd* client, uint32_t guest_port) {
    *client = UnixConnect(config_.uds_path);
    WriteAll(client->get(), absl::StrCat("CONNECT ", guest_port, "\n"));
    std::optional<RxPacket> req = guest_->WaitPacket([&](const RxPacket& p) {
      return p.op() == VIRTIO_VSOCK_OP_REQUEST && p.dst_port() == guest_port;
    });
    EXPECT_TRUE(req.has_value());
    if (!req.has_value()) return 0;
    const uint32_t host_port = req->src_port();
    guest_->Send(FakeVsockGuest::Hdr(VIRTIO_VSOCK_OP_RESPONSE, guest_port, host_port));
    EXPECT_EQ(ReadLine(client->get()), absl::StrCat("OK ", host_port, "\n"));
    return host_port;
  }
  snapshot::v1::VirtioMmioState PausedState() {
    EXPECT_TRUE(transport_->Pause().ok());
    absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : snapshot::v1::VirtioMmioState{};
  }

  testing::TempDir dir_;
  VsockConfig config_;
  std::unique_ptr<FakeVsockGuest> guest_;
  VsockDevice* dev_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  uint64_t event_buf_ = 0;
};

TEST_F(VsockSnapshotTest, PauseQuiescesBothDirectionsAndUnpauseResumes) {
  BringUp();
  ScopedFd client;
  const uint32_t host_port = HostConnect(&client, 52);
  ASSERT_NE(host_port, 0u);
  ASSERT_TRUE(guest_->WaitTxDrained());
  guest_->Poll();

  ASSERT_TRUE(transport_->Pause().ok());
  const uint16_t rx_used = guest_->rx().UsedIdx();
  const uint16_t tx_used = guest_->tx().UsedIdx();
  WriteAll(client.get(), "host bytes while paused");
  guest_->Send(FakeVsockGuest::Hdr(VIRTIO_VSOCK_OP_RW, 52, host_port, 4), std::string("ping"));
  usleep(50000);
  EXPECT_EQ(guest_->rx().UsedIdx(), rx_used) << "a paused device filled rx buffers";
  EXPECT_EQ(guest_->tx().UsedIdx(), tx_used) << "a paused device consumed tx chains";
  EXPECT_EQ(ReadN(client.get(), 4, std::chrono::milliseconds(20)), "");

  transport_->Unpause();
  EXPECT_EQ(ReadN(client.get(), 4), "ping");
  std::string got;
  EXPECT_TRUE(guest_->WaitFor([&] {
    got += guest_->TakeData(52, host_port);
    return got.size() >= 23;
  }));
  EXPECT_EQ(got, "host bytes while paused");
}

TEST_F(VsockSnapshotTest, BackToBackPausesNeverHang) {
  BringUp();
  ScopedFd client;
  const uint32_t host_port = HostConnect(&client, 52);
  ASSERT_NE(host_port, 0u);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(transport_->Pause().ok());
    transport_->Unpause();
  }
  WriteAll(client.get(), "still alive");
  std::string got;
  EXPECT_TRUE(guest_->WaitFor([&] {
    got += guest_->TakeData(52, host_port);
    return got.size() >= 11;
  }));
  EXPECT_EQ(got, "still alive");
}

TEST_F(VsockSnapshotTest, PauseOfAnInactiveDeviceIsANoOp) {
  EXPECT_TRUE(dev_->Pause().ok());
  dev_->Unpause();
  absl::StatusOr<std::string> state = dev_->SaveState();
  ASSERT_TRUE(state.ok());
  snapshot::v1::VsockState vsock;
  ASSERT_TRUE(vsock.ParseFromString(*state));
  EXPECT_EQ(vsock.guest_cid(), testing::kGuestCid);
}

TEST_F(VsockSnapshotTest, RestoredDeviceSendsTransportResetAndServesNewConnections) {
  BringUp();
  PostEventBuffer();
  ScopedFd old_client;
  const uint32_t old_port = HostConnect(&old_client, 52);
  ASSERT_TRUE(guest_->WaitTxDrained());
  guest_->Poll();
  const snapshot::v1::VirtioMmioState state = PausedState();
  EXPECT_EQ(guest_->ev().UsedIdx(), 0) << "the event queue is only for restores";
  transport_.reset();  // the old VM (and its listener) go away

  transport_ = MakeTransport(config_, &dev_);
  ASSERT_TRUE(transport_->RestoreState(state).ok());
  ASSERT_TRUE(guest_->WaitFor([&] { return guest_->ev().UsedIdx() == 1; }));
  EXPECT_EQ(guest_->ev().UsedElem(0).len, sizeof(virtio_vsock_event));
  EXPECT_EQ(guest_->mem().ReadObj<uint32_t>(event_buf_).value(),
            uint32_t{VIRTIO_VSOCK_EVENT_TRANSPORT_RESET});
  EXPECT_EQ(dev_->counters().transport_resets, 1u);

  // A packet for a connection from before the snapshot: the fresh device answers RST.
  guest_->Send(FakeVsockGuest::Hdr(VIRTIO_VSOCK_OP_RW, 52, old_port, 4), std::string("late"));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 52, old_port).has_value());
  // New connections both ways work.
  ScopedFd client;
  const uint32_t host_port = HostConnect(&client, 53);
  ASSERT_NE(host_port, 0u);
  WriteAll(client.get(), "after restore");
  std::string got;
  EXPECT_TRUE(guest_->WaitFor([&] {
    got += guest_->TakeData(53, host_port);
    return got.size() >= 13;
  }));
  EXPECT_EQ(got, "after restore");
  ScopedFd listener = UnixListen(absl::StrCat(config_.uds_path, "_", kHostPort));
  guest_->Send(FakeVsockGuest::Hdr(VIRTIO_VSOCK_OP_REQUEST, 6000, kHostPort));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RESPONSE, 6000, kHostPort).has_value());
}

TEST_F(VsockSnapshotTest, InProcessConnectionsWaitUntilTheGuestHandledTheTransportReset) {
  BringUp();
  PostEventBuffer();
  const snapshot::v1::VirtioMmioState state = PausedState();
  transport_.reset();
  transport_ = MakeTransport(config_, &dev_);
  ASSERT_TRUE(transport_->RestoreState(state).ok());
  ASSERT_TRUE(guest_->WaitFor([&] { return guest_->ev().UsedIdx() == 1; }));
  // The SDK connects to the agent at once; a guest that has not read the event yet would answer
  // with its old CID (dropped) or reset the connection when it gets to the event.
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  ScopedFd host_end(fds[0]);
  std::atomic<bool> answered{false};
  ASSERT_TRUE(dev_->ConnectToGuest(ScopedFd(fds[1]), 1024, [&](absl::StatusOr<uint32_t>) {
    answered = true;
  }).ok());
  EXPECT_FALSE(guest_->WaitPacket([](const RxPacket& p) { return p.op() == VIRTIO_VSOCK_OP_REQUEST; },
                                   std::chrono::milliseconds(150))
                   .has_value())
      << "no REQUEST before the guest re-posted its event buffer";
  // The guest handled the event: it re-posts the buffer and kicks the event queue.
  PostEventBuffer();
  transport_->HandleNotify(VsockDevice::kEventQueue);
  std::optional<RxPacket> req = guest_->WaitPacket([](const RxPacket& p) {
    return p.op() == VIRTIO_VSOCK_OP_REQUEST && p.dst_port() == 1024;
  });
  ASSERT_TRUE(req.has_value()) << "the REQUEST goes out once the guest acknowledged the reset";
  guest_->Send(FakeVsockGuest::Hdr(VIRTIO_VSOCK_OP_RESPONSE, 1024, req->src_port()));
  EXPECT_TRUE(guest_->WaitFor([&] { return answered.load(); }));
}

TEST_F(VsockSnapshotTest, CloneGetsItsOwnCidAndNoEventBufferIsOnlyAWarning) {
  BringUp();
  const snapshot::v1::VirtioMmioState state = PausedState();
  VsockConfig clone = config_;
  clone.guest_cid = 9;
  clone.uds_path = dir_.path() + "/clone.sock";
  VsockDevice* clone_dev;
  std::unique_ptr<MmioTransport> t = MakeTransport(clone, &clone_dev);
  ASSERT_TRUE(t->RestoreState(state).ok());
  uint64_t cid = 0;
  clone_dev->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&cid), 8));
  EXPECT_EQ(cid, 9u);
  usleep(20000);
  EXPECT_EQ(guest_->ev().UsedIdx(), 0);
  EXPECT_EQ(clone_dev->counters().transport_resets, 0u);
  EXPECT_EQ(t->status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0u);
}

TEST_F(VsockSnapshotTest, MalformedStatesAreRefused) {
  BringUp();
  const snapshot::v1::VirtioMmioState good = PausedState();
  transport_.reset();
  struct Case {
    const char* what;
    void (*mutate)(snapshot::v1::VirtioMmioState&);
    const char* message;
  };
  const Case cases[] = {
      {"device type", [](auto& s) { s.set_device_type(VIRTIO_ID_BLOCK); }, "device_type"},
      {"queue count", [](auto& s) { s.mutable_queues()->RemoveLast(); }, "2 queues"},
      {"queue size", [](auto& s) { s.mutable_queues(1)->set_size(512); }, "size 512"},
      {"ring address", [](auto& s) { s.mutable_queues(0)->set_avail_ring(1ull << 40); }, "guest RAM"},
      {"garbage device state", [](auto& s) { s.set_device_state("\xff\xff\xff\xff"); },
       "not a virtio-vsock state"},
      {"CID 0", [](auto& s) { s.set_device_state(""); }, "not a virtio-vsock state"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    snapshot::v1::VirtioMmioState bad = good;
    c.mutate(bad);
    VsockDevice* d;
    std::unique_ptr<MmioTransport> t = MakeTransport(config_, &d);
    absl::Status s = t->RestoreState(bad);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message));
    EXPECT_EQ(t->status(), 0u);
  }
}

}  // namespace
}  // namespace vessel::vsock
