#include "rpc/ttrpc/server.h"

#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "absl/strings/str_cat.h"
#include "rpc/ttrpc/channel.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/status.h"
#include "rpc/ttrpc/ttrpc.pb.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::ttrpc {

class Listener;
using MethodMap = absl::flat_hash_map<std::string, std::shared_ptr<const Handler>>;

namespace internal {
class ServerConnection;
struct ServerState {
  explicit ServerState(boost::asio::io_context& io_context, ServerOptions opts)
      : io(io_context), options(opts) {}
  boost::asio::io_context& io;
  const ServerOptions options;
  RateLimiter bad_input_log;

  std::mutex mu;
  absl::flat_hash_map<std::string, MethodMap> services;
  bool shut_down = false;
  uint64_t next_connection = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<ServerConnection>> connections;
  std::vector<std::shared_ptr<Listener>> listeners;

  // Finds the handler or says why there is none.
  absl::StatusOr<std::shared_ptr<const Handler>> Lookup(const std::string& service,
                                                        const std::string& method);
  void AddConnection(std::shared_ptr<ServerState> self, ScopedFd fd, std::string name);
  void RemoveConnection(uint64_t id);
};

}  // namespace internal

namespace internal {

class CallState {
 public:
  CallState(CallContext context, std::string payload, std::weak_ptr<ServerConnection> connection)
      : context_(std::move(context)), payload_(std::move(payload)), connection_(std::move(connection)) {}
  ~CallState();
  void Reply(absl::StatusOr<std::string> response);
  const CallContext& context() const { return context_; }
  const std::string& payload() const { return payload_; }

 private:
  CallContext context_;
  std::string payload_;
  std::weak_ptr<ServerConnection> connection_;
  std::atomic<bool> replied_{false};
};

class ServerConnection : public std::enable_shared_from_this<ServerConnection> {
 public:
  ServerConnection(std::shared_ptr<Channel> channel, std::shared_ptr<internal::ServerState> state, uint64_t id)
      : channel_(std::move(channel)), state_(std::move(state)), id_(id) {}

  void Start();
  void Close(const absl::Status& reason) { channel_->Close(reason); }
  // Any thread: sends the answer for `stream_id` if that call is still waiting for one.
  void Finish(uint32_t stream_id, absl::StatusOr<std::string> response);

 private:
  struct InFlight {
    std::unique_ptr<boost::asio::steady_timer> timer;
    std::shared_ptr<std::atomic<bool>> cancelled;
  };

  void OnFrame(const FrameHeader& header, std::string payload);
  void OnRequest(uint32_t stream_id, std::string payload);
  void OnClose(const absl::Status& reason);
  void FinishOnStrand(uint32_t stream_id, absl::StatusOr<std::string> response);
  void SendResponse(uint32_t stream_id, const absl::StatusOr<std::string>& response);
  void Refuse(uint32_t stream_id, const absl::Status& status);

