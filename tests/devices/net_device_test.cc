// virtio-net through the real device code: fake drivers on the rx and tx queues, a real tap in a
// scratch network namespace, and an AF_PACKET endpoint on that tap (frames it sends go to the
// guest, frames the guest sends arrive there). Skipped where the host has no /dev/net/tun or the
// test may not create namespaces and taps.
#include "devices/net/net_device.h"

#include <linux/ethtool.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "devices/net/tap.h"
#include "devices/net/virtio_net_uapi.h"
#include "devices/virtio/virtio_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/net_test_env.h"

namespace vessel::net {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAreArray;
using testing::EthernetFrame;
using testing::Ipv4Addr;
using testing::Ipv4ChecksumsValid;
using testing::Ipv4Frame;
using testing::kTestEtherType;
using testing::Pattern;
using testing::ScratchNetns;
using testing::WaitFor;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;

constexpr char kTap[] = "vtap0";
constexpr MacAddress kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr MacAddress kPeerMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint64_t kMemBytes = 2 * FakeDriver::kMemSize;
constexpr uint32_t kMergeableBuf = 1526;  // what Linux posts for a 1500-byte MTU

constexpr uint64_t F(unsigned bit) { return 1ull << bit; }
constexpr uint64_t kVersion1 = F(VIRTIO_F_VERSION_1);
constexpr uint64_t kMrg = F(VIRTIO_NET_F_MRG_RXBUF);

class CountingInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override { ++used; }
  void SignalConfigChange() override { ++config; }
  void SignalNeedsReset() override { ++needs_reset; }
  std::atomic<int> used{0}, config{0}, needs_reset{0};
};

std::vector<uint8_t> WithHeader(const virtio_net_hdr_v1& hdr, const std::vector<uint8_t>& frame) {
  std::vector<uint8_t> out(sizeof(hdr) + frame.size());
  std::memcpy(out.data(), &hdr, sizeof(hdr));
  std::memcpy(out.data() + sizeof(hdr), frame.data(), frame.size());
  return out;
}

std::vector<uint8_t> TestFrame(size_t payload, uint8_t seed) {
  return EthernetFrame(kPeerMac, kGuestMac, kTestEtherType, Pattern(payload, seed));
}

class NetDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ScratchNetns>> ns = ScratchNetns::Create();
    if (!ns.ok()) GTEST_SKIP() << "cannot make a scratch network namespace: " << ns.status();
    ns_ = std::move(*ns);
    absl::StatusOr<std::unique_ptr<NetDevice>> dev =
        NetDevice::Create({kTap, kGuestMac, ns_->path()});
    if (!dev.ok() && (dev.status().code() == absl::StatusCode::kPermissionDenied ||
                      dev.status().code() == absl::StatusCode::kFailedPrecondition)) {
      GTEST_SKIP() << "cannot open a tap: " << dev.status();
    }
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    ASSERT_TRUE(ns_->SetUp(kTap).ok());
    ASSERT_TRUE(ns_->SetMtu(kTap, 9000).ok());  // room for jumbo frames towards the guest
    absl::StatusOr<ScopedFd> peer = ns_->OpenPacketSocket(kTap);
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = std::move(*peer);
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, kMemBytes}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    mem_.emplace(std::move(*mem));
  }
  void TearDown() override { dev_.reset(); }

  // Fresh rx (at gpa 0) and tx (at 1 MiB) queues, then DRIVER_OK with `features`.
  void Activate(uint64_t features, uint16_t rx_size = 256) {
    // Rings and buffers as a freshly booted driver would have them (after any Reset()).
    ASSERT_TRUE(mem_->Fill(0, 0, kMemBytes).ok());
    rx_ = std::make_unique<FakeDriver>(*mem_, 0, rx_size);
    tx_ = std::make_unique<FakeDriver>(*mem_, FakeDriver::kMemSize, 256);
    rx_bufs_.clear();
    rx_used_seen_ = 0;
    const bool event_idx = features & F(VIRTIO_RING_F_EVENT_IDX);
    rx_->queue().SetEventIdx(event_idx);
    tx_->queue().SetEventIdx(event_idx);
    absl::Status s =
        dev_->Activate({&*mem_, {&rx_->queue(), &tx_->queue()}, kVersion1 | features, &irq_});
    ASSERT_TRUE(s.ok()) << s;
  }

  // Lays `packet` (vnet header + frame) out as a tx chain at descriptor `head`, in buffers of
  // `segs` bytes (the last takes the rest; none: one buffer), publishes it and kicks.
  void SendTx(uint16_t head, const std::vector<uint8_t>& packet, std::vector<uint32_t> segs = {},
              bool indirect = false) {
    std::vector<Buf> bufs;
    uint64_t left = packet.size();
    for (uint32_t s : segs) {
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(s, left));
      bufs.push_back({n, false});
      left -= n;
    }
    if (left > 0 || bufs.empty()) bufs.push_back({static_cast<uint32_t>(left), false});
    std::vector<virtio::Descriptor> d =
        indirect ? tx_->WriteIndirectChain(head, bufs) : tx_->WriteChain(head, bufs);
    uint64_t off = 0;
    for (const virtio::Descriptor& desc : d) {
      ASSERT_TRUE(mem_->Write(desc.addr, packet.data() + off, desc.len).ok());
      off += desc.len;
    }
    tx_->Publish(head);
    dev_->NotifyQueue(NetDevice::kTxQueue);
  }
  bool WaitTxUsed(uint16_t n) {
    return WaitFor([&] { return tx_->UsedIdx() == n; });
  }

  // Posts `count` rx chains of one `len`-byte writable buffer at heads first, first+1, ... and
  // kicks.
  void PostRx(uint16_t first, int count, uint32_t len) {
    for (int i = 0; i < count; ++i) {
      const uint16_t head = static_cast<uint16_t>(first + i);
      rx_bufs_[head] = rx_->WriteChain(head, {{len, true}})[0];
      rx_->Publish(head);
    }
    dev_->NotifyQueue(NetDevice::kRxQueue);
  }
  // Sends `frame` from the peer socket to the tap, i.e. towards the guest.
  void Inject(const std::vector<uint8_t>& frame) {
    ASSERT_EQ(::send(peer_.get(), frame.data(), frame.size(), 0),
              static_cast<ssize_t>(frame.size()))
        << std::strerror(errno);
  }

  struct RxPacket {
    virtio_net_hdr_v1 hdr;
    std::vector<uint8_t> frame;
    std::vector<uint32_t> lens;  // used length of each buffer
  };
  // The next frame the device put in the rx used ring (following num_buffers), waiting for it.
  std::optional<RxPacket> NextRx() {
    if (!WaitFor([&] { return rx_->UsedIdx() != rx_used_seen_; })) return std::nullopt;
    RxPacket p;
    std::vector<uint8_t> bytes;
    uint16_t buffers = 1;
    for (uint16_t i = 0; i < buffers; ++i) {
      if (rx_->UsedIdx() == rx_used_seen_) {
        ADD_FAILURE() << "num_buffers " << buffers << " but only " << i
                      << " used entries were published";
        return std::nullopt;
      }
      const vring_used_elem e = rx_->UsedElem(static_cast<uint16_t>(rx_used_seen_++ % rx_->size()));
      const virtio::Descriptor& d = rx_bufs_.at(static_cast<uint16_t>(e.id));
      EXPECT_LE(e.len, d.len);
      std::vector<uint8_t> chunk(e.len);
      EXPECT_TRUE(mem_->Read(d.addr, chunk.data(), chunk.size()).ok());
      bytes.insert(bytes.end(), chunk.begin(), chunk.end());
      p.lens.push_back(e.len);
      if (i == 0) {
        if (bytes.size() < sizeof(p.hdr)) {
          ADD_FAILURE() << "first rx buffer holds " << bytes.size() << " bytes, no vnet header";
          return std::nullopt;
        }
        std::memcpy(&p.hdr, bytes.data(), sizeof(p.hdr));
        buffers = p.hdr.num_buffers;
      }
    }
    p.frame.assign(bytes.begin() + sizeof(p.hdr), bytes.end());
    return p;
  }

  std::optional<std::vector<uint8_t>> Capture(std::chrono::milliseconds timeout = 2s) {
    return testing::RecvFrame(peer_.get(), timeout, kTestEtherType);
  }

  std::unique_ptr<ScratchNetns> ns_;
  std::optional<GuestMemory> mem_;
  std::unique_ptr<FakeDriver> rx_;
  std::unique_ptr<FakeDriver> tx_;
  CountingInterrupt irq_;
  std::unique_ptr<NetDevice> dev_;
  ScopedFd peer_;
  std::map<uint16_t, virtio::Descriptor> rx_bufs_;
  uint16_t rx_used_seen_ = 0;
};

