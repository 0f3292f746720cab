#include "devices/vsock/connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/vsock/packet.h"

namespace vessel::vsock {

void VsockConnection::ByteQueue::Consume(size_t n) {
  head_ += n;
  if (head_ == data_.size()) {
    data_.clear();
    head_ = 0;
  } else if (head_ >= data_.size() / 2) {
    data_.erase(data_.begin(), data_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
}

VsockConnection::VsockConnection(const ConnectionParams& params, ConnKey key, ScopedFd host,
                                 Origin origin, State state)
    : params_(params), key_(key), host_(std::move(host)), origin_(origin), state_(state) {
  close_reason_ = absl::AbortedError(absl::StrCat("vsock connection to guest port ",
                                                  key.peer_port, " closed before the guest answered"));
}

std::unique_ptr<VsockConnection> VsockConnection::ToGuest(const ConnectionParams& params,
                                                          ConnKey key, ScopedFd host,
                                                          Origin origin, ConnectCallback done,
                                                          Clock::time_point now) {
  std::unique_ptr<VsockConnection> c(
      new VsockConnection(params, key, std::move(host), origin, State::kConnecting));
  c->done_ = std::move(done);
  c->pending_ = kRequest;
  c->deadline_ = now + params.request_timeout;
  return c;
}

std::unique_ptr<VsockConnection> VsockConnection::FromGuest(const ConnectionParams& params,
                                                            ConnKey key, ScopedFd host,
                                                            const virtio_vsock_hdr& request) {
  std::unique_ptr<VsockConnection> c(
      new VsockConnection(params, key, std::move(host), Origin::kGuest, State::kEstablished));
  c->peer_buf_alloc_ = request.buf_alloc;
  c->peer_fwd_cnt_ = request.fwd_cnt;
  c->pending_ = kResponse;
  return c;
}

VsockConnection::~VsockConnection() {
  if (done_) {
    ConnectCallback done = std::move(done_);
    done_ = nullptr;
    done(close_reason_);
  }
}

VsockConnection::Next VsockConnection::Fail(Next next, std::string problem) {
  problem_ = std::move(problem);
  return next;
}

uint32_t VsockConnection::PeerCredit() const {
  const uint32_t in_flight = tx_cnt_ - peer_fwd_cnt_;
  return in_flight >= peer_buf_alloc_ ? 0 : peer_buf_alloc_ - in_flight;
}

bool VsockConnection::CanSendData() const {
  return state_ == State::kEstablished && !host_eof_ && !peer_shut_rcv_ && PeerCredit() > 0;
}

bool VsockConnection::HasPendingRx() const {
  return pending_ != 0 || (host_readable_ && CanSendData());
}

uint32_t VsockConnection::WantedEvents() const {
  uint32_t events = 0;
  if (!host_readable_ && CanSendData()) events |= EPOLLIN;
  if (!to_host_.empty()) events |= EPOLLOUT;
  return events;
}

bool VsockConnection::WriteToHost(const uint8_t* data, size_t len, bool guest_data) {
  size_t sent = 0;
  if (to_host_.empty()) {
    while (sent < len) {
      ssize_t n = ::send(host_.get(), data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) {
        problem_ = absl::StrCat("write to the host socket failed: ", std::strerror(errno));
        return false;
      }
      sent += static_cast<size_t>(n);
    }
  }
  if (guest_data) {
    fwd_cnt_ += static_cast<uint32_t>(sent);
  }
  if (sent < len) {
    to_host_.Append(data + sent, len - sent);
    if (!guest_data) preamble_left_ += len - sent;
  }
  return true;
}

bool VsockConnection::FlushToHost() {
  while (!to_host_.empty()) {
    absl::Span<const uint8_t> front = to_host_.front();
    ssize_t n = ::send(host_.get(), front.data(), front.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n < 0) {
      problem_ = absl::StrCat("write to the host socket failed: ", std::strerror(errno));
      return false;
    }
    size_t done = static_cast<size_t>(n);
    const size_t ours = std::min(done, preamble_left_);
    preamble_left_ -= ours;
    fwd_cnt_ += static_cast<uint32_t>(done - ours);
    to_host_.Consume(done);
  }
  return true;
}

VsockConnection::Next VsockConnection::AfterFlush() {
  if (to_host_.empty()) {
    if (close_when_flushed_) return Fail(Next::kCloseWithRst, "");
    if (peer_shut_send_ && !host_wr_shut_) {
      ::shutdown(host_.get(), SHUT_WR);
      host_wr_shut_ = true;
    }
  }
  MaybeCreditUpdate();
  return Next::kKeep;
}

void VsockConnection::MaybeCreditUpdate() {
  if (fwd_cnt_ == last_adv_fwd_cnt_ || state_ != State::kEstablished) return;
  // What the guest believes it may still send us.
  const uint32_t guest_view_free = params_.buf_alloc - (rx_cnt_ - last_adv_fwd_cnt_);
  if (guest_view_free < params_.buf_alloc / 2) pending_ |= kCreditUpdate;
}

VsockConnection::Next VsockConnection::OnGuestPacket(const virtio_vsock_hdr& hdr,
                                                     virtio::ChainReader& payload,
                                                     absl::Span<uint8_t> scratch,
                                                     Clock::time_point now) {
  // Every packet carries the guest's receive-buffer view.
  peer_buf_alloc_ = hdr.buf_alloc;
  peer_fwd_cnt_ = hdr.fwd_cnt;
  const uint16_t op = hdr.op;

  if (op == VIRTIO_VSOCK_OP_RST) {
    if (state_ == State::kConnecting) {
      close_reason_ = absl::UnavailableError(absl::StrCat(
          "the guest refused the connection to its port ", key_.peer_port,
          " (nothing listens there): start the guest service first, or retry"));
    }
    return Fail(Next::kCloseSilently, "guest reset the connection");
  }
  if (state_ == State::kConnecting) {
    if (op != VIRTIO_VSOCK_OP_RESPONSE) {
      return Fail(Next::kCloseWithRst,
                  absl::StrCat("guest sent ", OpName(op), " instead of answering our REQUEST"));
    }
    state_ = State::kEstablished;
    deadline_.reset();
    if (origin_ == Origin::kUnixClient) {
      const std::string ok = absl::StrCat("OK ", key_.local_port, "\n");
      if (!WriteToHost(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), false)) {
        return Next::kCloseWithRst;
      }
    } else if (origin_ == Origin::kHandover && done_) {
      ConnectCallback done = std::move(done_);
      done_ = nullptr;
      done(key_.local_port);
    }
    return Next::kKeep;
  }

  switch (op) {
    case VIRTIO_VSOCK_OP_REQUEST:
    case VIRTIO_VSOCK_OP_RESPONSE:
      return Fail(Next::kCloseWithRst,
                  absl::StrCat("guest sent ", OpName(op), " on an established connection"));
    case VIRTIO_VSOCK_OP_SHUTDOWN:
      return HandleShutdown(hdr.flags, now);
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
      return Next::kKeep;  // the credit fields were taken above
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
      pending_ |= kCreditUpdate;
      return Next::kKeep;
    case VIRTIO_VSOCK_OP_RW:
      break;
    default:
      return Fail(Next::kCloseWithRst, absl::StrCat("unexpected ", OpName(op)));
  }

  const uint32_t len = hdr.len;
  if (peer_shut_send_) {
    return Fail(Next::kCloseWithRst, "guest sent data after shutting down its send direction");
  }
  // Bytes the guest has sent beyond the fwd_cnt we last told it: at most buf_alloc.
  const uint64_t in_use = static_cast<uint32_t>(rx_cnt_ - last_adv_fwd_cnt_);
  if (in_use + len > params_.buf_alloc) {
    VsockStats::Add(params_.stats->credit_violations);
    return Fail(Next::kCloseWithRst,
                absl::StrCat("guest sent ", len, " bytes with ", in_use, " of the advertised ",
                             params_.buf_alloc, " already in use: credit exceeded"));
  }
  rx_cnt_ += len;
  VsockStats::Add(params_.stats->tx_bytes, len);
  uint32_t left = len;
  while (left > 0) {
    const uint32_t chunk = std::min<uint32_t>(left, static_cast<uint32_t>(scratch.size()));
    absl::Status s = payload.Read(scratch.data(), chunk);
    if (!s.ok()) return Fail(Next::kCloseWithRst, std::string(s.message()));
    if (!WriteToHost(scratch.data(), chunk, true)) return Next::kCloseWithRst;
    left -= chunk;
  }
  MaybeCreditUpdate();
  return Next::kKeep;
}

VsockConnection::Next VsockConnection::HandleShutdown(uint32_t flags, Clock::time_point now) {
  if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV) peer_shut_rcv_ = true;
  if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND) peer_shut_send_ = true;
  if (peer_shut_rcv_ && peer_shut_send_) {
    // The guest closed: deliver what it sent, then reset.
    if (to_host_.empty()) return Fail(Next::kCloseWithRst, "");
    close_when_flushed_ = true;
    deadline_ = now + params_.shutdown_timeout;
    return Next::kKeep;
  }
  return AfterFlush();
}

