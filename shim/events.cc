#include "shim/events.h"

#include <google/protobuf/empty.pb.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/typed.h"

namespace vessel::shim {

namespace ev = containerd::services::events::ttrpc::v1;

void ToTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  timespec ts = absl::ToTimespec(t);
  out->set_seconds(ts.tv_sec);
  out->set_nanos(static_cast<int32_t>(ts.tv_nsec));
}

ev::ForwardRequest MakeForwardRequest(absl::string_view ns, absl::string_view topic,
                                      const google::protobuf::Message& event, absl::Time now) {
  ev::ForwardRequest req;
  ev::Envelope* e = req.mutable_envelope();
  ToTimestamp(now, e->mutable_timestamp());
  e->set_namespace_(std::string(ns));
  e->set_topic(std::string(topic));
  e->mutable_event()->set_type_url(event.GetDescriptor()->full_name());
  e->mutable_event()->set_value(event.SerializeAsString());
  return req;
}

EventPublisher::EventPublisher(std::string ns, Forward forward, ShimLog* log)
    : ns_(std::move(ns)), forward_(std::move(forward)), log_(log) {
  sender_ = std::thread([this] { Run(); });
}

EventPublisher::~EventPublisher() { Close(absl::Seconds(2)); }

void EventPublisher::Publish(absl::string_view topic, const google::protobuf::Message& event) {
  ev::ForwardRequest req = MakeForwardRequest(ns_, topic, event, absl::Now());
  if (log_ != nullptr) log_->Debug(absl::StrCat("event ", topic, " ", event.ShortDebugString()));
  std::lock_guard<std::mutex> lock(mu_);
  if (closing_) {
    if (log_ != nullptr) log_->Warn(absl::StrCat("event ", topic, " dropped: the shim is exiting"));
    return;
  }
  queue_.push_back(std::move(req));
  cv_.notify_all();
}

void EventPublisher::Close(absl::Duration flush) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closing_) {
      closing_ = true;
      flush_deadline_ = absl::Now() + flush;
    }
    cv_.notify_all();
  }
  if (sender_.joinable() && sender_.get_id() != std::this_thread::get_id()) sender_.join();
}

void EventPublisher::Run() {
  constexpr int kAttempts = 5;
  for (;;) {
    ev::ForwardRequest req;
    absl::Time deadline;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closing and everything sent
      if (closing_ && absl::Now() > flush_deadline_) {
        if (log_ != nullptr) {
          log_->Warn(absl::StrCat(queue_.size(), " events not sent: containerd did not take them in time"));
        }
        return;
      }
      req = std::move(queue_.front());
      queue_.pop_front();
      deadline = flush_deadline_;
    }
    absl::Status s;
    absl::Duration backoff = absl::Milliseconds(50);
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      s = forward_(req);
      if (s.ok() || absl::Now() + backoff > deadline) break;
      absl::SleepFor(backoff);
      backoff *= 2;
    }
    if (!s.ok() && log_ != nullptr) {
      log_->Error(absl::StrCat("event ", req.envelope().topic(), " dropped after ", kAttempts,
                               " attempts: ", s.ToString()));
    }
  }
}

EventPublisher::Forward EventPublisher::TtrpcForward(boost::asio::io_context& io, std::string ttrpc_address,
                                                     ShimLog* log) {
  absl::string_view path = ttrpc_address;
  absl::ConsumePrefix(&path, "unix://");
  if (path.empty()) {
    auto warned = std::make_shared<bool>(false);
    return [log, warned](const ev::ForwardRequest& req) {
      if (!*warned && log != nullptr) {
        log->Warn(absl::StrCat("TTRPC_ADDRESS is not set: task events (", req.envelope().topic(),
                               " and later) are not sent to containerd"));
      }
      *warned = true;
      return absl::OkStatus();
    };
  }
  // Only the sender thread calls this: no lock needed for the cached client.
  auto client = std::make_shared<std::shared_ptr<ttrpc::Client>>();
  return [&io, client, path = std::string(path)](const ev::ForwardRequest& req) -> absl::Status {
    if (*client == nullptr || (*client)->closed()) {
      absl::StatusOr<std::shared_ptr<ttrpc::Client>> c = ttrpc::Client::ConnectUnix(io, path);
      if (!c.ok()) {
        return absl::UnavailableError(absl::StrCat("connect to containerd's ttrpc socket ", path, ": ",
                                                   c.status().message()));
      }
      *client = std::move(*c);
    }
    ttrpc::CallOptions options;
    options.timeout = absl::Seconds(5);
    return ttrpc::CallTyped<google::protobuf::Empty>(**client, kEventsService, "Forward", req, options)
        .status();
  };
}

}  // namespace vessel::shim