TEST_F(NetDeviceTest, IdentityFeaturesAndConfigSpace) {
  EXPECT_EQ(dev_->device_type(), 1u);  // VIRTIO_ID_NET
  EXPECT_THAT(dev_->queue_max_sizes(), ElementsAreArray({256, 256}));
  EXPECT_EQ(dev_->tap_name(), kTap);
  const uint64_t f = dev_->device_features();
  for (unsigned bit : {VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
                       VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
                       VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
                       VIRTIO_NET_F_STATUS, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX}) {
    EXPECT_TRUE(f & F(bit)) << "feature bit " << bit;
  }
  for (unsigned bit : {VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ, VIRTIO_NET_F_GUEST_UFO,
                       VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_ECN}) {
    EXPECT_FALSE(f & F(bit)) << "feature bit " << bit;
  }
  virtio_net_config cfg{};
  dev_->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&cfg), sizeof(cfg)));
  EXPECT_THAT(cfg.mac, ElementsAreArray(kGuestMac));
  EXPECT_EQ(cfg.status, VIRTIO_NET_S_LINK_UP);
  uint8_t status_bytes[4] = {0xff, 0xff, 0xff, 0xff};
  dev_->ReadConfig(offsetof(virtio_net_config, status), absl::MakeSpan(status_bytes));
  EXPECT_THAT(status_bytes, ElementsAreArray({VIRTIO_NET_S_LINK_UP, 0, 0, 0}));
  uint8_t beyond[2] = {0xff, 0xff};
  dev_->ReadConfig(4096, absl::MakeSpan(beyond));
  EXPECT_THAT(beyond, ElementsAreArray({0, 0}));
  // Writes are ignored.
  const uint8_t junk[6] = {1, 2, 3, 4, 5, 6};
  dev_->WriteConfig(0, junk);
  dev_->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&cfg), sizeof(cfg)));
  EXPECT_THAT(cfg.mac, ElementsAreArray(kGuestMac));
}

TEST_F(NetDeviceTest, RandomMacWhenNoneIsGiven) {
  absl::StatusOr<std::unique_ptr<NetDevice>> other =
      NetDevice::Create({"vtap1", std::nullopt, ns_->path()});
  ASSERT_TRUE(other.ok()) << other.status();
  const MacAddress mac = (*other)->mac();
  EXPECT_EQ(mac[0] & 0x03, 0x02) << FormatMac(mac);  // locally administered unicast
}

TEST_F(NetDeviceTest, ActivateRefusesQueuesThatAreNotReady) {
  FakeDriver rx(*mem_, 0, 16), tx(*mem_, FakeDriver::kMemSize, 16);
  tx.queue().SetReady(false);
  absl::Status s = dev_->Activate({&*mem_, {&rx.queue(), &tx.queue()}, kVersion1, &irq_});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(dev_->Activate({&*mem_, {&rx.queue()}, kVersion1, &irq_}).ok());
}

class NetDeviceTxTest : public NetDeviceTest {
 protected:
  // Guest → tap with the chain in the given layout: the captured frame is the one sent.
  void RoundTrip(std::vector<uint32_t> segs, bool indirect, size_t payload = 1000) {
    Activate(0);
    const std::vector<uint8_t> frame = TestFrame(payload, 3);
    SendTx(0, WithHeader(virtio_net_hdr_v1{}, frame), segs, indirect);
    ASSERT_TRUE(WaitTxUsed(1));
    EXPECT_EQ(tx_->UsedElem(0).id, 0u);
    EXPECT_EQ(tx_->UsedElem(0).len, 0u);
    std::optional<std::vector<uint8_t>> got = Capture();
    ASSERT_TRUE(got.has_value()) << "nothing arrived on the tap";
    EXPECT_EQ(*got, frame);
    const NetCounters c = dev_->counters();
    EXPECT_EQ(c.tx_packets, 1u);
    EXPECT_EQ(c.tx_bytes, frame.size());
    EXPECT_GE(irq_.used.load(), 1);
  }
};

