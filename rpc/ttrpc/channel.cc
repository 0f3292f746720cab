#include "rpc/ttrpc/channel.h"

#include <fcntl.h>

#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::ttrpc {
namespace {

constexpr size_t kInitialReadBuffer = 64 * 1024;

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
  if (strand_.running_in_this_thread()) {
    QueueFrame(std::move(frame));
  } else {
    boost::asio::post(strand_, [self = shared_from_this(), frame = std::move(frame)]() mutable {
      self->QueueFrame(std::move(frame));
    });
  }
}

void Channel::QueueFrame(OutFrame frame) {
  if (closed()) return;
  pending_.push_back(std::move(frame));
  if (!write_in_progress_) WriteMore();
}

void Channel::WriteMore() {
  if (pending_.empty() || closed()) {
    write_in_progress_ = false;
    return;
  }
  write_in_progress_ = true;
  writing_.clear();
  std::vector<boost::asio::const_buffer> buffers;
  // Gather what is queued (bounded, so one writev stays a sane size).
  size_t bytes = 0;
  while (!pending_.empty() && writing_.size() < 64 && bytes < (1u << 20)) {
    bytes += kFrameHeaderSize + pending_.front().payload.size();
    writing_.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
  buffers.reserve(writing_.size() * 2);
  for (const OutFrame& f : writing_) {
    buffers.push_back(boost::asio::buffer(f.header));
    if (!f.payload.empty()) buffers.push_back(boost::asio::buffer(f.payload));
  }
  boost::asio::async_write(stream_, buffers,
                           [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                             if (ec) {
                               self->CloseOnStrand(absl::UnavailableError(absl::StrCat(
                                   "ttrpc write to ", self->name_, ": ", ec.message())));
                               return;
                             }
                             self->WriteMore();
                           });
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
  stream_.close(ignored);
  pending_.clear();
  on_frame_ = nullptr;
  CloseHandler on_close = std::move(on_close_);
  on_close_ = nullptr;
  if (on_close) on_close(reason);
}

}  // namespace vessel::ttrpc
