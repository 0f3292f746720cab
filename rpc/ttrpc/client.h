// ttrpc client over one connection: odd stream ids, any number of calls in flight, each with an
// optional timeout (also sent to the server as timeout_nano) and metadata, and cancellable. When
// the connection goes away every pending call fails with Unavailable; none is left hanging.
#ifndef VESSEL_RPC_TTRPC_CLIENT_H_
#define VESSEL_RPC_TTRPC_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rpc/ttrpc/channel.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::ttrpc {

struct CallOptions {
  absl::Duration timeout = absl::InfiniteDuration();
  std::vector<std::pair<std::string, std::string>> metadata;
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  // The response payload, or the call's error status.
  using Callback = absl::AnyInvocable<void(absl::StatusOr<std::string>)>;

  // Takes a connected stream socket. The io_context must be run by some thread (see IoThread).
  static absl::StatusOr<std::shared_ptr<Client>> Create(boost::asio::io_context& io, ScopedFd fd,
                                                        std::string name);
  static absl::StatusOr<std::shared_ptr<Client>> ConnectUnix(boost::asio::io_context& io,
                                                             absl::string_view path);
  // Closes the connection; pending calls fail with Cancelled.
  ~Client();

  // Starts a call and returns its id (the stream id); the request is written from the calling
  // thread when the socket has room. `done` runs exactly once, on the client's strand (it must not
  // block): with the response, the server's error status, DeadlineExceeded, Cancelled, or
  // Unavailable when the connection goes away; if the call cannot start (connection already
  // closed, request too large) it runs at once on the calling thread. Thread-safe.
  uint32_t StartCall(absl::string_view service, absl::string_view method, std::string payload,
                     const CallOptions& options, Callback done);
  // Fails the call with Cancelled now; a late response is dropped. Thread-safe.
  void Cancel(uint32_t call_id);
  // Blocking call, for threads that are not running this client's io_context.
  absl::StatusOr<std::string> Call(absl::string_view service, absl::string_view method,
                                   std::string payload, const CallOptions& options = {});

  // Closes the connection; pending calls fail with Cancelled. Thread-safe, idempotent.
  void Close();
  bool closed() const { return channel_->closed(); }
  const std::string& name() const { return channel_->name(); }

 private:
  struct Pending {
    Callback done;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };

  explicit Client(std::shared_ptr<Channel> channel) : channel_(std::move(channel)) {}
  void Start();
  void OnFrame(const FrameHeader& header, std::string payload);
  void OnClose(const absl::Status& reason);
  void Complete(uint32_t stream_id, absl::StatusOr<std::string> result);
  void FailAll(const absl::Status& status);

  std::shared_ptr<Channel> channel_;
  std::atomic<uint32_t> next_stream_{1};
  std::mutex mu_;
  bool closed_ = false;          // mu_: OnClose ran; new calls fail at once
  absl::Status close_reason_;    // mu_
  absl::flat_hash_map<uint32_t, Pending> pending_;  // mu_
  RateLimiter bad_input_log_;
};

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_CLIENT_H_