TEST_F(NetDeviceTxTest, FrameInOneDescriptor) { RoundTrip({}, false); }
TEST_F(NetDeviceTxTest, HeaderSplitFromData) { RoundTrip({12}, false); }
TEST_F(NetDeviceTxTest, HeaderItselfSplitAcrossDescriptors) { RoundTrip({5, 4, 20}, false); }
TEST_F(NetDeviceTxTest, EightSegments) { RoundTrip({12, 100, 1, 200, 7, 300, 50}, false); }
TEST_F(NetDeviceTxTest, IndirectChain) { RoundTrip({12, 500, 100}, true); }
TEST_F(NetDeviceTxTest, FullSizeFrame) { RoundTrip({12}, false, 1500); }

TEST_F(NetDeviceTxTest, ManyFramesInOneKick) {
  Activate(0);
  std::vector<std::vector<uint8_t>> frames;
  for (uint16_t i = 0; i < 20; ++i) {
    frames.push_back(TestFrame(60 + i * 50, static_cast<uint8_t>(i)));
    const std::vector<uint8_t> p = WithHeader(virtio_net_hdr_v1{}, frames.back());
    std::vector<virtio::Descriptor> d = tx_->WriteChain(
        static_cast<uint16_t>(i * 2), {{12, false}, {static_cast<uint32_t>(p.size() - 12), false}});
    ASSERT_TRUE(mem_->Write(d[0].addr, p.data(), 12).ok());
    ASSERT_TRUE(mem_->Write(d[1].addr, p.data() + 12, p.size() - 12).ok());
    tx_->Publish(static_cast<uint16_t>(i * 2));
  }
  dev_->NotifyQueue(NetDevice::kTxQueue);
  ASSERT_TRUE(WaitTxUsed(20));
  for (const std::vector<uint8_t>& f : frames) {
    std::optional<std::vector<uint8_t>> got = Capture();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, f);
  }
  EXPECT_EQ(dev_->counters().tx_packets, 20u);
}

TEST_F(NetDeviceTxTest, MalformedChainsAreCountedReturnedAndTheDeviceStaysUp) {
  Activate(0);  // no CSUM, no HOST_TSO
  const std::vector<uint8_t> good = WithHeader(virtio_net_hdr_v1{}, TestFrame(100, 9));
  // A device-writable buffer in a tx chain.
  {
    std::vector<virtio::Descriptor> d =
        tx_->WriteChain(0, {{static_cast<uint32_t>(good.size()), false}, {64, true}});
    ASSERT_TRUE(mem_->Write(d[0].addr, good.data(), good.size()).ok());
    tx_->Publish(0);
  }
  // Shorter than the vnet header; header but no Ethernet header.
  tx_->WriteChain(4, {{10, false}});
  tx_->Publish(4);
  tx_->WriteChain(5, {{20, false}});
  tx_->Publish(5);
  // More than 12 + 65550 bytes.
  tx_->WriteChain(6, {{40000, false}, {40000, false}});
  tx_->Publish(6);
  // A buffer outside guest RAM.
  tx_->WriteDesc(8, kMemBytes - 16, 64, 0);
  tx_->Publish(8);
  // Offloads that were not negotiated: partial checksum, TSO.
  virtio_net_hdr_v1 csum{};
  csum.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  SendTx(10, WithHeader(csum, TestFrame(100, 1)));
  virtio_net_hdr_v1 tso{};
  tso.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  tso.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  tso.gso_size = 1448;
  SendTx(12, WithHeader(tso, TestFrame(3000, 1)));
  // And then a good frame.
  SendTx(14, good);
  ASSERT_TRUE(WaitTxUsed(8));
  for (uint16_t i = 0; i < 8; ++i) EXPECT_EQ(tx_->UsedElem(i).len, 0u);
  std::optional<std::vector<uint8_t>> got = Capture();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, std::vector<uint8_t>(good.begin() + 12, good.end()));
  EXPECT_FALSE(Capture(100ms).has_value()) << "a malformed chain reached the tap";
  const NetCounters c = dev_->counters();
  EXPECT_EQ(c.tx_dropped_malformed, 5u);
  EXPECT_EQ(c.tx_dropped_offload, 2u);
  EXPECT_EQ(c.tx_packets, 1u);
  EXPECT_EQ(irq_.needs_reset.load(), 0);
}

