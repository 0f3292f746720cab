// VsockConnection: one stream connection between a guest port and a host stream socket, as the
// host side sees it: the state machine, credit-based flow control in both directions, and the I/O
// on the host socket. Owned and driven by the VsockMuxer on the device's I/O thread; not
// thread-safe.
//
// State: kConnecting (we asked the guest with REQUEST and wait for RESPONSE or RST, bounded by
// request_timeout) → kEstablished. Guest-initiated connections start established with a RESPONSE
// pending (the muxer connected their host socket first).
//
// Flow control (virtio 1.2 5.10.6.3), u32 counters that wrap:
//   guest → host: we advertise buf_alloc and fwd_cnt (bytes written to the host socket) in every
//     header we send. A guest RW that would put more than buf_alloc bytes beyond the last fwd_cnt
//     we told it is a credit violation: the connection is reset. Bytes the host socket does not
//     take at once wait in a per-connection buffer, which the same rule bounds by buf_alloc. When
//     the guest's view of our free space falls below half of buf_alloc and fwd_cnt has moved, or
//     on CREDIT_REQUEST, a CREDIT_UPDATE goes out.
//   host → guest: we never send more than the guest's credit,
//     peer_buf_alloc - (tx_cnt - peer_fwd_cnt); without credit we stop reading the host socket
//     (WantedEvents() drops EPOLLIN) until a guest packet brings more.
//
// Shutdown: guest SHUTDOWN SEND → shutdown(SHUT_WR) on the host socket once our buffer is flushed;
// RCV → we stop reading the host; both → flush, then reset (RST) the connection (bounded by
// shutdown_timeout). Host EOF → SHUTDOWN SEND to the guest (plus RCV when the host socket is
// fully closed; then the guest has shutdown_timeout to RST). Guest RST → closed without a reply.
#ifndef VESSEL_DEVICES_VSOCK_CONNECTION_H_
#define VESSEL_DEVICES_VSOCK_CONNECTION_H_

#include <linux/virtio_vsock.h>

#include <chrono>
#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/vsock/counters.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::vsock {

using Clock = std::chrono::steady_clock;

// A connection's address: the host-side port and the guest-side port.
struct ConnKey {
  uint32_t local_port = 0;
  uint32_t peer_port = 0;
  friend auto operator<=>(const ConnKey&, const ConnKey&) = default;
};

// Outcome of an in-process hand-over (VsockDevice::ConnectToGuest): the host-side port of the new
// connection once the guest accepted it, or why not.
using ConnectCallback = absl::AnyInvocable<void(absl::StatusOr<uint32_t>)>;

struct ConnectionParams {
  uint64_t guest_cid = 0;
  uint32_t buf_alloc = 0;
  std::chrono::milliseconds request_timeout{0};
  std::chrono::milliseconds shutdown_timeout{0};
  VsockStats* stats = nullptr;
};

class VsockConnection {
 public:
  // Who asked for the connection: the guest, a client of the Unix listener (gets "OK <port>\n"
  // when the guest accepts), or an in-process hand-over (gets its ConnectCallback).
  enum class Origin { kGuest, kUnixClient, kHandover };
  enum class State { kConnecting, kEstablished };
  // What the owner must do after a call.
  enum class Next { kKeep, kCloseWithRst, kCloseSilently };
  struct RxResult {
    bool wrote = false;  // a packet was written into the chain
    Next next = Next::kKeep;
  };

  // Host → guest: a REQUEST to `key.peer_port` is pending. `done` (kHandover only) is called once.
  static std::unique_ptr<VsockConnection> ToGuest(const ConnectionParams& params, ConnKey key,
                                                  ScopedFd host, Origin origin,
                                                  ConnectCallback done, Clock::time_point now);
  // Guest → host: `request` was the guest's REQUEST, `host` is connected; a RESPONSE is pending.
  static std::unique_ptr<VsockConnection> FromGuest(const ConnectionParams& params, ConnKey key,
                                                    ScopedFd host, const virtio_vsock_hdr& request);
  // Calls a ConnectCallback that has not run with close_reason().
  ~VsockConnection();
  VsockConnection(const VsockConnection&) = delete;
  VsockConnection& operator=(const VsockConnection&) = delete;

