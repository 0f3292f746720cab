#include "rpc/ttrpc/channel.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::ttrpc {
namespace {

constexpr size_t kInitialReadBuffer = 64 * 1024;

// writev that never raises SIGPIPE on a socket whose peer went away (an embedding program need not
// ignore SIGPIPE for us); falls back to writev for fds that are not sockets (a pipe pair).
ssize_t SendV(int fd, iovec* iov, size_t count) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == ENOTSOCK) {
    do {
      n = ::writev(fd, iov, static_cast<int>(count));
    } while (n < 0 && errno == EINTR);
  }
  return n;
}

}  // namespace

Channel::Channel(boost::asio::io_context& io, std::string name)
    : strand_(boost::asio::make_strand(io.get_executor())),
      stream_(strand_),
      name_(std::move(name)),
      read_buf_(kInitialReadBuffer) {}

Channel::~Channel() = default;

absl::StatusOr<std::shared_ptr<Channel>> Channel::Create(boost::asio::io_context& io, ScopedFd fd,
                                                         std::string name) {
  if (!fd.valid()) return absl::InvalidArgumentError(absl::StrCat("ttrpc channel ", name, ": no fd"));
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return ErrnoStatus(absl::StrCat("ttrpc channel ", name, ": set O_NONBLOCK"));
  }
  std::shared_ptr<Channel> channel(new Channel(io, std::move(name)));
  boost::system::error_code ec;
  channel->stream_.assign(fd.get(), ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("ttrpc channel ", channel->name_, ": ", ec.message()));
  }
  fd.release();
  return channel;
}

void Channel::Start(FrameHandler on_frame, CloseHandler on_close) {
  boost::asio::post(strand_, [self = shared_from_this(), on_frame = std::move(on_frame),
                              on_close = std::move(on_close)]() mutable {
    if (self->closed()) {
      on_close(absl::CancelledError(absl::StrCat("ttrpc channel ", self->name_, " closed before start")));
      return;
    }
    self->on_frame_ = std::move(on_frame);
    self->on_close_ = std::move(on_close);
    self->ReadMore();
  });
}

void Channel::ReadMore() {
  if (read_len_ == read_buf_.size()) read_buf_.resize(read_buf_.size() * 2);
  stream_.async_read_some(
      boost::asio::buffer(read_buf_.data() + read_len_, read_buf_.size() - read_len_),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        self->OnRead(ec, n);
      });
}

void Channel::OnRead(const boost::system::error_code& ec, size_t n) {
  if (closed()) return;
  if (ec) {
    if (ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset) {
      if (read_len_ > 0) {
        CloseOnStrand(absl::DataLossError(absl::StrCat("ttrpc peer ", name_, " closed mid-frame (",
                                                       read_len_, " bytes of a frame unread)")));
      } else {
        CloseOnStrand(absl::UnavailableError(absl::StrCat("ttrpc peer ", name_, " closed the connection")));
      }
    } else {
      CloseOnStrand(absl::UnavailableError(absl::StrCat("ttrpc read from ", name_, ": ", ec.message())));
    }
    return;
  }
  read_len_ += n;
  if (!DispatchFrames()) return;
  ReadMore();
}

bool Channel::DispatchFrames() {
  size_t off = 0;
  while (read_len_ - off >= kFrameHeaderSize) {
    absl::StatusOr<FrameHeader> header =
        DecodeFrameHeader(absl::MakeConstSpan(read_buf_.data() + off, kFrameHeaderSize));
    if (!header.ok()) {
      LogWarning("ttrpc: closing connection ", name_, ": ", header.status().message());
      CloseOnStrand(header.status());
      return false;
    }
    size_t total = kFrameHeaderSize + header->length;
    if (read_len_ - off < total) {
      // Make room for the whole frame (at most 4 MiB + header, checked above).
      if (read_buf_.size() < total) read_buf_.resize(total);
      break;
    }
    std::string payload(reinterpret_cast<const char*>(read_buf_.data() + off + kFrameHeaderSize),
                        header->length);
    off += total;
    on_frame_(*header, std::move(payload));
    if (closed()) return false;
  }
  if (off > 0) {
    std::memmove(read_buf_.data(), read_buf_.data() + off, read_len_ - off);
    read_len_ -= off;
  }
  // Give back a buffer grown for one big frame once it is no longer needed.
  if (read_len_ == 0 && read_buf_.size() > 4 * kInitialReadBuffer) {
    read_buf_.resize(kInitialReadBuffer);
    read_buf_.shrink_to_fit();
  }
  return true;
}

