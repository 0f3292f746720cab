// virtio-net device-side cost per frame, over a real tap in a scratch network namespace (root, or
// CAP_SYS_ADMIN + CAP_NET_ADMIN; skipped otherwise), driven by the fake driver.
//   BM_NetTx/N: a batch of 32 guest frames of N bytes (one vnet-header descriptor + one data
//     descriptor each) → NetTx::Process: chain walk, gather, header check, write(2) to the tap
//     (the kernel's ingress of the frame is inside the timing: it is the tap write), used ring.
//   BM_NetTxTso: one 64 KiB TCP/IPv4 TSO frame (HOST_TSO4) per iteration.
//   BM_NetRx/N: a batch of 32 frames of N bytes sent to the tap from an AF_PACKET socket (outside
//     the timing), then NetRx::Process: read(2) from the tap, placement into 1526-byte mergeable
//     buffers (N = 9014: 6 buffers a frame), used ring.
//   BM_NetDeviceTx / BM_NetDeviceRx: the same 1514-byte frames through NetDevice and its I/O thread
//     (kick → eventfd → epoll → pass), 64 frames per kick, including wake-ups.
// These two bypass the I/O thread: the benchmark thread calls NetTx / NetRx the way
// NetDevice::Pump does, so they are CPU cost per frame, not latency. Labels name the platform.
#include <sys/socket.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "devices/net/net_device.h"
#include "devices/net/rx.h"
#include "devices/net/tap.h"
#include "devices/net/tx.h"
#include "devices/net/virtio_net_uapi.h"
#include "devices/virtio/virtio_ring.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/net_test_env.h"
#include "vmm/kvm/platform.h"

namespace vessel::net {
namespace {

using testing::ScratchNetns;
using virtio::testing::FakeDriver;

constexpr char kTap[] = "vbench0";
constexpr MacAddress kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr MacAddress kPeerMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
constexpr uint32_t kMergeableBuf = 1526;
constexpr int kBatch = 32;
constexpr uint64_t F(unsigned bit) { return 1ull << bit; }
constexpr uint64_t kFeatures = F(VIRTIO_F_VERSION_1) | F(VIRTIO_NET_F_MRG_RXBUF) |
                               F(VIRTIO_NET_F_CSUM) | F(VIRTIO_NET_F_HOST_TSO4);

class NullInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override {}
  void SignalConfigChange() override {}
  void SignalNeedsReset() override {}
};

// A scratch namespace, guest memory with rx (gpa 0) and tx (1 MiB) queues, and an AF_PACKET
// socket on the tap once one exists.
class Harness {
 public:
  bool Init(benchmark::State& state) {
    state.SetLabel(DetectPlatform().Name());
    absl::StatusOr<std::unique_ptr<ScratchNetns>> ns = ScratchNetns::Create();
    if (!ns.ok()) return Skip(state, ns.status());
    ns_ = std::move(*ns);
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 2 * FakeDriver::kMemSize}});
    if (!mem.ok()) return Skip(state, mem.status());
    memory_ = std::make_unique<GuestMemory>(std::move(*mem));
    rx_ = std::make_unique<FakeDriver>(*memory_, 0, 256);
    tx_ = std::make_unique<FakeDriver>(*memory_, FakeDriver::kMemSize, 256);
    return true;
  }
  // The tap exists (opened by a Tap or a NetDevice): bring it up, make room for jumbo frames, open
  // the peer socket.
  bool TapReady(benchmark::State& state) {
    absl::Status s = ns_->SetUp(kTap);
    if (s.ok()) s = ns_->SetMtu(kTap, 9000);
    if (!s.ok()) return Skip(state, s);
    absl::StatusOr<ScopedFd> peer = ns_->OpenPacketSocket(kTap);
    if (!peer.ok()) return Skip(state, peer.status());
    peer_ = std::move(*peer);
    return true;
  }
  static bool Skip(benchmark::State& state, const absl::Status& s) {
    state.SkipWithError(std::string(s.message()).c_str());
    return false;
  }

  // Tx chains at heads 0, 2, 4, ...: a 12-byte vnet header descriptor + the frame.
  void WriteTxChains(int count, const std::vector<uint8_t>& frame, const virtio_net_hdr_v1& hdr) {
    for (int i = 0; i < count; ++i) {
      auto d = tx_->WriteChain(static_cast<uint16_t>(2 * i),
                               {{12, false}, {static_cast<uint32_t>(frame.size()), false}});
      memory_->WriteObj(d[0].addr, hdr).IgnoreError();
      memory_->Write(d[1].addr, frame.data(), frame.size()).IgnoreError();
    }
  }
  void PublishTx(int count) {
    for (int i = 0; i < count; ++i) tx_->Publish(static_cast<uint16_t>(2 * i));
  }
  // Rx chains at heads 0..count-1, one 1526-byte buffer each.
  void WriteRxChains(int count) {
    for (int i = 0; i < count; ++i)
      rx_->WriteChain(static_cast<uint16_t>(i), {{kMergeableBuf, true}});
  }
  void PublishRx(int count) {
    for (int i = 0; i < count; ++i) rx_->Publish(static_cast<uint16_t>(i));
  }
  bool Inject(const std::vector<uint8_t>& frame) {
    return ::send(peer_.get(), frame.data(), frame.size(), 0) == static_cast<ssize_t>(frame.size());
  }

  std::unique_ptr<ScratchNetns> ns_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<FakeDriver> rx_;
  std::unique_ptr<FakeDriver> tx_;
  ScopedFd peer_;
  NetStats stats_;
  RateLimiter log_;
  NullInterrupt irq_;
};

