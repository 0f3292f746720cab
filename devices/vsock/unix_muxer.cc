#include "devices/vsock/unix_muxer.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/errors.h"

namespace vessel::vsock {
namespace {

constexpr uint64_t kListenerToken = 1;
constexpr uint64_t kTimerToken = 2;
constexpr uint64_t kClientBit = 1ull << 63;
constexpr int kMaxEvents = 64;
constexpr int kMaxAcceptsPerEvent = 64;
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

sockaddr_un UnixAddress(absl::string_view path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Callers checked the length (ValidateVsockConfig).
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  return addr;
}

}  // namespace

absl::StatusOr<uint32_t> ParseConnectLine(absl::string_view line) {
  std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
  if (words.size() != 2 || !absl::EqualsIgnoreCase(words[0], "connect")) {
    return absl::InvalidArgumentError("expected \"CONNECT <port>\"");
  }
  const absl::string_view port = words[1];
  if (!std::all_of(port.begin(), port.end(), absl::ascii_isdigit)) {
    return absl::InvalidArgumentError(absl::StrCat("port '", port, "' is not a decimal number"));
  }
  uint64_t value = 0;
  if (port.size() > 10 || !absl::SimpleAtoi(port, &value) || value >= kPortAny) {
    return absl::InvalidArgumentError(
        absl::StrCat("port ", port, " is out of range (0..", kPortAny - 1, ")"));
  }
  return static_cast<uint32_t>(value);
}

VsockMuxer::VsockMuxer(const VsockConfig& config, VsockStats* stats)
    : config_(config),
      name_(absl::StrCat("vsock cid ", config.guest_cid)),
      stats_(stats),
      scratch_(kMaxPayload) {
  params_.guest_cid = config.guest_cid;
  params_.buf_alloc = config.buf_alloc;
  params_.request_timeout = config.request_timeout;
  params_.shutdown_timeout = config.shutdown_timeout;
  params_.stats = stats;
}

absl::StatusOr<std::unique_ptr<VsockMuxer>> VsockMuxer::Create(const VsockConfig& config,
                                                               VsockStats* stats) {
  VESSEL_RETURN_IF_ERROR(ValidateVsockConfig(config));
  std::unique_ptr<VsockMuxer> m(new VsockMuxer(config, stats));
  VESSEL_RETURN_IF_ERROR(m->Init());
  return m;
}

absl::Status VsockMuxer::Init() {
  const std::string& path = config_.uds_path;
  listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener_.valid()) return ErrnoStatus(absl::StrCat(name_, ": socket(AF_UNIX)"));
  sockaddr_un addr = UnixAddress(path);
  if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      return absl::AlreadyExistsError(absl::StrCat(
          name_, ": cannot listen on ", path,
          ": the path already exists: remove the stale socket or choose another path"));
    }
    absl::Status s = ErrnoStatus(absl::StrCat(name_, ": bind ", path), err);
    return absl::Status(s.code(), absl::StrCat(s.message(),
                                               ": check that the directory exists and is writable"));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  if (::listen(listener_.get(), 128) != 0) {
    return ErrnoStatus(absl::StrCat(name_, ": listen on ", path));
  }
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoStatus(absl::StrCat(name_, ": epoll_create1"));
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_fd_.valid()) return ErrnoStatus(absl::StrCat(name_, ": timerfd_create"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTimerToken;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, timer_fd_.get(), &ev) != 0) {
    return ErrnoStatus(absl::StrCat(name_, ": epoll_ctl(timerfd)"));
  }
  return absl::OkStatus();
}

VsockMuxer::~VsockMuxer() {
  Reset(absl::AbortedError(absl::StrCat(name_, ": the vsock device was destroyed")));
  struct stat st;
  if (socket_ino_ != 0 && ::stat(config_.uds_path.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_) {
    ::unlink(config_.uds_path.c_str());
  }
}

void VsockMuxer::EpollAdd(int fd, uint32_t events, uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && log_.Allow()) {
    LogWarning(name_, ": epoll_ctl(ADD) failed: ", std::strerror(errno));
  }
}

void VsockMuxer::EpollMod(int fd, uint32_t events, uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0 && log_.Allow()) {
    LogWarning(name_, ": epoll_ctl(MOD) failed: ", std::strerror(errno));
  }
}

