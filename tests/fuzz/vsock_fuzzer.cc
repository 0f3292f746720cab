// libFuzzer target: virtio-vsock packets from the guest and CONNECT lines from host clients
// (devices/vsock): ParseTxPacket on tx chains the fuzzer lays out in guest memory, the hybrid-vsock
// muxer (VsockMuxer) acting on every packet as the device's I/O loop does (HandleTx, host events,
// FillRx into rx buffers, timeouts), and ParseConnectLine on a fuzzed line that a real Unix client
// also sends to the muxer's listener. The device's own thread is not used: this drives the muxer
// the way VsockDevice::Pump does, single-threaded and deterministic (the clock is simulated).
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_vsock_fuzzer
// Run:           tests/fuzz/run_fuzzers.sh (all targets) or
//                build-fuzz/tests/fuzz/vessel_vsock_fuzzer tests/fuzz/corpus/vsock
//
// Checked: every packet the muxer writes for the guest is addressed to it, a STREAM packet from
// the host (or an RST mirroring an invalid packet) whose len matches what was written; an ok tx packet carries its whole payload; Reset()
// leaves no connection or client behind.
// Per input, a fresh muxer for guest CID 3 (listener <tmp>/v; a host listener at <tmp>/v_5000 so
// guest REQUESTs to host port 5000 connect, other ports get RST), with two host-initiated
// connections waiting for the guest: an in-process hand-over to guest port 1234 (host port 2^30,
// the host side has "hello" queued) and, if byte 0 bit 1 is set, a Unix client that sent the
// CONNECT line (host port 2^30 + 1 when it parses).
// Input: byte 0 flags (bit 0 VIRTIO_F_EVENT_IDX, bit 1 send the CONNECT line, bit 2 let 60 s
// pass at the end: every deadline fires); byte 1 = length N (<= 40) of the CONNECT line that
// follows (the harness adds no "\n": the line carries its own); the rest is written at guest
// address 0 of a 16 KiB region holding the tx queue (descriptor table at 0x0, avail ring at
// 0x100, used ring at 0x200, queue size 16) and its packets. The harness posts 16 rx buffers of
// 4 KiB in another region and re-posts each one the muxer fills.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_ring.h"
#include "devices/vsock/packet.h"
#include "devices/vsock/unix_muxer.h"

namespace {

using vessel::GuestMemory;
using vessel::ScopedFd;
using vessel::virtio::Queue;
namespace vsock = vessel::vsock;

constexpr uint64_t kGuestCid = 3;
constexpr uint64_t kTxRegion = 0x0, kTxRegionBytes = 0x4000;
constexpr uint64_t kRxRegion = 0x10000;
constexpr uint16_t kQueueSize = 16;
constexpr uint32_t kRxBufBytes = 4096;
// Rx ring layout inside the rx region; buffers after it.
constexpr uint64_t kRxDesc = kRxRegion, kRxAvail = kRxRegion + 0x100, kRxUsed = kRxRegion + 0x200;
constexpr uint64_t kRxBuffers = kRxRegion + 0x1000;
constexpr uint64_t kRxRegionBytes = 0x1000 + kQueueSize * kRxBufBytes;

struct Scratch {
  std::string dir, uds, host_listener_path;
  ScopedFd host_listener;  // <uds>_5000: what a guest REQUEST to host port 5000 reaches
};

Scratch& GetScratch() {
  static Scratch* s = [] {
    auto* sc = new Scratch;
    std::string t = "/tmp/vessel-vsock-fuzz-XXXXXX";
    if (mkdtemp(t.data()) == nullptr) abort();
    sc->dir = t;
    sc->uds = t + "/v";
    sc->host_listener_path = sc->uds + "_5000";
    std::atexit([] {  // the scratch directory goes with the process
      const Scratch& s = GetScratch();
      ::unlink(s.host_listener_path.c_str());
      ::unlink(s.uds.c_str());
      ::rmdir(s.dir.c_str());
    });
    sc->host_listener.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sc->host_listener_path.c_str(), sizeof(addr.sun_path) - 1);
    if (::bind(sc->host_listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(sc->host_listener.get(), 64) != 0) {
      abort();
    }
    return sc;
  }();
  return *s;
}

// The driver side of the rx queue: posts buffer `head` (descriptor `head` = 4 KiB writable).
void PostRx(GuestMemory& memory, uint16_t head, uint16_t& avail_idx) {
  vring_desc d{};
  d.addr = kRxBuffers + uint64_t{head} * kRxBufBytes;
  d.len = kRxBufBytes;
  d.flags = VRING_DESC_F_WRITE;
  memory.WriteObj(kRxDesc + uint64_t{head} * sizeof(vring_desc), d).IgnoreError();
  memory.WriteObj<uint16_t>(kRxAvail + 4 + 2 * static_cast<uint64_t>(avail_idx % kQueueSize), head).IgnoreError();
  ++avail_idx;
  memory.WriteObj<uint16_t>(kRxAvail + 2, avail_idx).IgnoreError();
}

Queue MakeQueue(uint64_t desc, uint64_t avail, uint64_t used, bool event_idx) {
  Queue q = Queue::Create(kQueueSize).value();
  q.SetDescTable(desc);
  q.SetAvailRing(avail);
  q.SetUsedRing(used);
  q.SetEventIdx(event_idx);
  q.SetReady(true);
  return q;
}

struct Harness {
  GuestMemory* memory;
  vsock::VsockMuxer* muxer;
  Queue* rxq;
  uint16_t rx_avail_idx = 0;
  bool rx_broken = false;

