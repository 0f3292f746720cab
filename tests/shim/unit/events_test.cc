#include "shim/events.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include <google/protobuf/empty.pb.h>
#include <gtest/gtest.h>

#include "containerd/events/task.pb.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/typed.h"

namespace vessel::shim {
namespace {

namespace ev = containerd::services::events::ttrpc::v1;

TEST(MakeForwardRequestTest, EnvelopeAsContainerdReadsIt) {
  containerd::events::TaskExit exit;
  exit.set_container_id("c1");
  exit.set_id("c1");
  exit.set_pid(42);
  exit.set_exit_status(7);
  absl::Time now = absl::FromUnixSeconds(1700000000) + absl::Nanoseconds(5);
  ev::ForwardRequest req = MakeForwardRequest("default", kTopicTaskExit, exit, now);
  EXPECT_EQ(req.envelope().namespace_(), "default");
  EXPECT_EQ(req.envelope().topic(), "/tasks/exit");
  EXPECT_EQ(req.envelope().timestamp().seconds(), 1700000000);
  EXPECT_EQ(req.envelope().timestamp().nanos(), 5);
  // containerd's typeurl registers the bare full name, not type.googleapis.com/...
  EXPECT_EQ(req.envelope().event().type_url(), "containerd.events.TaskExit");
  containerd::events::TaskExit back;
  ASSERT_TRUE(back.ParseFromString(req.envelope().event().value()));
  EXPECT_EQ(back.exit_status(), 7u);
  EXPECT_EQ(back.pid(), 42u);
}

TEST(EventPublisherTest, SendsInOrderAndRetries) {
  std::mutex mu;
  std::vector<std::string> topics;
  std::atomic<int> calls{0};
  EventPublisher::Forward forward = [&](const ev::ForwardRequest& req) {
    if (calls.fetch_add(1) == 1) return absl::UnavailableError("containerd restarting");  // one failure
    std::lock_guard<std::mutex> lock(mu);
    topics.push_back(req.envelope().topic());
    return absl::OkStatus();
  };
  {
    EventPublisher publisher("default", forward, nullptr);
    containerd::events::TaskCreate create;
    containerd::events::TaskStart start;
    containerd::events::TaskExit exit;
    containerd::events::TaskDelete del;
    publisher.Publish(kTopicTaskCreate, create);
    publisher.Publish(kTopicTaskStart, start);
    publisher.Publish(kTopicTaskExit, exit);
    publisher.Publish(kTopicTaskDelete, del);
    publisher.Close(absl::Seconds(5));
  }
  EXPECT_EQ(topics, (std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}));
}

TEST(EventPublisherTest, DropsWhenContainerdIsUnreachable) {
  std::atomic<int> calls{0};
  EventPublisher publisher(
      "default", [&](const ev::ForwardRequest&) { calls++; return absl::UnavailableError("down"); }, nullptr);
  containerd::events::TaskOOM oom;
  publisher.Publish(kTopicTaskOOM, oom);
  absl::Time t0 = absl::Now();
  publisher.Close(absl::Milliseconds(500));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));  // bounded, never stuck
  EXPECT_GE(calls.load(), 1);
}

TEST(EventPublisherTest, NoAddressDropsQuietly) {
  ttrpc::IoThread io;
  EventPublisher publisher("default", EventPublisher::TtrpcForward(io.io(), "", nullptr), nullptr);
  containerd::events::TaskOOM oom;
  publisher.Publish(kTopicTaskOOM, oom);
  publisher.Close(absl::Seconds(1));
}

// The whole path over a real ttrpc connection, as containerd's Events service receives it.
TEST(EventPublisherTest, ForwardsOverTtrpc) {
  char tmpl[] = "/tmp/vessel-shim-events-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string path = dir + "/containerd.sock.ttrpc";
  ttrpc::IoThread io;
  ttrpc::Server server(io.io());
  std::mutex mu;
  std::vector<ev::Envelope> got;
  ASSERT_TRUE((ttrpc::RegisterUnary<ev::ForwardRequest, google::protobuf::Empty>(
                   server, kEventsService, "Forward",
                   [&](const ttrpc::CallContext&, const ev::ForwardRequest& req) {
                     std::lock_guard<std::mutex> lock(mu);
                     got.push_back(req.envelope());
                     return google::protobuf::Empty();
                   }))
                  .ok());
  ASSERT_TRUE(server.ListenUnix(path).ok());
  {
    EventPublisher publisher("k8s.io", EventPublisher::TtrpcForward(io.io(), "unix://" + path, nullptr), nullptr);
    containerd::events::TaskExecAdded added;
    added.set_container_id("c1");
    added.set_exec_id("e1");
    containerd::events::TaskExecStarted started;
    started.set_container_id("c1");
    started.set_exec_id("e1");
    publisher.Publish(kTopicTaskExecAdded, added);
    publisher.Publish(kTopicTaskExecStarted, started);
    publisher.Close(absl::Seconds(5));
  }
  server.Shutdown();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].topic(), "/tasks/exec-added");
  EXPECT_EQ(got[0].event().type_url(), "containerd.events.TaskExecAdded");
  EXPECT_EQ(got[0].namespace_(), "k8s.io");
  EXPECT_EQ(got[1].topic(), "/tasks/exec-started");
  EXPECT_EQ(got[1].event().type_url(), "containerd.events.TaskExecStarted");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vessel::shim
