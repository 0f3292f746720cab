#include "rpc/ttrpc/client.h"

#include <chrono>
#include <condition_variable>

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/status.h"
#include "rpc/ttrpc/ttrpc.pb.h"
#include "vmm/base/errors.h"

namespace vessel::ttrpc {

absl::StatusOr<std::shared_ptr<Client>> Client::Create(boost::asio::io_context& io, ScopedFd fd,
                                                       std::string name) {
  VESSEL_ASSIGN_OR_RETURN(std::shared_ptr<Channel> channel,
                          Channel::Create(io, std::move(fd), std::move(name)));
  std::shared_ptr<Client> client(new Client(std::move(channel)));
  client->Start();
  return client;
}

absl::StatusOr<std::shared_ptr<Client>> Client::ConnectUnix(boost::asio::io_context& io,
                                                            absl::string_view path) {
  VESSEL_ASSIGN_OR_RETURN(ScopedFd fd, ttrpc::ConnectUnix(path));
  return Create(io, std::move(fd), std::string(path));
}

Client::~Client() {
  channel_->Close(absl::CancelledError("ttrpc client closed"));
  // No strand handler of ours can run any more (each holds a reference).
  FailAll(absl::CancelledError(absl::StrCat("ttrpc client for ", channel_->name(), " was destroyed")));
}

void Client::Start() {
  std::weak_ptr<Client> weak = weak_from_this();
  channel_->Start(
      [weak](const FrameHeader& header, std::string payload) {
        if (auto self = weak.lock()) self->OnFrame(header, std::move(payload));
      },
      [weak](const absl::Status& reason) {
        if (auto self = weak.lock()) self->OnClose(reason);
      });
}

uint32_t Client::StartCall(absl::string_view service, absl::string_view method, std::string payload,
                           const CallOptions& options, Callback done) {
  // Odd ids, as ttrpc wants of clients; after 2^31 calls the counter wraps to 1 again.
  uint32_t id = next_stream_.fetch_add(2, std::memory_order_relaxed);
  Request request;
  request.set_service(std::string(service));
  request.set_method(std::string(method));
  request.set_payload(std::move(payload));
  if (options.timeout != absl::InfiniteDuration()) {
    request.set_timeout_nano(std::max<int64_t>(1, absl::ToInt64Nanoseconds(options.timeout)));
  }
  for (const auto& [k, v] : options.metadata) {
    KeyValue* kv = request.add_metadata();
    kv->set_key(k);
    kv->set_value(v);
  }
  std::string bytes = request.SerializeAsString();
  if (bytes.size() > kMaxPayload) {
    done(absl::ResourceExhaustedError(absl::StrCat("ttrpc request of ", bytes.size(), " bytes exceeds the ",
                                                   kMaxPayload, "-byte frame limit")));
    return id;
  }
  Pending pending;
  pending.done = std::move(done);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_ || channel_->closed()) {
      absl::Status reason = absl::UnavailableError(absl::StrCat(
          "ttrpc connection ", channel_->name(), " is closed: ", close_reason_.message()));
      lock.unlock();
      pending.done(reason);
      return id;
    }
    if (options.timeout != absl::InfiniteDuration()) {
      // Armed before the request leaves, so the expiry can only race with the answer on the strand.
      pending.timer = std::make_unique<boost::asio::steady_timer>(channel_->strand());
      pending.timer->expires_after(absl::ToChronoNanoseconds(options.timeout));
      pending.timer->async_wait([weak = weak_from_this(), id, timeout = options.timeout](
                                    const boost::system::error_code& ec) {
        if (ec) return;
        if (auto client = weak.lock()) {
          client->Complete(id, absl::DeadlineExceededError(absl::StrCat(
                                   "ttrpc call timed out after ", absl::FormatDuration(timeout))));
        }
      });
    }
    pending_.emplace(id, std::move(pending));
  }
  channel_->Send(id, MessageType::kRequest, std::move(bytes));
  return id;
}

void Client::Cancel(uint32_t call_id) {
  boost::asio::post(channel_->strand(), [self = shared_from_this(), call_id] {
    self->Complete(call_id, absl::CancelledError("ttrpc call cancelled by the caller"));
  });
}

absl::StatusOr<std::string> Client::Call(absl::string_view service, absl::string_view method,
                                         std::string payload, const CallOptions& options) {
  if (channel_->strand().running_in_this_thread()) {
    return absl::FailedPreconditionError(
        "blocking ttrpc Call on the client's own strand would deadlock; use StartCall");
  }
  // The answer usually comes back within tens of microseconds: spin briefly before sleeping, which
  // saves a futex wake-up on the round trip.
  struct Waiter {
    std::atomic<bool> ready{false};
    std::mutex mu;
    std::condition_variable cv;
    absl::StatusOr<std::string> result;
  };
  auto waiter = std::make_shared<Waiter>();
  StartCall(service, method, std::move(payload), options, [waiter](absl::StatusOr<std::string> result) {
    std::lock_guard<std::mutex> lock(waiter->mu);
    waiter->result = std::move(result);
    waiter->ready.store(true, std::memory_order_release);
    waiter->cv.notify_one();
  });
  auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  while (!waiter->ready.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until) {
    __builtin_ia32_pause();
  }
  std::unique_lock<std::mutex> lock(waiter->mu);
  waiter->cv.wait(lock, [&] { return waiter->ready.load(std::memory_order_acquire); });
  return std::move(waiter->result);
}

void Client::Close() { channel_->Close(absl::CancelledError("ttrpc client closed")); }

void Client::OnFrame(const FrameHeader& header, std::string payload) {
  if (header.type != static_cast<uint8_t>(MessageType::kResponse)) {
    if (bad_input_log_.Allow()) {
      LogWarning("ttrpc client: ignoring a ", MessageTypeName(header.type), " frame from ",
                 channel_->name(), " (stream ", header.stream_id, ")");
    }
    return;
  }
  Response response;
  if (!response.ParseFromString(payload)) {
    Complete(header.stream_id,
             absl::DataLossError(absl::StrCat("ttrpc response from ", channel_->name(),
                                              " does not parse as a ttrpc Response message")));
    return;
  }
  if (response.has_status() && response.status().code() != 0) {
    Complete(header.stream_id, StatusFromProto(response.status()));
    return;
  }
  Complete(header.stream_id, std::move(*response.mutable_payload()));
}

void Client::Complete(uint32_t stream_id, absl::StatusOr<std::string> result) {
  Pending pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(stream_id);
    if (it == pending_.end()) return;  // timed out or cancelled already: a late answer
    pending = std::move(it->second);
    pending_.erase(it);
  }
  if (pending.timer) pending.timer->cancel();
  pending.done(std::move(result));
}

void Client::OnClose(const absl::Status& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    close_reason_ = reason;
  }
  FailAll(absl::UnavailableError(
      absl::StrCat("ttrpc connection ", channel_->name(), " closed: ", reason.message())));
}

void Client::FailAll(const absl::Status& status) {
  absl::flat_hash_map<uint32_t, Pending> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(pending_);
  }
  for (auto& [id, p] : pending) {
    if (p.timer) p.timer->cancel();
    p.done(status);
  }
}

}  // namespace vessel::ttrpc