  // What the host writes for the guest is always a well-formed packet from CID 2 to the guest.
  void CheckRxPacket(uint16_t head, uint32_t written) {
    virtio_vsock_hdr hdr{};
    const uint64_t buf = kRxBuffers + uint64_t{head} * kRxBufBytes;
    if (written < vsock::kHeaderSize || !memory->Read(buf, &hdr, sizeof(hdr)).ok()) abort();
    // An RST answering an invalid packet mirrors it (addresses swapped, same type), as Linux's
    // virtio_transport_reset_no_sock does; everything else comes from the host on a stream.
    const bool mirrored_rst = hdr.op == VIRTIO_VSOCK_OP_RST;
    const bool ok = hdr.dst_cid == kGuestCid &&
                    (mirrored_rst || (hdr.src_cid == vsock::kHostCid &&
                                      hdr.type == VIRTIO_VSOCK_TYPE_STREAM)) &&
                    hdr.op >= VIRTIO_VSOCK_OP_REQUEST && hdr.op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST &&
                    uint64_t{hdr.len} == written - vsock::kHeaderSize &&
                    (hdr.op == VIRTIO_VSOCK_OP_RW || hdr.len == 0);
    if (!ok) {
      fprintf(stderr, "vsock_fuzzer: bad packet for the guest: %s (%u bytes written)\n",
              vsock::Describe(hdr).c_str(), written);
      abort();
    }
  }

  // Host → guest, as VsockDevice::Pump does it; every used buffer is posted again.
  void DrainRx(vsock::Clock::time_point now) {
    for (int budget = 0; budget < 512 && !rx_broken && muxer->HasPendingRx(); ++budget) {
      absl::StatusOr<std::optional<vessel::virtio::DescriptorChain>> chain = rxq->Pop(*memory);
      if (!chain.ok() || !chain->has_value()) {
        rx_broken = !chain.ok();
        return;
      }
      absl::StatusOr<vessel::virtio::ChainWriter> writer =
          vessel::virtio::ChainWriter::Create(*memory, **chain);
      if (!writer.ok()) abort();  // the harness's own buffers are always valid
      uint32_t written = 0;
      if (muxer->FillRx(*writer, now)) {
        written = static_cast<uint32_t>(writer->bytes_written());
        CheckRxPacket((*chain)->head_index(), written);
      }
      if (!rxq->AddUsed(*memory, (*chain)->head_index(), written).ok()) abort();
      PostRx(*memory, (*chain)->head_index(), rx_avail_idx);
    }
  }
};

void AcceptAndClose(int listener) {
  for (;;) {
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    ::close(fd);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static GuestMemory* memory = new GuestMemory(
      GuestMemory::Create({{kTxRegion, kTxRegionBytes}, {kRxRegion, kRxRegionBytes}}).value());
  Scratch& sc = GetScratch();
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  const size_t line_len = std::min<size_t>({data[1], 40, size - 2});
  const std::string line(reinterpret_cast<const char*>(data + 2), line_len);
  const uint8_t* ram = data + 2 + line_len;
  const size_t ram_bytes = std::min<size_t>(size - 2 - line_len, kTxRegionBytes);

  // The parser alone: a port or an error, never more.
  {
    absl::string_view l(line);
    if (!l.empty() && l.back() == '\n') l.remove_suffix(1);
    absl::StatusOr<uint32_t> port = vsock::ParseConnectLine(l);
    if (port.ok() && *port == vsock::kPortAny) abort();
  }

  memory->Fill(kTxRegion, 0, kTxRegionBytes).IgnoreError();
  memory->Fill(kRxRegion, 0, kRxRegionBytes).IgnoreError();
  memory->Write(kTxRegion, ram, ram_bytes).IgnoreError();

  vsock::VsockConfig config;
  config.guest_cid = kGuestCid;
  config.uds_path = sc.uds;
  config.max_connections = 8;
  config.max_pending_clients = 4;
  config.buf_alloc = 64 * 1024;
  vsock::VsockStats stats;
  std::unique_ptr<vsock::VsockMuxer> muxer = vsock::VsockMuxer::Create(config, &stats).value();
  muxer->SetListening(true);

  Queue txq = MakeQueue(0x0, 0x100, 0x200, flags & 1);
  Queue rxq = MakeQueue(kRxDesc, kRxAvail, kRxUsed, flags & 1);
  Harness h{memory, muxer.get(), &rxq};
  for (uint16_t i = 0; i < kQueueSize; ++i) PostRx(*memory, i, h.rx_avail_idx);

  vsock::Clock::time_point now = vsock::Clock::now();
  // An in-process hand-over to guest port 1234, with bytes waiting on the host side.
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) abort();
  ScopedFd host_peer(sp[1]);
  static const char kHello[] = "hello";
  if (::write(host_peer.get(), kHello, sizeof(kHello) - 1) < 0) abort();
  muxer->ConnectToGuest(ScopedFd(sp[0]), 1234, [](absl::StatusOr<uint32_t>) {}, now);
  // A Unix client on the listener sending the fuzzed CONNECT line.
  ScopedFd client;
  if (flags & 2) {
    client.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sc.uds.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) abort();
    if (!line.empty() && ::send(client.get(), line.data(), line.size(), MSG_NOSIGNAL) < 0) abort();
  }
  for (int i = 0; i < 3; ++i) {
    muxer->HandleHostEvents(now);
    h.DrainRx(now);
  }