VsockConnection::Next VsockConnection::OnHostEvents(uint32_t events, Clock::time_point now) {
  (void)now;
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(host_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    return Fail(Next::kCloseWithRst,
                absl::StrCat("host socket error: ", std::strerror(err != 0 ? err : EIO)));
  }
  if (events & EPOLLHUP) {
    host_hup_ = true;
    if (state_ == State::kConnecting) {
      close_reason_ = absl::AbortedError("the host end closed before the guest answered");
      return Fail(Next::kCloseWithRst, "host client hung up before the guest answered");
    }
    // Closed both ways: what we still hold for it can never be delivered.
    if (!to_host_.empty()) {
      return Fail(Next::kCloseWithRst, "host socket closed with guest data undelivered");
    }
    // Tell the guest the host side is gone (SEND|RCV) if reading will not find the EOF first:
    // EOF already reported as SEND only, or the guest stopped receiving so we read no more.
    if ((host_eof_ || peer_shut_rcv_) && !(sent_shutdown_ & VIRTIO_VSOCK_SHUTDOWN_RCV)) {
      pending_ |= kShutdown;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) host_readable_ = true;
  if ((events & EPOLLOUT) && !to_host_.empty()) {
    if (!FlushToHost()) return Next::kCloseWithRst;
    return AfterFlush();
  }
  return Next::kKeep;
}

VsockConnection::Next VsockConnection::OnTimeout(Clock::time_point now) {
  if (!deadline_.has_value() || now < *deadline_) return Next::kKeep;
  deadline_.reset();
  if (state_ == State::kConnecting) {
    close_reason_ = absl::DeadlineExceededError(absl::StrCat(
        "the guest did not answer the connection request to its port ", key_.peer_port,
        " within ", params_.request_timeout.count(), " ms: is its vsock driver running?"));
    return Fail(Next::kCloseWithRst, "guest did not answer our REQUEST in time");
  }
  return Fail(Next::kCloseWithRst, close_when_flushed_
                                       ? "host socket did not drain before the close timeout"
                                       : "guest did not close after both sides shut down");
}

void VsockConnection::EmitHeader(virtio_vsock_hdr& hdr) {
  hdr.buf_alloc = params_.buf_alloc;
  hdr.fwd_cnt = fwd_cnt_;
  last_adv_fwd_cnt_ = fwd_cnt_;
  // Any header carries the credit, so a pending update is served by this packet.
  pending_ &= ~static_cast<uint32_t>(kCreditUpdate);
}

VsockConnection::RxResult VsockConnection::FillRx(virtio::ChainWriter& writer,
                                                  absl::Span<uint8_t> scratch,
                                                  Clock::time_point now) {
  RxResult result;
  auto emit = [&](virtio_vsock_hdr hdr, absl::Span<const uint8_t> payload) {
    EmitHeader(hdr);
    absl::Status s = WriteRxPacket(writer, hdr, payload);
    if (!s.ok()) {
      result.next = Fail(Next::kCloseWithRst, std::string(s.message()));
      return;
    }
    result.wrote = true;
  };
  const uint64_t cid = params_.guest_cid;

  if (pending_ & kRequest) {
    pending_ &= ~static_cast<uint32_t>(kRequest);
    emit(HostHeader(cid, key_.local_port, key_.peer_port, VIRTIO_VSOCK_OP_REQUEST), {});
    return result;
  }
  if (pending_ & kResponse) {
    pending_ &= ~static_cast<uint32_t>(kResponse);
    emit(HostHeader(cid, key_.local_port, key_.peer_port, VIRTIO_VSOCK_OP_RESPONSE), {});
    return result;
  }
  if (host_readable_ && CanSendData() && writer.remaining() > kHeaderSize) {
    const uint64_t room = writer.remaining() - kHeaderSize;
    const size_t want = static_cast<size_t>(std::min<uint64_t>(
        {room, PeerCredit(), kMaxPayload, static_cast<uint64_t>(scratch.size())}));
    ssize_t n;
    do {
      n = ::recv(host_.get(), scratch.data(), want, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      tx_cnt_ += static_cast<uint32_t>(n);
      VsockStats::Add(params_.stats->rx_bytes, static_cast<uint64_t>(n));
      emit(HostHeader(cid, key_.local_port, key_.peer_port, VIRTIO_VSOCK_OP_RW,
                      static_cast<uint32_t>(n)),
           scratch.first(static_cast<size_t>(n)));
      return result;
    }
    if (n == 0) {
      host_eof_ = true;
      host_readable_ = false;
      pending_ |= kShutdown;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      host_readable_ = false;
    } else {
      result.next = Fail(Next::kCloseWithRst,
                         absl::StrCat("read from the host socket failed: ", std::strerror(errno)));
      return result;
    }
  }
  if (pending_ & kShutdown) {
    pending_ &= ~static_cast<uint32_t>(kShutdown);
    virtio_vsock_hdr hdr =
        HostHeader(cid, key_.local_port, key_.peer_port, VIRTIO_VSOCK_OP_SHUTDOWN);
    uint32_t flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
    if (host_hup_) flags |= VIRTIO_VSOCK_SHUTDOWN_RCV;
    hdr.flags = flags;
    sent_shutdown_ |= flags;
    if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV) deadline_ = now + params_.shutdown_timeout;
    emit(hdr, {});
    return result;
  }
  if (pending_ & kCreditUpdate) {
    emit(HostHeader(cid, key_.local_port, key_.peer_port, VIRTIO_VSOCK_OP_CREDIT_UPDATE), {});
    return result;
  }
  return result;
}

}  // namespace vessel::vsock