  std::shared_ptr<Channel> channel_;
  std::shared_ptr<internal::ServerState> state_;
  const uint64_t id_;
  absl::flat_hash_map<uint32_t, InFlight> in_flight_;  // strand only
};

CallState::~CallState() {
  if (!replied_.load(std::memory_order_acquire)) {
    Reply(absl::InternalError(absl::StrCat("ttrpc handler for ", context_.service, "/",
                                           context_.method, " dropped the call without an answer")));
  }
}

void CallState::Reply(absl::StatusOr<std::string> response) {
  if (replied_.exchange(true, std::memory_order_acq_rel)) return;
  if (std::shared_ptr<ServerConnection> conn = connection_.lock()) {
    conn->Finish(context_.stream_id, std::move(response));
  }
}

void ServerConnection::Start() {
  std::weak_ptr<ServerConnection> weak = weak_from_this();
  channel_->Start(
      [weak](const FrameHeader& header, std::string payload) {
        if (auto self = weak.lock()) self->OnFrame(header, std::move(payload));
      },
      [weak](const absl::Status& reason) {
        if (auto self = weak.lock()) self->OnClose(reason);
      });
}

void ServerConnection::OnClose(const absl::Status& reason) {
  for (auto& [stream, call] : in_flight_) {
    call.cancelled->store(true, std::memory_order_release);
    if (call.timer) call.timer->cancel();
  }
  in_flight_.clear();
  if (!absl::IsUnavailable(reason) && !absl::IsCancelled(reason)) {
    LogWarning("ttrpc server: connection ", channel_->name(), " closed: ", reason.message());
  }
  state_->RemoveConnection(id_);  // may drop the last owning reference to this
}

void ServerConnection::OnFrame(const FrameHeader& header, std::string payload) {
  switch (static_cast<MessageType>(header.type)) {
    case MessageType::kRequest:
      OnRequest(header.stream_id, std::move(payload));
      return;
    case MessageType::kData:
      Refuse(header.stream_id,
             absl::UnimplementedError(absl::StrCat(
                 "ttrpc streaming is not supported by this server (data frame, flags 0x",
                 absl::Hex(header.flags), ")")));
      return;
    case MessageType::kResponse:
      if (state_->bad_input_log.Allow()) {
        LogWarning("ttrpc server: ignoring a response frame from client ", channel_->name(),
                   " (stream ", header.stream_id, ")");
      }
      return;
  }
}

void ServerConnection::Refuse(uint32_t stream_id, const absl::Status& status) {
  if (state_->bad_input_log.Allow()) {
    LogWarning("ttrpc server: refusing stream ", stream_id, " from ", channel_->name(), ": ",
               status.message());
  }
  SendResponse(stream_id, status);
}

void ServerConnection::OnRequest(uint32_t stream_id, std::string payload) {
  Request request;
  if (!request.ParseFromString(payload)) {
    Refuse(stream_id, absl::InvalidArgumentError("ttrpc request does not parse as a ttrpc Request message"));
    return;
  }
  if (stream_id % 2 != 1) {
    Refuse(stream_id, absl::InvalidArgumentError(absl::StrCat(
                          "ttrpc stream id ", stream_id, " is even; clients must use odd ids")));
    return;
  }
  if (in_flight_.contains(stream_id)) {
    Refuse(stream_id, absl::InvalidArgumentError(
                          absl::StrCat("ttrpc stream id ", stream_id, " is already in flight")));
    return;
  }
  if (in_flight_.size() >= state_->options.max_in_flight_per_connection) {
    Refuse(stream_id, absl::ResourceExhaustedError(absl::StrCat(
                          "ttrpc connection has ", in_flight_.size(),
                          " calls in flight, the server's limit; retry when some finish")));
    return;
  }
  absl::StatusOr<std::shared_ptr<const Handler>> handler =
      state_->Lookup(request.service(), request.method());
  if (!handler.ok()) {
    SendResponse(stream_id, handler.status());
    return;
  }

  CallContext context;
  context.service = std::move(*request.mutable_service());
  context.method = std::move(*request.mutable_method());
  context.stream_id = stream_id;
  context.peer = channel_->name();
  context.metadata.reserve(request.metadata_size());
  for (KeyValue& kv : *request.mutable_metadata()) {
    context.metadata.emplace_back(std::move(*kv.mutable_key()), std::move(*kv.mutable_value()));
  }
  context.cancelled_ = std::make_shared<std::atomic<bool>>(false);

  InFlight entry;
  entry.cancelled = context.cancelled_;
  if (request.timeout_nano() > 0) {
    absl::Duration timeout = absl::Nanoseconds(request.timeout_nano());
    context.deadline = absl::Now() + timeout;
    entry.timer = std::make_unique<boost::asio::steady_timer>(channel_->strand());
    entry.timer->expires_after(std::chrono::nanoseconds(request.timeout_nano()));
    entry.timer->async_wait([weak = weak_from_this(), stream_id, timeout,
                             what = absl::StrCat(context.service, "/", context.method)](
                                const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: answered in time
      auto self = weak.lock();
      if (!self) return;
      auto it = self->in_flight_.find(stream_id);
      if (it == self->in_flight_.end()) return;
      it->second.cancelled->store(true, std::memory_order_release);
      self->FinishOnStrand(stream_id, absl::DeadlineExceededError(absl::StrCat(
                                          "ttrpc deadline of ", absl::FormatDuration(timeout),
                                          " passed before ", what, " answered")));
    });
  }
  in_flight_.emplace(stream_id, std::move(entry));

  auto call_state = std::make_shared<CallState>(std::move(context),
                                                std::move(*request.mutable_payload()), weak_from_this());
  (**handler)(ServerCall(std::move(call_state)));
}

void ServerConnection::Finish(uint32_t stream_id, absl::StatusOr<std::string> response) {
  if (channel_->strand().running_in_this_thread()) {
    FinishOnStrand(stream_id, std::move(response));
    return;
  }
  boost::asio::post(channel_->strand(), [self = shared_from_this(), stream_id,
                                         response = std::move(response)]() mutable {
    self->FinishOnStrand(stream_id, std::move(response));
  });
}

void ServerConnection::FinishOnStrand(uint32_t stream_id, absl::StatusOr<std::string> response) {
  auto it = in_flight_.find(stream_id);
  if (it == in_flight_.end()) return;  // answered already (deadline) or connection closed
  if (it->second.timer) it->second.timer->cancel();
  in_flight_.erase(it);
  SendResponse(stream_id, response);
}

void ServerConnection::SendResponse(uint32_t stream_id, const absl::StatusOr<std::string>& response) {
  Response message;
  if (response.ok()) {
    message.mutable_status();  // code 0, as the Go server sends
    message.set_payload(*response);
  } else {
    StatusToProto(response.status(), message.mutable_status());
  }
  std::string bytes = message.SerializeAsString();
  if (bytes.size() > kMaxPayload) {
    message.Clear();
    StatusToProto(absl::ResourceExhaustedError(absl::StrCat(
                      "ttrpc response of ", bytes.size(), " bytes exceeds the ", kMaxPayload,
                      "-byte frame limit")),
                  message.mutable_status());
    bytes = message.SerializeAsString();
  }
  channel_->Send(stream_id, MessageType::kResponse, std::move(bytes));
}

}  // namespace internal