std::vector<uint8_t> Frame(size_t bytes) {
  return testing::EthernetFrame(kPeerMac, kGuestMac, testing::kTestEtherType,
                                testing::Pattern(bytes - 14, 1));
}

// Spins (yielding) until `pred` holds; false after 5 s.
template <typename Pred>
bool WaitFor(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

int BuffersPerFrame(size_t frame_bytes) {
  return static_cast<int>((frame_bytes + 12 + kMergeableBuf - 1) / kMergeableBuf);
}

void BM_NetTx(benchmark::State& state) {
  Harness h;
  if (!h.Init(state)) return;
  absl::StatusOr<Tap> tap = Tap::Open(kTap, h.ns_->path());
  if (!tap.ok()) return (void)Harness::Skip(state, tap.status());
  if (!h.TapReady(state)) return;
  NetTx tx(&*tap, &h.stats_, &h.log_, "bench");
  const std::vector<uint8_t> frame = Frame(static_cast<size_t>(state.range(0)));
  h.WriteTxChains(kBatch, frame, virtio_net_hdr_v1{});
  for (auto _ : state) {
    h.PublishTx(kBatch);
    tx.Process(*h.memory_, h.tx_->queue(), kFeatures, 256);
  }
  if (h.stats_.tx_packets.load() != static_cast<uint64_t>(state.iterations()) * kBatch) {
    state.SkipWithError("frames were dropped");
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(state.iterations() * kBatch * static_cast<int64_t>(frame.size()));
}
BENCHMARK(BM_NetTx)->Arg(64)->Arg(1514)->Arg(9014)->ArgName("frame_bytes");

void BM_NetTxTso(benchmark::State& state) {
  Harness h;
  if (!h.Init(state)) return;
  absl::StatusOr<Tap> tap = Tap::Open(kTap, h.ns_->path());
  if (!tap.ok()) return (void)Harness::Skip(state, tap.status());
  if (!h.TapReady(state)) return;
  NetTx tx(&*tap, &h.stats_, &h.log_, "bench");
  const testing::Ipv4Addr src = {{10, 0, 0, 2}}, dst = {{10, 0, 0, 1}};
  const std::vector<uint8_t> tcp =
      testing::TcpPartial(src, dst, 4000, 5000, 1, testing::Pattern(65000, 3));
  const std::vector<uint8_t> frame = testing::Ipv4Frame(kPeerMac, kGuestMac, src, dst, 6, tcp);
  virtio_net_hdr_v1 hdr{};
  hdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  hdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  hdr.gso_size = 1448;
  hdr.hdr_len = 54;
  hdr.csum_start = 34;
  hdr.csum_offset = 16;
  h.WriteTxChains(1, frame, hdr);
  for (auto _ : state) {
    h.PublishTx(1);
    tx.Process(*h.memory_, h.tx_->queue(), kFeatures, 256);
  }
  if (h.stats_.tx_packets.load() != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("frames were dropped");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(frame.size()));
}
BENCHMARK(BM_NetTxTso);

void BM_NetRx(benchmark::State& state) {
  Harness h;
  if (!h.Init(state)) return;
  absl::StatusOr<Tap> tap = Tap::Open(kTap, h.ns_->path());
  if (!tap.ok()) return (void)Harness::Skip(state, tap.status());
  if (!h.TapReady(state)) return;
  NetRx rx(&*tap, &h.stats_, &h.log_, "bench");
  const std::vector<uint8_t> frame = Frame(static_cast<size_t>(state.range(0)));
  const int per_frame = BuffersPerFrame(frame.size());
  const int frames = std::min(kBatch, 256 / per_frame);
  h.WriteRxChains(frames * per_frame);
  uint64_t delivered = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (int i = 0; i < frames; ++i) {
      if (!h.Inject(frame)) {
        state.SkipWithError("send to the tap failed");
        return;
      }
    }
    h.PublishRx(frames * per_frame);
    state.ResumeTiming();
    delivered += static_cast<uint64_t>(frames);
    for (int tries = 0; h.stats_.rx_packets.load() < delivered && tries < 1000; ++tries) {
      rx.Process(*h.memory_, h.rx_->queue(), kFeatures, 256);
    }
  }
  if (h.stats_.rx_packets.load() != delivered) state.SkipWithError("frames went missing");
  state.SetItemsProcessed(state.iterations() * frames);
  state.SetBytesProcessed(state.iterations() * frames * static_cast<int64_t>(frame.size()));
  state.counters["buffers_per_frame"] = per_frame;
}
BENCHMARK(BM_NetRx)->Arg(64)->Arg(1514)->Arg(9014)->ArgName("frame_bytes");

void BM_NetDeviceTx(benchmark::State& state) {
  constexpr int kFrames = 64;
  Harness h;
  if (!h.Init(state)) return;
  absl::StatusOr<std::unique_ptr<NetDevice>> dev =
      NetDevice::Create({kTap, kGuestMac, h.ns_->path()});
  if (!dev.ok()) return (void)Harness::Skip(state, dev.status());
  if (!h.TapReady(state)) return;
  if (absl::Status s = (*dev)->Activate(
          {h.memory_.get(), {&h.rx_->queue(), &h.tx_->queue()}, kFeatures, &h.irq_});
      !s.ok()) {
    return (void)Harness::Skip(state, s);
  }
  const std::vector<uint8_t> frame = Frame(1514);
  h.WriteTxChains(kFrames, frame, virtio_net_hdr_v1{});
  uint16_t used = 0;
  for (auto _ : state) {
    h.PublishTx(kFrames);
    (*dev)->NotifyQueue(NetDevice::kTxQueue);
    used = static_cast<uint16_t>(used + kFrames);
    if (!WaitFor([&] { return h.tx_->UsedIdx() == used; })) {
      state.SkipWithError("the device stopped completing tx chains");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * kFrames);
  state.SetBytesProcessed(state.iterations() * kFrames * static_cast<int64_t>(frame.size()));
}
BENCHMARK(BM_NetDeviceTx)->UseRealTime();

void BM_NetDeviceRx(benchmark::State& state) {
  constexpr int kFrames = 64;
  Harness h;
  if (!h.Init(state)) return;
  absl::StatusOr<std::unique_ptr<NetDevice>> dev =
      NetDevice::Create({kTap, kGuestMac, h.ns_->path()});
  if (!dev.ok()) return (void)Harness::Skip(state, dev.status());
  if (!h.TapReady(state)) return;
  if (absl::Status s = (*dev)->Activate(
          {h.memory_.get(), {&h.rx_->queue(), &h.tx_->queue()}, kFeatures, &h.irq_});
      !s.ok()) {
    return (void)Harness::Skip(state, s);
  }
  const std::vector<uint8_t> frame = Frame(1514);
  h.WriteRxChains(kFrames);
  uint64_t delivered = 0;
  for (auto _ : state) {
    state.PauseTiming();
    // Sent while the guest has no buffers: the device holds the first frame, the rest wait in
    // the tap.
    for (int i = 0; i < kFrames; ++i) {
      if (!h.Inject(frame)) {
        state.SkipWithError("send to the tap failed");
        return;
      }
    }
    state.ResumeTiming();
    h.PublishRx(kFrames);
    (*dev)->NotifyQueue(NetDevice::kRxQueue);
    delivered += kFrames;
    if (!WaitFor([&] { return (*dev)->counters().rx_packets >= delivered; })) {
      const NetCounters c = (*dev)->counters();
      std::fprintf(stderr,
                   "rx stalled: %" PRIu64 " frames sent, %" PRIu64 " delivered, %" PRIu64
                   " dropped too big; avail idx %u, device next avail %u, used idx %u\n",
                   delivered, c.rx_packets, c.rx_dropped_too_big, h.rx_->avail_idx(),
                   h.rx_->queue().next_avail(), h.rx_->UsedIdx());
      state.SkipWithError("the device stopped delivering frames");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * kFrames);
  state.SetBytesProcessed(state.iterations() * kFrames * static_cast<int64_t>(frame.size()));
}
BENCHMARK(BM_NetDeviceRx)->UseRealTime();

}  // namespace
}  // namespace vessel::net

BENCHMARK_MAIN();
