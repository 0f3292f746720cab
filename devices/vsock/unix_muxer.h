// VsockMuxer: the host side of virtio-vsock over AF_UNIX (Firecracker's "hybrid vsock"), run on
// the vsock device's I/O thread. Not thread-safe.
//
// It owns the Unix listener at uds_path, the host clients still sending their CONNECT line, every
// VsockConnection (keyed by host port, guest port) and one epoll set over all their sockets plus a
// timerfd for deadlines; the device nests that epoll fd in its own loop.
//   host → guest: a client connects to uds_path and writes "CONNECT <port>\n" ("connect" in any
//     case; at most kMaxConnectLine bytes; within connect_line_timeout). We pick a host port
//     (from 2^30 up), send the guest a REQUEST, and when it answers RESPONSE write
//     "OK <host port>\n" to the client and splice bytes; RST from the guest closes the client.
//     Anything else (bad port, garbage, overlong line, silence, EOF) closes that client only.
//     In process: ConnectToGuest takes an already-connected stream socket instead; no line is
//     read or written on it, the ConnectCallback reports the outcome.
//   guest → host: a REQUEST to host port P connects (non-blocking) to the Unix listener at
//     "<uds_path>_P"; RESPONSE when that worked, RST when nobody listens there.
// Guest packets for unknown connections are answered with RST (never an RST with an RST); invalid
// ones with RST or dropped (see packet.h), with a rate-limited log line. RSTs that outlive their
// connection wait in a bounded queue; while it is full the device stops taking tx packets.
// Memory is bounded: max_connections connections, each buffering at most buf_alloc bytes for its
// host socket, max_pending_clients clients, a 64 KiB copy buffer.
#ifndef VESSEL_DEVICES_VSOCK_UNIX_MUXER_H_
#define VESSEL_DEVICES_VSOCK_UNIX_MUXER_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/vsock/connection.h"
#include "devices/vsock/counters.h"
#include "devices/vsock/packet.h"
#include "devices/vsock/vsock_config.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::vsock {

// Longest CONNECT line a host client may send, "\n" included.
inline constexpr size_t kMaxConnectLine = 32;
// Host ports for host-initiated connections are allocated from here up (then wrap around).
inline constexpr uint32_t kFirstLocalPort = 1u << 30;

// Parses a CONNECT line without its "\n": "CONNECT <port>", the word in any case, blanks (space,
// tab, CR) around the two tokens, port decimal and < 0xffffffff. InvalidArgument saying what is
// wrong otherwise.
absl::StatusOr<uint32_t> ParseConnectLine(absl::string_view line);

class VsockMuxer {
 public:
  // Binds and listens on config.uds_path (which must not exist). `stats` must outlive the muxer.
  static absl::StatusOr<std::unique_ptr<VsockMuxer>> Create(const VsockConfig& config,
                                                            VsockStats* stats);
  // Closes everything and removes uds_path if it is still our socket.
  ~VsockMuxer();
  VsockMuxer(const VsockMuxer&) = delete;
  VsockMuxer& operator=(const VsockMuxer&) = delete;

  // Readable when HandleHostEvents has work.
  int epoll_fd() const { return epoll_.get(); }
  // Whether new clients are accepted from the listener (only while the guest driver is up; until
  // then they wait in the listen backlog).
  void SetListening(bool on);
  // Handles every ready host event (accepts, CONNECT lines, socket readiness, deadlines) without
  // blocking.
  void HandleHostEvents(Clock::time_point now);

  // --- Guest side (the device's queues) ---
  // False while the RST backlog is full: take no tx packet until FillRx drained some.
  bool CanAcceptTx() const;
  // A packet from the tx queue.
  void HandleTx(TxPacket& packet, Clock::time_point now);
  bool HasPendingRx() const { return !rsts_.empty() || !rx_queue_.empty(); }
  // Writes the next packet for the guest into `writer` (remaining() must exceed a header). False
  // when nothing was written.
  bool FillRx(virtio::ChainWriter& writer, Clock::time_point now);

  // Host → guest over an already-connected stream socket (non-blocking), to `guest_port`. `done`
  // is called exactly once: with the host port when the guest accepts, otherwise (refused, timed
  // out, limits, reset) with an error; on error `stream` is closed.
  void ConnectToGuest(ScopedFd stream, uint32_t guest_port, ConnectCallback done,
                      Clock::time_point now);

  // Drops every connection and pending client (no RSTs: the guest's queues are gone; pending
  // ConnectCallbacks get `reason`) and stops listening. The listener itself stays.
  void Reset(const absl::Status& reason);

  size_t connection_count() const { return conns_.size(); }
  size_t pending_client_count() const { return clients_.size(); }
  const std::string& name() const { return name_; }

 private:
  using TimerMap = std::multimap<Clock::time_point, uint64_t>;
  struct ConnEntry {
    std::unique_ptr<VsockConnection> conn;
    uint64_t token = 0;
    uint32_t events = 0;  // registered epoll interest
    bool in_epoll = false;
    bool queued_rx = false;
    std::optional<TimerMap::iterator> timer;
  };
  using ConnMap = std::map<ConnKey, ConnEntry>;
  struct Client {
    ScopedFd fd;
    std::string line;
    TimerMap::iterator timer;
  };

  VsockMuxer(const VsockConfig& config, VsockStats* stats);
  absl::Status Init();
  void AcceptClients(Clock::time_point now);
  void HandleClient(uint64_t token, Clock::time_point now);
  void RejectClient(uint64_t token, absl::string_view why);
  void ConnectFromGuest(const virtio_vsock_hdr& request, Clock::time_point now);
  // Adds a host-initiated connection; on failure says why (the caller owns the cleanup).
  absl::Status AddToGuest(ScopedFd& stream, uint32_t guest_port, VsockConnection::Origin origin,
                          ConnectCallback& done, Clock::time_point now);
  std::optional<uint32_t> AllocateLocalPort();
  ConnMap::iterator Insert(std::unique_ptr<VsockConnection> conn);
  // Applies `next` and brings epoll interest, deadline and rx queue membership up to date.
  void Sync(ConnMap::iterator it, VsockConnection::Next next);
  void Close(ConnMap::iterator it, bool send_rst);
  void EnqueueRst(const virtio_vsock_hdr& rst);
  void HandleTimers(Clock::time_point now);
  void RearmTimer();
  void EpollAdd(int fd, uint32_t events, uint64_t token);
  void EpollMod(int fd, uint32_t events, uint64_t token);
  void EpollDel(int fd);
  size_t MaxPendingRsts() const { return config_.max_connections + 256; }

  const VsockConfig config_;
  const std::string name_;  // "vsock cid N" for logs
  VsockStats* stats_;
  ConnectionParams params_;
  ScopedFd listener_;
  ScopedFd epoll_;
  ScopedFd timer_fd_;
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
  bool listening_ = false;

  ConnMap conns_;
  std::unordered_map<uint64_t, ConnKey> conn_tokens_;
  std::unordered_map<uint64_t, Client> clients_;
  TimerMap timers_;
  std::optional<Clock::time_point> armed_;
  std::deque<ConnKey> rx_queue_;
  std::deque<virtio_vsock_hdr> rsts_;
  uint64_t next_token_ = 16;
  uint32_t next_local_port_ = kFirstLocalPort;
  std::vector<uint8_t> scratch_;
  RateLimiter log_;
};

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_UNIX_MUXER_H_
