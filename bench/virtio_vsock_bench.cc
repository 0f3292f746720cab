// virtio-vsock device-side cost per packet, through the real packet / connection / muxer code
// driven by the fake driver, with a socketpair as the host end (an in-process hand-over
// connection). The device's I/O thread is bypassed: the benchmark thread pops chains and calls the
// muxer the way VsockDevice::Pump does, so this is CPU cost per packet, not wake-up latency.
//   BM_VsockTxRw/N: a guest RW packet of N payload bytes → parsed → written to the socket (the
//     host end's recv of it is inside the timing), plus the CREDIT_UPDATEs the device sends back.
//   BM_VsockRxRw: N = 4 KiB written on the host end → epoll → one RW packet in a 4 KiB guest
//     buffer (the Linux driver's rx buffer size), plus a guest CREDIT_UPDATE every 64 KiB.
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "devices/virtio/virtio_ring.h"
#include "devices/vsock/unix_muxer.h"
#include "tests/devices/fake_driver.h"

namespace vessel::vsock {
namespace {

using virtio::testing::FakeDriver;

constexpr uint64_t kCid = 3;
constexpr uint32_t kGuestPort = 52;
constexpr uint32_t kRxBuf = 44 + 4096;

virtio_vsock_hdr GuestHdr(uint16_t op, uint32_t host_port, uint32_t len = 0, uint32_t fwd_cnt = 0) {
  virtio_vsock_hdr h{};
  h.src_cid = kCid;
  h.dst_cid = kHostCid;
  h.src_port = kGuestPort;
  h.dst_port = host_port;
  h.len = len;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = 256 * 1024;
  h.fwd_cnt = fwd_cnt;
  return h;
}

// A muxer with one established hand-over connection; rx and tx queues in one guest memory.
class Harness {
 public:
  bool Init(benchmark::State& state) {
    dir_ = "/tmp/vessel-vsock-bench-XXXXXX";
    if (mkdtemp(dir_.data()) == nullptr) return Skip(state, "mkdtemp failed");
    VsockConfig config;
    config.guest_cid = kCid;
    config.uds_path = dir_ + "/v.sock";
    absl::StatusOr<std::unique_ptr<VsockMuxer>> m = VsockMuxer::Create(config, &stats_);
    if (!m.ok()) return Skip(state, std::string(m.status().message()));
    muxer_ = std::move(*m);
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 2 * FakeDriver::kMemSize}});
    if (!mem.ok()) return Skip(state, "guest memory");
    memory_ = std::make_unique<GuestMemory>(std::move(*mem));
    rx_ = std::make_unique<FakeDriver>(*memory_, 0, 256);
    tx_ = std::make_unique<FakeDriver>(*memory_, FakeDriver::kMemSize, 256);
    rx_buf_ = rx_->AllocData(kRxBuf);
    rx_->WriteDesc(0, rx_buf_, kRxBuf, VRING_DESC_F_WRITE);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
      return Skip(state, "socketpair failed");
    }
    host_.reset(sv[0]);
    muxer_->ConnectToGuest(ScopedFd(sv[1]), kGuestPort, nullptr, Clock::now());
    if (!ServiceRx()) return Skip(state, "no REQUEST");
    host_port_ = memory_->ReadObj<virtio_vsock_hdr>(rx_buf_).value().src_port;
    SendTx(GuestHdr(VIRTIO_VSOCK_OP_RESPONSE, host_port_), 0);
    return true;
  }
  ~Harness() {
    muxer_.reset();
    if (!dir_.empty()) rmdir(dir_.c_str());
  }

  // One tx chain: header at descriptor 0, `payload` bytes (already in place) at descriptor 1.
  void SendTx(const virtio_vsock_hdr& hdr, uint32_t payload) {
    if (tx_hdr_ == 0) {
      tx_hdr_ = tx_->AllocData(sizeof(virtio_vsock_hdr));
      tx_payload_ = tx_->AllocData(kMaxPayload);
    }
    memory_->WriteObj(tx_hdr_, hdr).IgnoreError();
    if (payload > 0) {
      tx_->WriteDesc(0, tx_hdr_, sizeof(hdr), VRING_DESC_F_NEXT, 1);
      tx_->WriteDesc(1, tx_payload_, payload, 0);
    } else {
      tx_->WriteDesc(0, tx_hdr_, sizeof(hdr), 0);
    }
    tx_->Publish(0);
    std::optional<virtio::DescriptorChain> chain = tx_->queue().Pop(*memory_).value();
    TxPacket packet = ParseTxPacket(*memory_, *chain, kCid);
    muxer_->HandleTx(packet, Clock::now());
    tx_->queue().AddUsed(*memory_, chain->head_index(), 0).IgnoreError();
  }
  // Hands the muxer one rx buffer if it has something; true when a packet was written.
  bool ServiceRx() {
    if (!muxer_->HasPendingRx()) return false;
    rx_->Publish(0);
    std::optional<virtio::DescriptorChain> chain = rx_->queue().Pop(*memory_).value();
    virtio::ChainWriter writer = virtio::ChainWriter::Create(*memory_, *chain).value();
    const bool wrote = muxer_->FillRx(writer, Clock::now());
    rx_->queue().AddUsed(*memory_, chain->head_index(), static_cast<uint32_t>(writer.bytes_written()))
        .IgnoreError();
    return wrote;
  }

  VsockMuxer& muxer() { return *muxer_; }
  int host() const { return host_.get(); }
  uint32_t host_port() const { return host_port_; }
  const VsockStats& stats() const { return stats_; }

 private:
  bool Skip(benchmark::State& state, const std::string& why) {
    state.SkipWithError(why.c_str());
    return false;
  }
  std::string dir_;
  VsockStats stats_;
  std::unique_ptr<VsockMuxer> muxer_;
  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<FakeDriver> rx_, tx_;
  uint64_t rx_buf_ = 0, tx_hdr_ = 0, tx_payload_ = 0;
  ScopedFd host_;
  uint32_t host_port_ = 0;
};

