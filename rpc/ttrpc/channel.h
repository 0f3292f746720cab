// Channel: one connected stream socket carrying ttrpc frames, shared by the client and the server.
// Reads are buffered and split into frames; writes are queued and gathered into one writev.
// Reads run on the channel's strand. Send may be called from any thread: when nothing is queued it
// writes at once from the calling thread (no hop to the io thread), else it queues for the strand.
// A frame that breaks the framing (a short read at EOF, a length over 4 MiB, an unknown type)
// closes the channel: after that, the stream can no longer be trusted to be in sync.
#ifndef VESSEL_RPC_TTRPC_CHANNEL_H_
#define VESSEL_RPC_TTRPC_CHANNEL_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/ttrpc/frame.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::ttrpc {

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  using FrameHandler = absl::AnyInvocable<void(const FrameHeader& header, std::string payload)>;
  using CloseHandler = absl::AnyInvocable<void(const absl::Status& reason)>;

  // Takes a connected stream socket (Unix, vsock, one end of a socketpair...). `name` says which
  // peer in log lines and errors.
  static absl::StatusOr<std::shared_ptr<Channel>> Create(boost::asio::io_context& io, ScopedFd fd,
                                                         std::string name);
  ~Channel();

  // Starts reading; the handlers run on the strand. `on_close` runs once, when the peer goes away,
  // a frame breaks the framing, or Close() is called; the handlers are released after it.
  void Start(FrameHandler on_frame, CloseHandler on_close);
  // Queues a frame. Thread-safe; dropped once the channel is closed. `payload` must be at most
  // kMaxPayload bytes (callers check: an oversized message is the caller's error to report).
  void Send(uint32_t stream_id, MessageType type, std::string payload);
  // Thread-safe and idempotent.
  void Close(absl::Status reason);

  Strand& strand() { return strand_; }
  const std::string& name() const { return name_; }
  bool closed() const { return closed_.load(std::memory_order_acquire); }

 private:
  struct OutFrame {
    std::array<uint8_t, kFrameHeaderSize> header;
    std::string payload;
  };

  Channel(boost::asio::io_context& io, std::string name);
  void ReadMore();
  void OnRead(const boost::system::error_code& ec, size_t n);
  // Splits complete frames off the read buffer; false when the channel closed meanwhile.
  bool DispatchFrames();
  // Under write_mu_: writes what it can of `frame` now; queues the rest. False if the fd failed.
  void WriteOrQueueLocked(OutFrame frame);
  void WriteMore();
  void CloseOnStrand(const absl::Status& reason);

  Strand strand_;
  boost::asio::posix::stream_descriptor stream_;
  std::string name_;
  std::atomic<bool> closed_{false};

  FrameHandler on_frame_;
  CloseHandler on_close_;

  std::vector<uint8_t> read_buf_;
  size_t read_len_ = 0;  // valid bytes in read_buf_

  std::mutex write_mu_;
  std::deque<OutFrame> pending_;         // write_mu_
  bool write_in_progress_ = false;       // write_mu_: an async write owns the fd's output
  size_t front_written_ = 0;             // write_mu_: bytes of pending_.front() already sent
  std::vector<OutFrame> writing_;        // write_mu_: frames the strand is writing
  size_t writing_offset_ = 0;            // write_mu_: bytes of writing_ already sent
};

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_CHANNEL_H_