TEST_F(NetDeviceTxTest, CorruptRingSetsNeedsResetAndResetRecovers) {
  Activate(0);
  tx_->SetAvailIdx(1000);  // far more than a queue size ahead
  dev_->NotifyQueue(NetDevice::kTxQueue);
  ASSERT_TRUE(WaitFor([&] { return irq_.needs_reset.load() == 1; }));
  dev_->Reset();
  RoundTrip({}, false);
}

// Guest frames routed by the namespace's IPv4 stack from our tap to a second tap ("vcap0", read
// by the test, no offloads): the kernel completes partial checksums and segments GSO frames on the
// way out, as it does for a VM's traffic leaving through a host NIC without offloads.
class NetDeviceRoutedTest : public NetDeviceTest {
 protected:
  static constexpr Ipv4Addr kGuestIp = {{10, 77, 1, 2}};
  static constexpr Ipv4Addr kRemoteIp = {{10, 77, 2, 2}};

  void SetUp() override {
    NetDeviceTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(ns_->AddIpv4(kTap, "10.77.1.1", "255.255.255.0").ok());
    absl::StatusOr<Tap> cap = Tap::Open("vcap0", ns_->path());
    ASSERT_TRUE(cap.ok()) << cap.status();
    cap_.emplace(std::move(*cap));
    ASSERT_TRUE(ns_->SetUp("vcap0").ok());
    ASSERT_TRUE(ns_->AddIpv4("vcap0", "10.77.2.1", "255.255.255.0").ok());
    ASSERT_TRUE(ns_->AddNeighbor("vcap0", "10.77.2.2", {0x02, 0, 0, 0, 0x02, 0x02}).ok());
    absl::Status fwd = ns_->WriteSysctl("net/ipv4/ip_forward", "1");
    if (!fwd.ok()) GTEST_SKIP() << "cannot enable forwarding in the scratch namespace: " << fwd;
    absl::StatusOr<MacAddress> tap_mac = ns_->HwAddr(kTap);
    ASSERT_TRUE(tap_mac.ok());
    tap_mac_ = *tap_mac;
  }