// Accepts connections on one listening socket.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(boost::asio::io_context& io, std::shared_ptr<internal::ServerState> state, std::string name)
      : strand_(boost::asio::make_strand(io.get_executor())),
        descriptor_(strand_),
        retry_timer_(strand_),
        state_(std::move(state)), name_(std::move(name)) {}

  absl::Status Start(ScopedFd fd) {
    boost::system::error_code ec;
    descriptor_.assign(fd.get(), ec);
    if (ec) return absl::InternalError(absl::StrCat("ttrpc listener ", name_, ": ", ec.message()));
    fd_ = fd.release();
    descriptor_.non_blocking(true, ec);
    Wait();
    return absl::OkStatus();
  }

  void Close() {
    boost::asio::post(strand_, [self = shared_from_this()] {
      boost::system::error_code ignored;
      self->retry_timer_.cancel();
      self->descriptor_.close(ignored);
    });
  }

 private:
  void Wait() {
    descriptor_.async_wait(boost::asio::posix::descriptor_base::wait_read,
                           [self = shared_from_this()](const boost::system::error_code& ec) {
                             if (ec) return;  // closed
                             self->AcceptReady();
                           });
  }

  void AcceptReady() {
    for (;;) {
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        state_->AddConnection(state_, ScopedFd(fd), absl::StrCat(name_, "#", ++accepted_));
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // Out of fds or memory: say so and try again shortly instead of spinning.
      if (log_.Allow()) LogError("ttrpc server: accept on ", name_, ": ", ErrnoStatus("accept4").message());
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) self->Wait();
      });
      return;
    }
    Wait();
  }

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::posix::stream_descriptor descriptor_;
  boost::asio::steady_timer retry_timer_;
  int fd_ = -1;  // owned by descriptor_
  std::shared_ptr<internal::ServerState> state_;
  std::string name_;
  uint64_t accepted_ = 0;
  RateLimiter log_;
};