  // Guest → host: every tx chain, host events and rx after each.
  for (int i = 0; i < 2 * kQueueSize; ++i) {
    if (!muxer->CanAcceptTx()) {
      h.DrainRx(now);
      if (!muxer->CanAcceptTx()) break;
    }
    absl::StatusOr<std::optional<vessel::virtio::DescriptorChain>> chain = txq.Pop(*memory);
    if (!chain.ok() || !chain->has_value()) break;  // a broken ring stops the device
    vsock::TxPacket packet = vsock::ParseTxPacket(*memory, **chain, kGuestCid);
    if (packet.verdict != vsock::TxVerdict::kDrop) {
      (void)vsock::Describe(packet.hdr);
      if (packet.verdict == vsock::TxVerdict::kOk &&
          (!packet.payload.has_value() || packet.payload->remaining() < packet.hdr.len)) {
        abort();  // packet.h: an ok packet has its whole payload
      }
    }
    muxer->HandleTx(packet, now);
    if (!txq.AddUsed(*memory, (*chain)->head_index(), 0).ok()) break;
    now += std::chrono::milliseconds(1);
    muxer->HandleHostEvents(now);
    h.DrainRx(now);
  }
  // Host sockets: read what the guest sent, let the muxer see the space and any EOF.
  char sink[4096];
  size_t host_peer_bytes = 0;
  for (ssize_t n; (n = ::read(host_peer.get(), sink, sizeof(sink))) > 0;) {
    host_peer_bytes += static_cast<size_t>(n);
  }
  if (client.valid()) ::shutdown(client.get(), SHUT_WR);
  for (int i = 0; i < 2; ++i) {
    muxer->HandleHostEvents(now);
    h.DrainRx(now);
  }
  if (flags & 4) {
    now += std::chrono::seconds(60);
    muxer->HandleHostEvents(now);
    h.DrainRx(now);
  }
  if (muxer->connection_count() > config.max_connections) abort();
  if (getenv("VESSEL_FUZZ_VERBOSE") != nullptr) {
    const vsock::VsockCounters c = stats.Snapshot();
    fprintf(stderr,
            "vsock_fuzzer: tx %lu (%lu bytes, %lu dropped, %lu invalid) rx %lu (%lu bytes) rst "
            "sent %lu received %lu, connections opened %lu closed %lu, open %zu, clients "
            "rejected %lu, host peer got %zu bytes\n",
            c.tx_packets, c.tx_bytes, c.tx_dropped, c.tx_invalid, c.rx_packets, c.rx_bytes,
            c.rsts_sent, c.rsts_received, c.connections_opened, c.connections_closed,
            muxer->connection_count(), c.host_clients_rejected, host_peer_bytes);
  }
  muxer->Reset(absl::AbortedError("fuzz input done"));
  if (muxer->connection_count() != 0 || muxer->pending_client_count() != 0) abort();
  muxer.reset();
  AcceptAndClose(sc.host_listener.get());
  return 0;
}