void VsockMuxer::EpollDel(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void VsockMuxer::SetListening(bool on) {
  if (on == listening_) return;
  listening_ = on;
  if (on) {
    EpollAdd(listener_.get(), EPOLLIN, kListenerToken);
  } else {
    EpollDel(listener_.get());
  }
}

void VsockMuxer::HandleHostEvents(Clock::time_point now) {
  epoll_event events[kMaxEvents];
  int n;
  do {
    n = ::epoll_wait(epoll_.get(), events, kMaxEvents, 0);
  } while (n < 0 && errno == EINTR);
  for (int i = 0; i < n; ++i) {
    const uint64_t token = events[i].data.u64;
    if (token == kListenerToken) {
      AcceptClients(now);
    } else if (token == kTimerToken) {
      uint64_t expirations;
      ssize_t unused = ::read(timer_fd_.get(), &expirations, sizeof(expirations));
      (void)unused;
      armed_.reset();
    } else if (token & kClientBit) {
      HandleClient(token, now);
    } else {
      auto t = conn_tokens_.find(token);
      if (t == conn_tokens_.end()) continue;  // closed earlier in this batch
      auto it = conns_.find(t->second);
      if (it == conns_.end()) continue;
      Sync(it, it->second.conn->OnHostEvents(events[i].events, now));
    }
  }
  HandleTimers(now);
}

void VsockMuxer::AcceptClients(Clock::time_point now) {
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    ScopedFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == EINTR || err == ECONNABORTED) continue;
      // Out of fds or memory: the listener stays readable, so pause it instead of spinning.
      if (log_.Allow()) {
        LogWarning(name_, ": accept on ", config_.uds_path, " failed: ", std::strerror(err),
                   "; pausing new host connections for ", kAcceptRetry.count(), " ms");
      }
      SetListening(false);
      timers_.emplace(now + kAcceptRetry, kListenerToken);
      break;
    }
    if (clients_.size() >= config_.max_pending_clients) {
      VsockStats::Add(stats_->host_clients_rejected);
      if (log_.Allow()) {
        LogWarning(name_, ": ", clients_.size(),
                   " host clients are already sending CONNECT lines; closing a new one "
                   "(max_pending_clients)");
      }
      continue;
    }
    const uint64_t token = kClientBit | next_token_++;
    EpollAdd(fd.get(), EPOLLIN, token);
    Client& c = clients_[token];
    c.fd = std::move(fd);
    c.timer = timers_.emplace(now + config_.connect_line_timeout, token);
  }
  RearmTimer();
}

void VsockMuxer::RejectClient(uint64_t token, absl::string_view why) {
  auto it = clients_.find(token);
  if (it == clients_.end()) return;
  VsockStats::Add(stats_->host_clients_rejected);
  if (log_.Allow()) LogWarning(name_, ": closing host client on ", config_.uds_path, ": ", why);
  EpollDel(it->second.fd.get());
  timers_.erase(it->second.timer);
  clients_.erase(it);
  RearmTimer();
}