  // The next IPv4 frame read from vcap0 (its vnet header stripped; the header must be plain).
  std::optional<std::vector<uint8_t>> Routed() {
    for (;;) {
      std::optional<std::vector<uint8_t>> f = testing::ReadTapFrame(cap_->fd(), 2s);
      if (!f.has_value()) return std::nullopt;
      virtio_net_hdr_v1 hdr;
      std::memcpy(&hdr, f->data(), sizeof(hdr));
      EXPECT_EQ(hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
      EXPECT_EQ(hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
      std::vector<uint8_t> frame(f->begin() + 12, f->end());
      if (frame.size() >= 14 && frame[12] == 0x08 && frame[13] == 0x00) return frame;
    }
  }

  std::optional<Tap> cap_;
  MacAddress tap_mac_{};
};

TEST_F(NetDeviceRoutedTest, PartialUdpChecksumIsCompletedByTheKernel) {
  Activate(F(VIRTIO_NET_F_CSUM));
  const std::vector<uint8_t> payload = Pattern(333, 5);
  const std::vector<uint8_t> udp = testing::UdpPartial(kGuestIp, kRemoteIp, 4000, 5000, payload);
  const std::vector<uint8_t> frame =
      Ipv4Frame(tap_mac_, kGuestMac, kGuestIp, kRemoteIp, IPPROTO_UDP, udp);
  ASSERT_FALSE(Ipv4ChecksumsValid(frame)) << "the partial checksum should not already be valid";
  virtio_net_hdr_v1 hdr{};
  hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  hdr.csum_start = 14 + 20;
  hdr.csum_offset = 6;
  SendTx(0, WithHeader(hdr, frame), {12, 40});
  ASSERT_TRUE(WaitTxUsed(1));
  std::optional<std::vector<uint8_t>> got = Routed();
  ASSERT_TRUE(got.has_value()) << "the frame was not routed to vcap0; counters: tx_packets="
                               << dev_->counters().tx_packets;
  EXPECT_TRUE(Ipv4ChecksumsValid(*got));
  ASSERT_EQ(got->size(), frame.size());
  EXPECT_TRUE(
      std::equal(payload.begin(), payload.end(), got->end() - static_cast<long>(payload.size())));
}

TEST_F(NetDeviceRoutedTest, Tso4FrameArrivesIntact) {
  Activate(F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4));
  const std::vector<uint8_t> payload = Pattern(20000, 11);
  const uint32_t seq = 1000000;
  const std::vector<uint8_t> tcp =
      testing::TcpPartial(kGuestIp, kRemoteIp, 4000, 5000, seq, payload);
  std::vector<uint8_t> frame =
      Ipv4Frame(tap_mac_, kGuestMac, kGuestIp, kRemoteIp, IPPROTO_TCP, tcp);
  virtio_net_hdr_v1 hdr{};
  hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  hdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  hdr.gso_size = 1448;
  hdr.hdr_len = 14 + 20 + 20;
  hdr.csum_start = 14 + 20;
  hdr.csum_offset = 16;
  SendTx(0, WithHeader(hdr, frame), {12, 54, 4096, 4096, 4096, 4096});
  ASSERT_TRUE(WaitTxUsed(1));
  std::vector<uint8_t> received(payload.size());
  std::vector<bool> have(payload.size());
  size_t total = 0;
  int segments = 0;
  while (total < payload.size()) {
    std::optional<std::vector<uint8_t>> f = Routed();
    ASSERT_TRUE(f.has_value()) << "only " << total << " of " << payload.size()
                               << " bytes arrived in " << segments
                               << " frames; counters: tx_packets=" << dev_->counters().tx_packets
                               << " tap errors=" << dev_->counters().tx_dropped_tap_error;
    ++segments;
    ASSERT_TRUE(Ipv4ChecksumsValid(*f));
    ASSERT_GE(f->size(), 54u);
    ASSERT_EQ((*f)[23], IPPROTO_TCP);
    const uint8_t* th = f->data() + 34;
    const uint32_t s = static_cast<uint32_t>(th[4] << 24 | th[5] << 16 | th[6] << 8 | th[7]);
    const size_t off = s - seq;
    const size_t n = f->size() - 54;
    ASSERT_LE(off + n, payload.size());
    std::memcpy(received.data() + off, f->data() + 54, n);
    for (size_t i = off; i < off + n; ++i) {
      if (!have[i]) ++total;
      have[i] = true;
    }
  }
  EXPECT_EQ(received, payload);
  EXPECT_GE(segments, 1);
  EXPECT_EQ(dev_->counters().tx_packets, 1u);
  EXPECT_EQ(dev_->counters().tx_bytes, frame.size());
}

class NetDeviceRxTest : public NetDeviceTest {};

TEST_F(NetDeviceRxTest, MergeableBuffersSmallAndJumboFrames) {
  Activate(kMrg);
  PostRx(0, 64, kMergeableBuf);
  const std::vector<uint8_t> small = TestFrame(46, 1);
  Inject(small);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.num_buffers, 1);
  EXPECT_EQ(p->hdr.flags, 0);
  EXPECT_EQ(p->hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(p->frame, small);
  EXPECT_THAT(p->lens, ElementsAreArray({12u + small.size()}));

  const std::vector<uint8_t> jumbo = TestFrame(9000, 2);  // 9014-byte frame, 9026 with the header
  Inject(jumbo);
  p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.num_buffers, 6);
  EXPECT_EQ(p->frame, jumbo);
  EXPECT_THAT(p->lens, ElementsAreArray({kMergeableBuf, kMergeableBuf, kMergeableBuf, kMergeableBuf,
                                         kMergeableBuf, 9026u - 5 * kMergeableBuf}));
  EXPECT_EQ(rx_->UsedIdx(), 7);
  const NetCounters c = dev_->counters();
  EXPECT_EQ(c.rx_packets, 2u);
  EXPECT_EQ(c.rx_bytes, small.size() + jumbo.size());
  EXPECT_EQ(c.rx_dropped_too_big, 0u);
  EXPECT_GE(irq_.used.load(), 2);
}