  // A valid guest packet for this connection (ParseTxPacket said kOk). `payload` holds at least
  // hdr.len bytes; `scratch` is a copy buffer.
  Next OnGuestPacket(const virtio_vsock_hdr& hdr, virtio::ChainReader& payload,
                     absl::Span<uint8_t> scratch, Clock::time_point now);
  // epoll reported `events` on the host socket.
  Next OnHostEvents(uint32_t events, Clock::time_point now);
  // The deadline passed (or not: then kKeep).
  Next OnTimeout(Clock::time_point now);
  // Writes the next packet for the guest into `writer` (whose remaining() is at least a header
  // plus one byte), reading host data into `scratch` first.
  RxResult FillRx(virtio::ChainWriter& writer, absl::Span<uint8_t> scratch, Clock::time_point now);

  // Whether FillRx has something to send.
  bool HasPendingRx() const;
  // epoll interest for the host socket (EPOLLIN and/or EPOLLOUT, possibly none).
  uint32_t WantedEvents() const;
  // False once the host socket hung up: it must leave the epoll set (EPOLLHUP cannot be masked).
  bool WantsEpoll() const { return !host_hup_; }
  std::optional<Clock::time_point> deadline() const { return deadline_; }

  ConnKey key() const { return key_; }
  State state() const { return state_; }
  Origin origin() const { return origin_; }
  int host_fd() const { return host_.get(); }
  // Why the last kClose* was returned, for logs.
  const std::string& problem() const { return problem_; }
  // What a pending ConnectCallback receives when the connection goes away.
  void set_close_reason(absl::Status reason) { close_reason_ = std::move(reason); }
  // Credit the guest has for our sends.
  uint32_t PeerCredit() const;

 private:
  enum Pending : uint32_t {
    kRequest = 1,
    kResponse = 2,
    kShutdown = 4,
    kCreditUpdate = 8,
  };

  // Bytes waiting for the host socket: [head_, data_.size()).
  class ByteQueue {
   public:
    bool empty() const { return head_ == data_.size(); }
    size_t size() const { return data_.size() - head_; }
    absl::Span<const uint8_t> front() const {
      return absl::MakeConstSpan(data_).subspan(head_);
    }
    void Append(const uint8_t* p, size_t n) { data_.insert(data_.end(), p, p + n); }
    void Consume(size_t n);

   private:
    std::vector<uint8_t> data_;
    size_t head_ = 0;
  };

  VsockConnection(const ConnectionParams& params, ConnKey key, ScopedFd host, Origin origin,
                  State state);
  Next Fail(Next next, std::string problem);
  // Sends to the host socket, buffering what it does not take; `guest_data` bytes count into
  // fwd_cnt. False (problem_ set) when the socket failed.
  bool WriteToHost(const uint8_t* data, size_t len, bool guest_data);
  // Sends buffered bytes; false (problem_ set) when the socket failed.
  bool FlushToHost();
  // After the buffer shrank: SHUT_WR / close on flush, credit updates.
  Next AfterFlush();
  void MaybeCreditUpdate();
  bool CanSendData() const;
  Next HandleShutdown(uint32_t flags, Clock::time_point now);
  void EmitHeader(virtio_vsock_hdr& hdr);

  const ConnectionParams& params_;
  const ConnKey key_;
  ScopedFd host_;
  const Origin origin_;
  State state_;
  ConnectCallback done_;
  absl::Status close_reason_;

  uint32_t pending_ = 0;
  std::optional<Clock::time_point> deadline_;
  std::string problem_;

  // guest → host
  uint32_t rx_cnt_ = 0;           // payload bytes accepted from the guest
  uint32_t fwd_cnt_ = 0;          // of those, written to the host socket
  uint32_t last_adv_fwd_cnt_ = 0; // fwd_cnt in the last header we sent
  ByteQueue to_host_;
  size_t preamble_left_ = 0;      // leading bytes of to_host_ that are ours ("OK <port>\n")
  // host → guest
  uint32_t tx_cnt_ = 0;           // payload bytes sent to the guest
  uint32_t peer_buf_alloc_ = 0;
  uint32_t peer_fwd_cnt_ = 0;

  bool host_readable_ = false;    // epoll said readable and no EAGAIN since
  bool host_eof_ = false;         // read returned 0
  bool host_hup_ = false;         // EPOLLHUP: the host socket is closed both ways
  bool host_wr_shut_ = false;     // we did shutdown(SHUT_WR)
  bool peer_shut_send_ = false;   // the guest will send no more
  bool peer_shut_rcv_ = false;    // the guest will receive no more
  uint32_t sent_shutdown_ = 0;    // SHUTDOWN flags we sent
  bool close_when_flushed_ = false;
};

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_CONNECTION_H_