absl::StatusOr<std::shared_ptr<const Handler>> internal::ServerState::Lookup(const std::string& service,
                                                                     const std::string& method) {
  std::lock_guard<std::mutex> lock(mu);
  auto s = services.find(service);
  if (s == services.end()) {
    return absl::UnimplementedError(absl::StrCat("ttrpc: unknown service ", service));
  }
  auto m = s->second.find(method);
  if (m == s->second.end()) {
    return absl::UnimplementedError(absl::StrCat("ttrpc: unknown method ", method, " of service ", service));
  }
  return m->second;
}

void internal::ServerState::AddConnection(std::shared_ptr<ServerState> self, ScopedFd fd, std::string name) {
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io, std::move(fd), name);
  if (!channel.ok()) {
    LogError("ttrpc server: cannot serve ", name, ": ", channel.status().message());
    return;
  }
  std::shared_ptr<internal::ServerConnection> conn;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (shut_down) return;  // the fd closes with the channel
    if (connections.size() >= options.max_connections) {
      if (bad_input_log.Allow()) {
        LogWarning("ttrpc server: refusing connection ", name, ": already ", connections.size(),
                   " connections (the limit)");
      }
      return;
    }
    uint64_t id = next_connection++;
    conn = std::make_shared<internal::ServerConnection>(*channel, self, id);
    connections.emplace(id, conn);
  }
  conn->Start();
}

void internal::ServerState::RemoveConnection(uint64_t id) {
  std::shared_ptr<internal::ServerConnection> conn;  // released outside the lock
  std::lock_guard<std::mutex> lock(mu);
  auto it = connections.find(id);
  if (it == connections.end()) return;
  conn = std::move(it->second);
  connections.erase(it);
}

std::vector<std::string> CallContext::MetadataValues(absl::string_view key) const {
  std::vector<std::string> values;
  for (const auto& [k, v] : metadata) {
    if (k == key) values.push_back(v);
  }
  return values;
}

const CallContext& ServerCall::context() const { return state_->context(); }
const std::string& ServerCall::payload() const { return state_->payload(); }
void ServerCall::Reply(absl::StatusOr<std::string> response) const { state_->Reply(std::move(response)); }

Server::Server(boost::asio::io_context& io, ServerOptions options)
    : io_(io), state_(std::make_shared<internal::ServerState>(io, options)) {}

Server::~Server() { Shutdown(); }

absl::Status Server::Register(absl::string_view service, absl::string_view method, Handler handler) {
  if (service.empty() || method.empty() || !handler) {
    return absl::InvalidArgumentError("ttrpc Register needs a service, a method and a handler");
  }
  std::lock_guard<std::mutex> lock(state_->mu);
  MethodMap& methods = state_->services[std::string(service)];
  auto [it, inserted] =
      methods.emplace(std::string(method), std::make_shared<const Handler>(std::move(handler)));
  if (!inserted) {
    return absl::AlreadyExistsError(absl::StrCat("ttrpc method ", service, "/", method, " is already registered"));
  }
  return absl::OkStatus();
}

absl::Status Server::Listen(ScopedFd listener, std::string name) {
  auto l = std::make_shared<Listener>(io_, state_, std::move(name));
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->shut_down) return absl::FailedPreconditionError("ttrpc server is shut down");
    state_->listeners.push_back(l);
  }
  return l->Start(std::move(listener));
}

absl::Status Server::ListenUnix(absl::string_view path) {
  VESSEL_ASSIGN_OR_RETURN(ScopedFd fd, ttrpc::ListenUnix(path));
  return Listen(std::move(fd), std::string(path));
}

absl::Status Server::Serve(ScopedFd connection, std::string name) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->shut_down) return absl::FailedPreconditionError("ttrpc server is shut down");
  }
  state_->AddConnection(state_, std::move(connection), std::move(name));
  return absl::OkStatus();
}

void Server::Shutdown() {
  std::vector<std::shared_ptr<Listener>> listeners;
  absl::flat_hash_map<uint64_t, std::shared_ptr<internal::ServerConnection>> connections;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->shut_down = true;
    listeners.swap(state_->listeners);
    connections.swap(state_->connections);
  }
  for (auto& l : listeners) l->Close();
  for (auto& [id, c] : connections) c->Close(absl::CancelledError("ttrpc server shut down"));
}

size_t Server::connection_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->connections.size();
}

}  // namespace vessel::ttrpc
