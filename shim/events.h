// Task events to containerd: Envelopes sent to `containerd.services.events.ttrpc.v1.Events/Forward`
// on containerd's ttrpc address (TTRPC_ADDRESS), in the order they were published: one queue,
// one sender thread.
#ifndef VESSEL_SHIM_EVENTS_H_
#define VESSEL_SHIM_EVENTS_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "containerd/services/events/ttrpc/v1/events.pb.h"
#include "shim/log.h"

namespace vessel::shim {

inline constexpr char kEventsService[] = "containerd.services.events.ttrpc.v1.Events";

// Topics (containerd's runtime package).
inline constexpr char kTopicTaskCreate[] = "/tasks/create";
inline constexpr char kTopicTaskStart[] = "/tasks/start";
inline constexpr char kTopicTaskExecAdded[] = "/tasks/exec-added";
inline constexpr char kTopicTaskExecStarted[] = "/tasks/exec-started";
inline constexpr char kTopicTaskExit[] = "/tasks/exit";
inline constexpr char kTopicTaskDelete[] = "/tasks/delete";
inline constexpr char kTopicTaskOOM[] = "/tasks/oom";
inline constexpr char kTopicTaskPaused[] = "/tasks/paused";
inline constexpr char kTopicTaskResumed[] = "/tasks/resumed";

// The Envelope containerd expects: event = Any{type_url = the bare full name (what containerd's
// typeurl registers, e.g. "containerd.events.TaskExit"), value = the serialized event}.
containerd::services::events::ttrpc::v1::ForwardRequest MakeForwardRequest(
    absl::string_view ns, absl::string_view topic, const google::protobuf::Message& event, absl::Time now);

void ToTimestamp(absl::Time t, google::protobuf::Timestamp* out);

class EventPublisher {
 public:
  // Sends one request; an error is retried a few times, then the event is dropped with a log line.
  using Forward = std::function<absl::Status(
      const containerd::services::events::ttrpc::v1::ForwardRequest&)>;

  EventPublisher(std::string ns, Forward forward, ShimLog* log);
  // Close(2 s) if not closed.
  ~EventPublisher();
  EventPublisher(const EventPublisher&) = delete;
  EventPublisher& operator=(const EventPublisher&) = delete;

  // Queues the event (never blocks on the network).
  void Publish(absl::string_view topic, const google::protobuf::Message& event);
  // Sends what is queued (up to `flush` long), then stops the sender. Idempotent.
  void Close(absl::Duration flush);

  // A Forward over ttrpc to `ttrpc_address` ("unix://PATH" or PATH), connected on first use and
  // again after the connection broke. An empty address drops every event (logged once).
  static Forward TtrpcForward(boost::asio::io_context& io, std::string ttrpc_address, ShimLog* log);

 private:
  void Run();

  const std::string ns_;
  const Forward forward_;
  ShimLog* const log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<containerd::services::events::ttrpc::v1::ForwardRequest> queue_;  // mu_
  bool closing_ = false;                                                       // mu_
  absl::Time flush_deadline_ = absl::InfiniteFuture();                         // mu_
  std::thread sender_;
};

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_EVENTS_H_