void VsockMuxer::HandleClient(uint64_t token, Clock::time_point now) {
  auto it = clients_.find(token);
  if (it == clients_.end()) return;
  Client& c = it->second;
  // Peek, then consume exactly up to the newline: bytes after it belong to the guest.
  char buf[kMaxConnectLine];
  const size_t room = kMaxConnectLine - c.line.size();
  ssize_t n;
  do {
    n = ::recv(c.fd.get(), buf, room, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n < 0) return RejectClient(token, absl::StrCat("read failed: ", std::strerror(errno)));
  if (n == 0) return RejectClient(token, "it closed before sending a complete CONNECT line");
  const char* newline = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
  const size_t take = newline != nullptr ? static_cast<size_t>(newline - buf) + 1 : static_cast<size_t>(n);
  ssize_t got;
  do {
    got = ::recv(c.fd.get(), buf, take, MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(take)) return RejectClient(token, "read of its CONNECT line failed");
  c.line.append(buf, take);
  if (newline == nullptr) {
    if (c.line.size() >= kMaxConnectLine) {
      return RejectClient(token, absl::StrCat("no newline in the first ", kMaxConnectLine,
                                              " bytes (expected \"CONNECT <port>\\n\")"));
    }
    return;
  }
  c.line.pop_back();  // the newline
  absl::StatusOr<uint32_t> port = ParseConnectLine(c.line);
  if (!port.ok()) {
    return RejectClient(token, absl::StrCat("bad CONNECT line '", absl::CEscape(c.line), "': ",
                                            port.status().message()));
  }
  ScopedFd stream = std::move(c.fd);
  EpollDel(stream.get());
  timers_.erase(c.timer);
  clients_.erase(it);
  ConnectCallback none;
  absl::Status added = AddToGuest(stream, *port, VsockConnection::Origin::kUnixClient, none, now);
  if (!added.ok()) {
    VsockStats::Add(stats_->host_clients_rejected);
    if (log_.Allow()) {
      LogWarning(name_, ": closing host client on ", config_.uds_path, ": ", added.message());
    }
  }
  RearmTimer();
}

void VsockMuxer::ConnectToGuest(ScopedFd stream, uint32_t guest_port, ConnectCallback done,
                                Clock::time_point now) {
  absl::Status added =
      AddToGuest(stream, guest_port, VsockConnection::Origin::kHandover, done, now);
  if (!added.ok() && done) {
    stream.reset();
    done(absl::Status(added.code(), absl::StrCat(name_, ": ", added.message())));
  }
}

absl::Status VsockMuxer::AddToGuest(ScopedFd& stream, uint32_t guest_port,
                                    VsockConnection::Origin origin, ConnectCallback& done,
                                    Clock::time_point now) {
  if (guest_port == kPortAny) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest port ", guest_port, " is VMADDR_PORT_ANY: name a real port"));
  }
  if (conns_.size() >= config_.max_connections) {
    return absl::ResourceExhaustedError(absl::StrCat(
        conns_.size(), " connections are open (max_connections): close some first"));
  }
  std::optional<uint32_t> local = AllocateLocalPort();
  if (!local.has_value()) {
    return absl::ResourceExhaustedError("no free host port: close some connections first");
  }
  auto conn = VsockConnection::ToGuest(params_, ConnKey{*local, guest_port}, std::move(stream),
                                       origin, std::move(done), now);
  Sync(Insert(std::move(conn)), VsockConnection::Next::kKeep);
  return absl::OkStatus();
}

std::optional<uint32_t> VsockMuxer::AllocateLocalPort() {
  for (size_t tries = 0; tries <= conns_.size(); ++tries) {
    const uint32_t port = next_local_port_;
    next_local_port_ = port >= kPortAny - 1 ? kFirstLocalPort : port + 1;
    auto it = conns_.lower_bound(ConnKey{port, 0});
    if (it == conns_.end() || it->first.local_port != port) return port;
  }
  return std::nullopt;
}

VsockMuxer::ConnMap::iterator VsockMuxer::Insert(std::unique_ptr<VsockConnection> conn) {
  const ConnKey key = conn->key();
  ConnEntry entry;
  entry.conn = std::move(conn);
  entry.token = next_token_++;
  conn_tokens_[entry.token] = key;
  VsockStats::Add(stats_->connections_opened);
  return conns_.emplace(key, std::move(entry)).first;
}

bool VsockMuxer::CanAcceptTx() const { return rsts_.size() < MaxPendingRsts(); }

void VsockMuxer::EnqueueRst(const virtio_vsock_hdr& rst) {
  if (rsts_.size() >= MaxPendingRsts()) {
    VsockStats::Add(stats_->rx_dropped);
    return;
  }
  rsts_.push_back(rst);
}

void VsockMuxer::HandleTx(TxPacket& packet, Clock::time_point now) {
  VsockStats::Add(stats_->tx_packets);
  const virtio_vsock_hdr& hdr = packet.hdr;
  if (packet.verdict == TxVerdict::kDrop) {
    VsockStats::Add(stats_->tx_dropped);
    if (log_.Allow()) LogWarning(name_, ": guest packet dropped: ", packet.problem);
    return;
  }
  const uint16_t op = hdr.op;
  const ConnKey key{hdr.dst_port, hdr.src_port};
  if (packet.verdict == TxVerdict::kReset) {
    VsockStats::Add(stats_->tx_invalid);
    if (log_.Allow()) {
      LogWarning(name_, ": invalid guest packet (", Describe(hdr), "): ", packet.problem,
                 "; answered with RST");
    }
    auto it = uint64_t{hdr.dst_cid} == kHostCid ? conns_.find(key) : conns_.end();
    if (it != conns_.end()) {
      Close(it, /*send_rst=*/true);
    } else if (op != VIRTIO_VSOCK_OP_RST) {
      EnqueueRst(ResetReply(hdr));
    }
    return;
  }
  if (op == VIRTIO_VSOCK_OP_RST) VsockStats::Add(stats_->rsts_received);
  auto it = conns_.find(key);
  if (it == conns_.end()) {
    if (op == VIRTIO_VSOCK_OP_REQUEST) {
      ConnectFromGuest(hdr, now);
    } else if (op != VIRTIO_VSOCK_OP_RST) {
      EnqueueRst(ResetReply(hdr));
    }
    return;
  }
  const VsockConnection::Next next = it->second.conn->OnGuestPacket(hdr, *packet.payload, absl::MakeSpan(scratch_), now);
  if (next == VsockConnection::Next::kCloseWithRst && !it->second.conn->problem().empty() &&
      log_.Allow()) {
    LogWarning(name_, ": resetting connection host port ", key.local_port, " <-> guest port ",
               key.peer_port, ": ", it->second.conn->problem());
  }
  Sync(it, next);
}

void VsockMuxer::ConnectFromGuest(const virtio_vsock_hdr& request, Clock::time_point now) {
  (void)now;
  const uint32_t host_port = request.dst_port;
  if (conns_.size() >= config_.max_connections) {
    if (log_.Allow()) {
      LogWarning(name_, ": refusing guest connection to host port ", host_port, ": ",
                 conns_.size(), " connections are open (max_connections)");
    }
    EnqueueRst(ResetReply(request));
    return;
  }
  const std::string path = absl::StrCat(config_.uds_path, "_", host_port);
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un addr = UnixAddress(path);
  if (!fd.valid() ||
      ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    // Nobody listens there (ENOENT / ECONNREFUSED) or its backlog is full (EAGAIN): refuse.
    EnqueueRst(ResetReply(request));
    return;
  }
  auto conn = VsockConnection::FromGuest(params_, ConnKey{host_port, request.src_port},
                                         std::move(fd), request);
  Sync(Insert(std::move(conn)), VsockConnection::Next::kKeep);
}

void VsockMuxer::Sync(ConnMap::iterator it, VsockConnection::Next next) {
  if (next != VsockConnection::Next::kKeep) {
    Close(it, next == VsockConnection::Next::kCloseWithRst);
    return;
  }
  ConnEntry& e = it->second;
  VsockConnection& c = *e.conn;
  if (c.WantsEpoll()) {
    const uint32_t events = c.WantedEvents();
    if (!e.in_epoll) {
      EpollAdd(c.host_fd(), events, e.token);
      e.in_epoll = true;
      e.events = events;
    } else if (events != e.events) {
      EpollMod(c.host_fd(), events, e.token);
      e.events = events;
    }
  } else if (e.in_epoll) {
    EpollDel(c.host_fd());
    e.in_epoll = false;
  }
  const std::optional<Clock::time_point> deadline = c.deadline();
  const std::optional<Clock::time_point> current =
      e.timer.has_value() ? std::optional((*e.timer)->first) : std::nullopt;
  if (deadline != current) {
    if (e.timer.has_value()) timers_.erase(*e.timer);
    e.timer.reset();
    if (deadline.has_value()) e.timer = timers_.emplace(*deadline, e.token);
    RearmTimer();
  }
  if (!e.queued_rx && c.HasPendingRx()) {
    rx_queue_.push_back(it->first);
    e.queued_rx = true;
  }
}

void VsockMuxer::Close(ConnMap::iterator it, bool send_rst) {
  ConnEntry& e = it->second;
  const ConnKey key = it->first;
  if (send_rst) {
    EnqueueRst(HostHeader(config_.guest_cid, key.local_port, key.peer_port, VIRTIO_VSOCK_OP_RST));
  }
  if (e.in_epoll) EpollDel(e.conn->host_fd());
  if (e.timer.has_value()) {
    timers_.erase(*e.timer);
    RearmTimer();
  }
  if (e.queued_rx) {
    auto q = std::find(rx_queue_.begin(), rx_queue_.end(), key);
    if (q != rx_queue_.end()) rx_queue_.erase(q);
  }
  conn_tokens_.erase(e.token);
  VsockStats::Add(stats_->connections_closed);
  // The connection's destructor closes the host socket and runs a pending ConnectCallback.
  std::unique_ptr<VsockConnection> conn = std::move(e.conn);
  conns_.erase(it);
  conn.reset();
}

void VsockMuxer::HandleTimers(Clock::time_point now) {
  bool changed = false;
  while (!timers_.empty() && timers_.begin()->first <= now) {
    const uint64_t token = timers_.begin()->second;
    changed = true;
    if (token == kListenerToken) {
      timers_.erase(timers_.begin());
      SetListening(true);
    } else if (token & kClientBit) {
      // RejectClient erases the timer entry.
      if (clients_.count(token) == 0) {
        timers_.erase(timers_.begin());
        continue;
      }
      RejectClient(token, absl::StrCat("no complete CONNECT line within ",
                                       config_.connect_line_timeout.count(), " ms"));
    } else {
      auto t = conn_tokens_.find(token);
      auto it = t == conn_tokens_.end() ? conns_.end() : conns_.find(t->second);
      if (it == conns_.end() || !it->second.timer.has_value()) {
        timers_.erase(timers_.begin());
        continue;
      }
      // Forget the entry first: Sync re-adds the connection's deadline if it still has one.
      timers_.erase(*it->second.timer);
      it->second.timer.reset();
      const VsockConnection::Next next = it->second.conn->OnTimeout(now);
      if (next == VsockConnection::Next::kCloseWithRst && log_.Allow()) {
        LogWarning(name_, ": resetting connection host port ", it->first.local_port,
                   " <-> guest port ", it->first.peer_port, ": ", it->second.conn->problem());
      }
      Sync(it, next);
    }
  }
  if (changed) RearmTimer();
}

void VsockMuxer::RearmTimer() {
  const std::optional<Clock::time_point> earliest =
      timers_.empty() ? std::nullopt : std::optional(timers_.begin()->first);
  if (earliest == armed_) return;
  itimerspec spec{};
  if (earliest.has_value()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        earliest->time_since_epoch())
                        .count();
    // An absolute CLOCK_MONOTONIC time (steady_clock); 0 would disarm, so at least 1 ns.
    spec.it_value.tv_sec = ns / 1000000000;
    spec.it_value.tv_nsec = std::max<int64_t>(ns % 1000000000, ns == 0 ? 1 : 0);
  }
  if (::timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0 && log_.Allow()) {
    LogWarning(name_, ": timerfd_settime failed: ", std::strerror(errno));
  }
  armed_ = earliest;
}

