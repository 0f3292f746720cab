// ttrpc server: a registry of "<service>/<method>" handlers served on any number of listening
// sockets and handed-over connections. Requests on one connection run concurrently and their
// responses go back in whatever order they finish. A request's timeout_nano becomes a deadline:
// when it passes first, the caller gets DeadlineExceeded and the handler sees cancelled().
//
// Bad input from a peer never stops the server: a frame that breaks the framing closes that
// connection (with a log line); a request that does not parse, uses an even stream id, reuses
// a stream id in flight, or names an unknown method is answered with an error status.
#ifndef VESSEL_RPC_TTRPC_SERVER_H_
#define VESSEL_RPC_TTRPC_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::ttrpc {

namespace internal {
class CallState;
class ServerConnection;
struct ServerState;
}  // namespace internal

// What a handler knows about the call it serves.
struct CallContext {
  std::string service;
  std::string method;
  uint32_t stream_id = 0;
  std::string peer;                               // the connection, for log lines
  absl::Time deadline = absl::InfiniteFuture();   // from the request's timeout_nano
  std::vector<std::pair<std::string, std::string>> metadata;

  // Every value sent under `key`, in order.
  std::vector<std::string> MetadataValues(absl::string_view key) const;
  // True once the deadline has passed or the connection is gone: the answer is no longer wanted.
  bool cancelled() const { return cancelled_ && cancelled_->load(std::memory_order_acquire); }

  std::shared_ptr<std::atomic<bool>> cancelled_;
};

// One request in flight. Copyable handle; a handler answers it with Reply, now or later, from any
// thread. Only the first Reply counts. If every copy is dropped unanswered, the caller gets
// Internal ("handler dropped the call") rather than waiting forever.
class ServerCall {
 public:
  const CallContext& context() const;
  const std::string& payload() const;
  // The serialized response message, or the error status to send.
  void Reply(absl::StatusOr<std::string> response) const;

 private:
  friend class internal::ServerConnection;
  explicit ServerCall(std::shared_ptr<internal::CallState> state) : state_(std::move(state)) {}
  std::shared_ptr<internal::CallState> state_;
};

// Runs on the connection's strand (an io_context thread): it must not block. Long or blocking work
// takes the ServerCall elsewhere (see RegisterBlocking in typed.h) and replies from there.
using Handler = std::function<void(ServerCall call)>;

struct ServerOptions {
  // Requests one connection may have in flight before new ones get ResourceExhausted.
  size_t max_in_flight_per_connection = 1024;
  // Connections the server keeps at once; more are accepted and closed with a log line.
  size_t max_connections = 1024;
};

class Server {
 public:
  explicit Server(boost::asio::io_context& io, ServerOptions options = {});
  ~Server();  // Shutdown()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Adds a method; AlreadyExists if "<service>/<method>" is taken. Thread-safe, also while serving.
  absl::Status Register(absl::string_view service, absl::string_view method, Handler handler);

  // Accepts connections on a listening socket (see socket.h) until Shutdown.
  absl::Status Listen(ScopedFd listener, std::string name);
  absl::Status ListenUnix(absl::string_view path);
  // Serves one already-connected socket (the hybrid vsock muxer's fd, a socketpair end).
  absl::Status Serve(ScopedFd connection, std::string name);

  // Stops accepting, closes every connection; calls in flight lose their answers. Idempotent.
  void Shutdown();

  size_t connection_count() const;

 private:
  // The registry and the live connections; shared with connections and listeners, which may
  // outlive the Server by a callback or two.
  boost::asio::io_context& io_;
  std::shared_ptr<internal::ServerState> state_;
};

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_SERVER_H_
