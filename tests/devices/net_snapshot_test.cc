// virtio-net pause / save / restore through the virtio-mmio transport: fake drivers on the rx and
// tx queues, real taps in a scratch network namespace with AF_PACKET peers. Skipped where the
// host cannot make namespaces or taps.
#include <linux/virtio_ids.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/net/net_device.h"
#include "devices/net/virtio_net_uapi.h"
#include "devices/virtio/mmio_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/mmio_driver.h"
#include "tests/devices/net_test_env.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel::net {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::EthernetFrame;
using testing::kTestEtherType;
using testing::Pattern;
using testing::ScratchNetns;
using testing::WaitFor;
using virtio::MmioTransport;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;

constexpr MacAddress kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr MacAddress kCloneMac = {0x52, 0x54, 0x00, 0xab, 0xcd, 0xef};
constexpr MacAddress kPeerMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};

std::vector<uint8_t> TestFrame(size_t payload, uint8_t seed) {
  return EthernetFrame(kPeerMac, kGuestMac, kTestEtherType, Pattern(payload, seed));
}

class NetSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ScratchNetns>> ns = ScratchNetns::Create();
    if (!ns.ok()) GTEST_SKIP() << "cannot make a scratch network namespace: " << ns.status();
    ns_ = std::move(*ns);
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 2 * FakeDriver::kMemSize}});
    ASSERT_TRUE(mem.ok());
    mem_.emplace(std::move(*mem));
    rx_ = std::make_unique<FakeDriver>(*mem_, 0, 256);
    tx_ = std::make_unique<FakeDriver>(*mem_, FakeDriver::kMemSize, 256);
    transport_ = MakeTransport({"vtap0", kGuestMac, ns_->path()}, &dev_);
    ASSERT_NE(transport_, nullptr);
    peer_ = Peer("vtap0");
  }
  void TearDown() override { transport_.reset(); }

  std::unique_ptr<MmioTransport> MakeTransport(const NetConfig& config, NetDevice** dev) {
    absl::StatusOr<std::unique_ptr<NetDevice>> d = NetDevice::Create(config);
    if (!d.ok()) {
      ADD_FAILURE() << d.status();
      return nullptr;
    }
    *dev = d->get();
    EXPECT_TRUE(ns_->SetUp(config.tap_name).ok());
    EXPECT_TRUE(ns_->SetMtu(config.tap_name, 9000).ok());  // room for the 2.5 KB frames
    return std::make_unique<MmioTransport>("virtio-net test", std::move(*d), &*mem_, nullptr);
  }
  ScopedFd Peer(const std::string& tap) {
    absl::StatusOr<ScopedFd> peer = ns_->OpenPacketSocket(tap);
    EXPECT_TRUE(peer.ok()) << peer.status();
    return peer.ok() ? std::move(*peer) : ScopedFd();
  }
  void BringUp(uint64_t features) {
    virtio::testing::MmioBringUp(*transport_, features, {rx_.get(), tx_.get()});
  }
  void PostRx(uint16_t head, uint32_t len) {
    rx_bufs_[head] = rx_->WriteChain(head, {{len, true}})[0];
    rx_->Publish(head);
    transport_->HandleNotify(NetDevice::kRxQueue);
  }
  void SendTx(uint16_t head, const std::vector<uint8_t>& frame) {
    std::vector<uint8_t> packet(sizeof(virtio_net_hdr_v1), 0);
    packet.insert(packet.end(), frame.begin(), frame.end());
    virtio::Descriptor d = tx_->WriteChain(head, {{static_cast<uint32_t>(packet.size()), false}})[0];
    ASSERT_TRUE(mem_->Write(d.addr, packet.data(), packet.size()).ok());
    tx_->Publish(head);
    transport_->HandleNotify(NetDevice::kTxQueue);
  }
  void Inject(int peer, const std::vector<uint8_t>& frame) {
    ASSERT_EQ(::send(peer, frame.data(), frame.size(), 0), static_cast<ssize_t>(frame.size()));
  }
  // The frame (without vnet header) in used rx entries [first, first + n).
  std::vector<uint8_t> RxFrame(uint16_t first, uint16_t n) {
    std::vector<uint8_t> bytes;
    for (uint16_t i = first; i < first + n; ++i) {
      const vring_used_elem e = rx_->UsedElem(i);
      const virtio::Descriptor& d = rx_bufs_.at(static_cast<uint16_t>(e.id));
      std::vector<uint8_t> chunk(e.len);
      EXPECT_TRUE(mem_->Read(d.addr, chunk.data(), chunk.size()).ok());
      bytes.insert(bytes.end(), chunk.begin(), chunk.end());
    }
    return std::vector<uint8_t>(bytes.begin() + std::min(bytes.size(), sizeof(virtio_net_hdr_v1)),
                                bytes.end());
  }
  snapshot::v1::VirtioMmioState PausedState() {
    EXPECT_TRUE(transport_->Pause().ok());
    absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : snapshot::v1::VirtioMmioState{};
  }
  MacAddress ConfigMac(NetDevice* dev) {
    MacAddress mac{};
    dev->ReadConfig(0, absl::MakeSpan(mac.data(), mac.size()));
    return mac;
  }

  std::unique_ptr<ScratchNetns> ns_;
  std::optional<GuestMemory> mem_;
  std::unique_ptr<FakeDriver> rx_;
  std::unique_ptr<FakeDriver> tx_;
  NetDevice* dev_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  ScopedFd peer_;
  std::map<uint16_t, virtio::Descriptor> rx_bufs_;
};