void BM_VsockTxRw(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  Harness h;
  if (!h.Init(state)) return;
  std::vector<char> sink(n);
  const virtio_vsock_hdr hdr = GuestHdr(VIRTIO_VSOCK_OP_RW, h.host_port(), n);
  for (auto _ : state) {
    h.SendTx(hdr, n);
    // The host end takes the bytes (the socket would fill up otherwise).
    for (size_t got = 0; got < n;) {
      ssize_t r = recv(h.host(), sink.data(), n - got, MSG_DONTWAIT);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    h.ServiceRx();  // credit updates back to the guest
  }
  if (h.stats().Snapshot().rsts_sent != 0) state.SkipWithError("the device reset the connection");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_VsockTxRw)->Arg(4096)->Arg(65536)->ArgName("payload");

void BM_VsockRxRw(benchmark::State& state) {
  constexpr uint32_t n = 4096;
  Harness h;
  if (!h.Init(state)) return;
  const std::string data(n, 'r');
  uint32_t received = 0, credited = 0;
  for (auto _ : state) {
    if (send(h.host(), data.data(), n, MSG_DONTWAIT) != n) {
      state.SkipWithError("host socket full: the device stopped reading");
      break;
    }
    h.muxer().HandleHostEvents(Clock::now());
    if (!h.ServiceRx()) {
      state.SkipWithError("no RW packet for the guest");
      break;
    }
    received += n;
    if (received - credited >= 64 * 1024) {  // the guest read it: tell the device
      h.SendTx(GuestHdr(VIRTIO_VSOCK_OP_CREDIT_UPDATE, h.host_port(), 0, received), 0);
      credited = received;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_VsockRxRw);

}  // namespace
}  // namespace vessel::vsock

BENCHMARK_MAIN();