TEST_F(NetDeviceRxTest, OneChainPerFrameWithoutMergeableBuffers) {
  Activate(0);
  // A chain of two writable buffers (like a driver's "big packets" mode) holds a whole frame.
  rx_bufs_[0] = rx_->WriteChain(0, {{3000, true}, {3000, true}})[0];
  rx_->Publish(0);
  dev_->NotifyQueue(NetDevice::kRxQueue);
  const std::vector<uint8_t> frame = TestFrame(1400, 4);
  Inject(frame);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.num_buffers, 1);  // always 1 without MRG_RXBUF
  EXPECT_EQ(p->frame, frame);
}

TEST_F(NetDeviceRxTest, FrameWaitsForBuffersAndIsDeliveredAfterTheKick) {
  Activate(kMrg);
  const std::vector<uint8_t> first = TestFrame(1000, 1);
  const std::vector<uint8_t> second = TestFrame(2000, 2);
  Inject(first);
  Inject(second);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(rx_->UsedIdx(), 0);
  EXPECT_EQ(dev_->counters().rx_packets, 0u);
  EXPECT_EQ(dev_->counters().rx_dropped_too_big, 0u);
  PostRx(0, 8, kMergeableBuf);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, first);
  p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.num_buffers, 2);
  EXPECT_EQ(p->frame, second);
  EXPECT_EQ(dev_->counters().rx_packets, 2u);
}

TEST_F(NetDeviceRxTest, FrameNeedingMoreBuffersWaitsForThemWithEventIdx) {
  Activate(kMrg | F(VIRTIO_RING_F_EVENT_IDX));
  PostRx(0, 1, kMergeableBuf);  // a 4000-byte frame needs 3
  const std::vector<uint8_t> frame = TestFrame(4000, 3);
  Inject(frame);
  // The device took the one buffer and asks for a kick on the next.
  ASSERT_TRUE(WaitFor([&] { return rx_->AvailEvent() == 1; }));
  EXPECT_EQ(rx_->UsedIdx(), 0);
  PostRx(1, 2, kMergeableBuf);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->hdr.num_buffers, 3);
  EXPECT_EQ(p->frame, frame);
}

TEST_F(NetDeviceRxTest, OversizeFrameWithoutMergeableBuffersIsDroppedAndCounted) {
  Activate(0);
  PostRx(0, 4, kMergeableBuf);
  Inject(TestFrame(9000, 1));
  ASSERT_TRUE(WaitFor([&] { return dev_->counters().rx_dropped_too_big == 1; }));
  const std::vector<uint8_t> small = TestFrame(500, 2);
  Inject(small);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, small);
  EXPECT_EQ(rx_->UsedIdx(), 1);  // the jumbo frame used no buffer
  EXPECT_EQ(dev_->counters().rx_packets, 1u);
}

TEST_F(NetDeviceRxTest, FrameLargerThanTheWholeQueueIsDroppedAndCounted) {
  Activate(kMrg, /*rx_size=*/4);
  PostRx(0, 4, kMergeableBuf);  // 6104 bytes in all: never enough for 9026
  Inject(TestFrame(9000, 1));
  ASSERT_TRUE(WaitFor([&] { return dev_->counters().rx_dropped_too_big == 1; }));
  EXPECT_EQ(rx_->UsedIdx(), 0);
  const std::vector<uint8_t> small = TestFrame(100, 2);
  Inject(small);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, small);
  EXPECT_EQ(p->hdr.num_buffers, 1);
}

TEST_F(NetDeviceRxTest, UnusableChainsAreReturnedEmpty) {
  Activate(kMrg);
  rx_bufs_[0] = rx_->WriteChain(0, {{8, true}})[0];  // shorter than the vnet header
  rx_->Publish(0);
  rx_bufs_[1] = rx_->WriteChain(1, {{64, false}})[0];  // device-readable only
  rx_->Publish(1);
  PostRx(2, 2, kMergeableBuf);
  const std::vector<uint8_t> frame = TestFrame(200, 7);
  Inject(frame);
  ASSERT_TRUE(WaitFor([&] { return rx_->UsedIdx() == 3; }));
  EXPECT_EQ(rx_->UsedElem(0).id, 0u);
  EXPECT_EQ(rx_->UsedElem(0).len, 0u);
  EXPECT_EQ(rx_->UsedElem(1).id, 1u);
  EXPECT_EQ(rx_->UsedElem(1).len, 0u);
  rx_used_seen_ = 2;
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, frame);
  EXPECT_EQ(dev_->counters().rx_buffers_malformed, 2u);
}