TEST_F(NetSnapshotTest, PauseHoldsBothDirectionsUntilUnpause) {
  BringUp(0);
  for (uint16_t i = 0; i < 4; ++i) PostRx(i, 2048);
  ASSERT_TRUE(transport_->Pause().ok());
  const std::vector<uint8_t> in = TestFrame(100, 1);
  const std::vector<uint8_t> out = EthernetFrame(kGuestMac, kPeerMac, kTestEtherType, Pattern(80, 2));
  Inject(peer_.get(), in);
  SendTx(0, out);
  usleep(50000);
  EXPECT_EQ(rx_->UsedIdx(), 0) << "a paused device delivered a frame";
  EXPECT_EQ(tx_->UsedIdx(), 0) << "a paused device transmitted";
  EXPECT_FALSE(testing::RecvFrame(peer_.get(), 20ms, kTestEtherType).has_value());

  transport_->Unpause();
  ASSERT_TRUE(WaitFor([&] { return rx_->UsedIdx() == 1 && tx_->UsedIdx() == 1; }));
  EXPECT_EQ(RxFrame(0, 1), in);
  std::optional<std::vector<uint8_t>> seen = testing::RecvFrame(peer_.get(), 2s, kTestEtherType);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(*seen, out);
}

TEST_F(NetSnapshotTest, BackToBackPausesNeverHang) {
  BringUp(0);
  for (uint16_t i = 0; i < 4; ++i) PostRx(i, 2048);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(transport_->Pause().ok());
    transport_->Unpause();
  }
  const std::vector<uint8_t> in = TestFrame(100, 5);
  Inject(peer_.get(), in);
  ASSERT_TRUE(WaitFor([&] { return rx_->UsedIdx() == 1; }));
  EXPECT_EQ(RxFrame(0, 1), in);
}

TEST_F(NetSnapshotTest, HeldRxBuffersGoBackAndARestoredCloneServesOnItsOwnTap) {
  const uint64_t mrg = 1ull << VIRTIO_NET_F_MRG_RXBUF;
  BringUp(mrg);
  PostRx(0, 1526);
  // Needs two buffers: the device takes the one there is and waits for another.
  Inject(peer_.get(), TestFrame(2500, 3));
  usleep(100000);
  const snapshot::v1::VirtioMmioState state = PausedState();
  EXPECT_EQ(state.queues(NetDevice::kRxQueue).next_avail(), 0u)
      << "the rx buffer held for a pending frame was not given back";
  EXPECT_EQ(rx_->UsedIdx(), 0);
  snapshot::v1::NetState net;
  ASSERT_TRUE(net.ParseFromString(state.device_state()));
  EXPECT_EQ(net.tap_name(), "vtap0");
  EXPECT_EQ(net.mac(), std::string(kGuestMac.begin(), kGuestMac.end()));

  // A clone on its own tap with its own MAC (the old VM keeps running, paused).
  NetDevice* clone;
  std::unique_ptr<MmioTransport> t = MakeTransport({"vtap1", kCloneMac, ns_->path()}, &clone);
  ASSERT_NE(t, nullptr);
  ScopedFd peer1 = Peer("vtap1");
  ASSERT_TRUE(t->RestoreState(state).ok());
  EXPECT_EQ(ConfigMac(clone), kCloneMac);
  transport_.reset();  // the original goes away; its pending frame with it
  transport_ = std::move(t);
  PostRx(1, 1526);
  const std::vector<uint8_t> frame = TestFrame(2500, 4);
  Inject(peer1.get(), frame);
  ASSERT_TRUE(WaitFor([&] { return rx_->UsedIdx() == 2; }));
  EXPECT_EQ(rx_->UsedElem(0).id, 0u);  // the buffer given back, used first
  EXPECT_EQ(RxFrame(0, 2), frame);
}

TEST_F(NetSnapshotTest, RestoreWithoutAConfiguredMacKeepsTheGuestsAndRefusesGarbage) {
  BringUp(0);
  const snapshot::v1::VirtioMmioState state = PausedState();
  NetDevice* clone;
  std::unique_ptr<MmioTransport> t = MakeTransport({"vtap1", std::nullopt, ns_->path()}, &clone);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->RestoreState(state).ok());
  EXPECT_EQ(ConfigMac(clone), kGuestMac);
  t.reset();

  for (const char* garbage : {"\xff\xff\xff", "", "\x0a\x03\x01\x02\x03"}) {
    snapshot::v1::VirtioMmioState bad = state;
    bad.set_device_state(garbage);
    t = MakeTransport({"vtap1", std::nullopt, ns_->path()}, &clone);
    ASSERT_NE(t, nullptr);
    absl::Status s = t->RestoreState(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("not a virtio-net state"));
    EXPECT_EQ(t->status(), 0u);
    t.reset();
  }
  snapshot::v1::VirtioMmioState bad = state;
  bad.set_device_type(VIRTIO_ID_VSOCK);
  t = MakeTransport({"vtap1", std::nullopt, ns_->path()}, &clone);
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->RestoreState(bad).ok());
  bad = state;
  bad.mutable_queues(1)->set_desc_table(3 * FakeDriver::kMemSize);
  t.reset();
  t = MakeTransport({"vtap1", std::nullopt, ns_->path()}, &clone);
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(std::string(t->RestoreState(bad).message()), HasSubstr("guest RAM"));
}

}  // namespace
}  // namespace vessel::net