bool VsockMuxer::FillRx(virtio::ChainWriter& writer, Clock::time_point now) {
  if (!rsts_.empty()) {
    const virtio_vsock_hdr rst = rsts_.front();
    rsts_.pop_front();
    if (!WriteRxPacket(writer, rst).ok()) return false;
    VsockStats::Add(stats_->rsts_sent);
    VsockStats::Add(stats_->rx_packets);
    return true;
  }
  for (size_t budget = rx_queue_.size(); budget > 0 && !rx_queue_.empty(); --budget) {
    const ConnKey key = rx_queue_.front();
    rx_queue_.pop_front();
    auto it = conns_.find(key);
    if (it == conns_.end()) continue;
    it->second.queued_rx = false;
    const VsockConnection::RxResult r =
        it->second.conn->FillRx(writer, absl::MakeSpan(scratch_), now);
    if (r.next == VsockConnection::Next::kCloseWithRst && log_.Allow()) {
      LogWarning(name_, ": resetting connection host port ", key.local_port, " <-> guest port ",
                 key.peer_port, ": ", it->second.conn->problem());
    }
    Sync(it, r.next);
    if (r.wrote) {
      VsockStats::Add(stats_->rx_packets);
      return true;
    }
  }
  return false;
}

void VsockMuxer::Reset(const absl::Status& reason) {
  while (!conns_.empty()) {
    auto it = conns_.begin();
    it->second.conn->set_close_reason(reason);
    Close(it, /*send_rst=*/false);
  }
  for (auto& [token, client] : clients_) EpollDel(client.fd.get());
  clients_.clear();
  timers_.clear();
  rx_queue_.clear();
  rsts_.clear();
  SetListening(false);
  RearmTimer();
}

}  // namespace vessel::vsock