void Channel::Send(uint32_t stream_id, MessageType type, std::string payload) {
  if (closed()) return;
  OutFrame frame;
  frame.header = EncodeFrameHeader(FrameHeader{static_cast<uint32_t>(payload.size()), stream_id,
                                               static_cast<uint8_t>(type), 0});
  frame.payload = std::move(payload);
  std::lock_guard<std::mutex> lock(write_mu_);
  WriteOrQueueLocked(std::move(frame));
}

void Channel::WriteOrQueueLocked(OutFrame frame) {
  if (write_in_progress_ || !pending_.empty()) {
    pending_.push_back(std::move(frame));
    return;
  }
  // Nothing queued: try to write it all now, from this thread.
  size_t total = kFrameHeaderSize + frame.payload.size();
  iovec iov[2] = {{frame.header.data(), kFrameHeaderSize},
                  {frame.payload.data(), frame.payload.size()}};
  ssize_t n = SendV(stream_.native_handle(), iov, frame.payload.empty() ? 1 : 2);
  if (n == static_cast<ssize_t>(total)) return;
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    // Not Close(): on the strand it would take write_mu_ again.
    absl::Status reason = absl::UnavailableError(
        absl::StrCat("ttrpc write to ", name_, ": ", ErrnoStatus("sendmsg").message()));
    boost::asio::post(strand_, [self = shared_from_this(), reason] { self->CloseOnStrand(reason); });
    return;
  }
  // The socket is full: the strand finishes this frame when it can.
  front_written_ = n > 0 ? static_cast<size_t>(n) : 0;
  pending_.push_back(std::move(frame));
  write_in_progress_ = true;
  boost::asio::post(strand_, [self = shared_from_this()] { self->WriteMore(); });
}

void Channel::WriteMore() {
  std::lock_guard<std::mutex> lock(write_mu_);
  for (;;) {
    if (closed()) {
      write_in_progress_ = false;
      pending_.clear();
      writing_.clear();
      return;
    }
    if (writing_.empty()) {
      if (pending_.empty()) {
        write_in_progress_ = false;
        return;
      }
      // Gather what is queued (bounded, so one sendmsg stays a sane size).
      size_t bytes = 0;
      writing_offset_ = front_written_;
      front_written_ = 0;
      while (!pending_.empty() && writing_.size() < 64 && bytes < (1u << 20)) {
        bytes += kFrameHeaderSize + pending_.front().payload.size();
        writing_.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
    }
    // The iovecs of what is left of writing_, from writing_offset_ on.
    std::vector<iovec> iov;
    iov.reserve(writing_.size() * 2);
    size_t skip = writing_offset_;
    auto add = [&](const void* data, size_t len) {
      if (skip >= len) {
        skip -= len;
        return;
      }
      iov.push_back({const_cast<char*>(static_cast<const char*>(data)) + skip, len - skip});
      skip = 0;
    };
    for (const OutFrame& f : writing_) {
      add(f.header.data(), kFrameHeaderSize);
      add(f.payload.data(), f.payload.size());
    }
    if (iov.empty()) {
      writing_.clear();
      continue;
    }
    ssize_t n = SendV(stream_.native_handle(), iov.data(), std::min<size_t>(iov.size(), IOV_MAX));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      stream_.async_wait(boost::asio::posix::descriptor_base::wait_write,
                         [self = shared_from_this()](const boost::system::error_code& ec) {
                           if (ec) return;  // closed
                           self->WriteMore();
                         });
      return;
    }
    if (n < 0) {
      absl::Status reason = absl::UnavailableError(
          absl::StrCat("ttrpc write to ", name_, ": ", ErrnoStatus("sendmsg").message()));
      boost::asio::post(strand_, [self = shared_from_this(), reason] { self->CloseOnStrand(reason); });
      return;
    }
    writing_offset_ += static_cast<size_t>(n);
    size_t total = 0;
    for (const OutFrame& f : writing_) total += kFrameHeaderSize + f.payload.size();
    if (writing_offset_ >= total) writing_.clear();
  }
}

void Channel::Close(absl::Status reason) {
  if (strand_.running_in_this_thread()) {
    CloseOnStrand(reason);
    return;
  }
  boost::asio::post(strand_, [self = shared_from_this(), reason = std::move(reason)] {
    self->CloseOnStrand(reason);
  });
}

void Channel::CloseOnStrand(const absl::Status& reason) {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  boost::system::error_code ignored;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    pending_.clear();
    stream_.close(ignored);
  }
  on_frame_ = nullptr;
  CloseHandler on_close = std::move(on_close_);
  on_close_ = nullptr;
  if (on_close) on_close(reason);
}

}  // namespace vessel::ttrpc