TEST_F(NetDeviceTest, ActivateSetsTapOffloadsAndResetClearsThem) {
  absl::StatusOr<uint32_t> csum = ns_->Ethtool(kTap, ETHTOOL_GTXCSUM);
  if (!csum.ok()) GTEST_SKIP() << "no ethtool ioctl: " << csum.status();
  EXPECT_EQ(*csum, 0u);
  Activate(F(VIRTIO_NET_F_GUEST_CSUM) | F(VIRTIO_NET_F_GUEST_TSO4) | F(VIRTIO_NET_F_GUEST_TSO6));
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTXCSUM).value_or(0), 1u);
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTSO).value_or(0), 1u);
  dev_->Reset();
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTXCSUM).value_or(1), 0u);
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTSO).value_or(1), 0u);
  Activate(F(VIRTIO_NET_F_GUEST_CSUM));
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTXCSUM).value_or(0), 1u);
  EXPECT_EQ(ns_->Ethtool(kTap, ETHTOOL_GTSO).value_or(1), 0u);
}

TEST_F(NetDeviceTest, ResetDropsThePendingFrameAndKeepsTheTap) {
  Activate(kMrg | F(VIRTIO_RING_F_EVENT_IDX));
  PostRx(0, 1, 100);
  Inject(TestFrame(1000, 1));
  ASSERT_TRUE(WaitFor([&] { return rx_->AvailEvent() == 1; }));  // the frame waits for buffers
  dev_->Reset();
  EXPECT_EQ(dev_->counters().rx_dropped_reset, 1u);
  Activate(kMrg);
  PostRx(0, 8, kMergeableBuf);
  const std::vector<uint8_t> next = TestFrame(300, 2);
  Inject(next);
  std::optional<RxPacket> p = NextRx();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->frame, next);  // not the frame from before the reset
  // tx works on the same tap too.
  const std::vector<uint8_t> out = TestFrame(64, 3);
  SendTx(0, WithHeader(virtio_net_hdr_v1{}, out));
  std::optional<std::vector<uint8_t>> got = Capture();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, out);
}

TEST_F(NetDeviceTest, CountersAddUp) {
  Activate(kMrg);
  PostRx(0, 16, kMergeableBuf);
  uint64_t tx_bytes = 0, rx_bytes = 0;
  for (uint16_t i = 0; i < 3; ++i) {
    const std::vector<uint8_t> f = TestFrame(100 + i, static_cast<uint8_t>(i));
    tx_bytes += f.size();
    SendTx(static_cast<uint16_t>(i * 4), WithHeader(virtio_net_hdr_v1{}, f));
  }
  for (uint16_t i = 0; i < 2; ++i) {
    const std::vector<uint8_t> f = TestFrame(2000 + i, static_cast<uint8_t>(i));
    rx_bytes += f.size();
    Inject(f);
    ASSERT_TRUE(NextRx().has_value());
  }
  ASSERT_TRUE(WaitTxUsed(3));
  const NetCounters c = dev_->counters();
  EXPECT_EQ(c.tx_packets, 3u);
  EXPECT_EQ(c.tx_bytes, tx_bytes);
  EXPECT_EQ(c.rx_packets, 2u);
  EXPECT_EQ(c.rx_bytes, rx_bytes);
  EXPECT_EQ(c.tx_dropped_malformed + c.tx_dropped_offload + c.tx_dropped_tap_error, 0u);
  EXPECT_EQ(c.rx_dropped_too_big + c.rx_dropped_offload + c.rx_buffers_malformed + c.rx_tap_errors,
            0u);
  EXPECT_GE(c.interrupts, 1u);
  EXPECT_EQ(c.interrupts, static_cast<uint64_t>(irq_.used.load()));
}

}  // namespace
}  // namespace vessel::net
