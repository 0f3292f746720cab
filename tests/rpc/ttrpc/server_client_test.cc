// Our client against our server, over socketpairs and a Unix socket: unary calls, error codes,
// concurrency and ordering, deadlines, metadata, cancellation and disconnects.
#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/typed.h"
#include "tests/rpc/ttrpc/raw_peer.h"

namespace vessel::ttrpc {
namespace {

using ::google::protobuf::StringValue;
using ::testing::HasSubstr;
using testing::SocketPair;

constexpr char kSvc[] = "vessel.test.v1.Echo";

StringValue Str(std::string s) {
  StringValue v;
  v.set_value(std::move(s));
  return v;
}

class ServerClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                    server_, kSvc, "Echo",
                    [](const CallContext&, const StringValue& req) -> absl::StatusOr<StringValue> {
                      return Str(req.value());
                    })
                    ).ok());
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                    server_, kSvc, "Fail",
                    [](const CallContext&, const StringValue& req) -> absl::StatusOr<StringValue> {
                      // "<code number>:<message>"
                      int code = std::stoi(req.value().substr(0, req.value().find(':')));
                      return absl::Status(static_cast<absl::StatusCode>(code),
                                          req.value().substr(req.value().find(':') + 1));
                    })
                    ).ok());
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                    server_, kSvc, "Metadata",
                    [](const CallContext& ctx, const StringValue& req) -> absl::StatusOr<StringValue> {
                      std::vector<std::string> v = ctx.MetadataValues(req.value());
                      return Str(absl::StrCat(v.size(), ":", v.empty() ? "" : v.back(), ":",
                                              ctx.deadline == absl::InfiniteFuture() ? "none" : "set"));
                    })
                    ).ok());
    // Answers when told to (a Wait-like call), from another thread.
    ASSERT_TRUE((RegisterAsync<StringValue, StringValue>(
                    server_, kSvc, "Later",
                    [this](const CallContext&, const StringValue& req, TypedReply<StringValue> reply) {
                      std::lock_guard<std::mutex> lock(mu_);
                      later_.emplace_back(req.value(), reply);
                    })
                    ).ok());
    // Never answers until its deadline passes or the connection goes.
    ASSERT_TRUE(server_.Register(kSvc, "Hang", [this](ServerCall call) {
                  std::lock_guard<std::mutex> lock(mu_);
                  hung_.push_back(call);
                }).ok());
    ASSERT_TRUE(server_.Register(kSvc, "Drop", [](ServerCall) {}).ok());
    ASSERT_TRUE((RegisterBlocking<StringValue, StringValue>(
                    server_, pool_, kSvc, "Sleep",
                    [](const CallContext&, const StringValue& req) -> absl::StatusOr<StringValue> {
                      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(req.value())));
                      return Str("slept " + req.value());
                    })
                    ).ok());
  }

  std::shared_ptr<Client> Connect() {
    auto [a, b] = SocketPair();
    EXPECT_TRUE(server_.Serve(std::move(a), "test-conn").ok());
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(io_.io(), std::move(b), "test-client");
    EXPECT_TRUE(client.ok()) << client.status();
    return *client;
  }

  // Answers every queued Later call whose request was `key`.
  void AnswerLater(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [k, reply] : later_) {
      if (k == key) reply(Str("later " + k));
    }
  }
  size_t LaterCount() {
    std::lock_guard<std::mutex> lock(mu_);
    return later_.size();
  }

  IoThread io_{2};
  boost::asio::thread_pool pool_{4};
  Server server_{io_.io()};
  std::mutex mu_;
  std::vector<std::pair<std::string, TypedReply<StringValue>>> later_;
  std::vector<ServerCall> hung_;
};

TEST_F(ServerClientTest, UnaryEcho) {
  auto client = Connect();
  absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client, kSvc, "Echo", Str("hello"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "hello");
}

TEST_F(ServerClientTest, EmptyAndLargePayloads) {
  auto client = Connect();
  absl::StatusOr<StringValue> empty = CallTyped<StringValue>(*client, kSvc, "Echo", Str(""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->value(), "");
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client, kSvc, "Echo", Str(big));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), big);
}

TEST_F(ServerClientTest, RequestOverFrameLimitFailsLocallyAndConnectionStaysUp) {
  auto client = Connect();
  absl::StatusOr<StringValue> r =
      CallTyped<StringValue>(*client, kSvc, "Echo", Str(std::string(kMaxPayload, 'x')));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(CallTyped<StringValue>(*client, kSvc, "Echo", Str("still")).ok());
}

TEST_F(ServerClientTest, UnknownServiceAndMethodAreUnimplemented) {
  auto client = Connect();
  absl::StatusOr<std::string> r = client->Call("no.such.Service", "Echo", "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no.such.Service"));
  r = client->Call(kSvc, "NoSuchMethod", "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("NoSuchMethod"));
}

TEST_F(ServerClientTest, HandlerErrorsCrossWithTheirCodes) {
  auto client = Connect();
  for (absl::StatusCode code :
       {absl::StatusCode::kNotFound, absl::StatusCode::kAlreadyExists, absl::StatusCode::kInvalidArgument,
        absl::StatusCode::kFailedPrecondition, absl::StatusCode::kInternal,
        absl::StatusCode::kPermissionDenied, absl::StatusCode::kUnavailable}) {
    absl::StatusOr<StringValue> r = CallTyped<StringValue>(
        *client, kSvc, "Fail", Str(absl::StrCat(static_cast<int>(code), ":container c1 went away")));
    EXPECT_EQ(r.status().code(), code);
    EXPECT_EQ(r.status().message(), "container c1 went away");
  }
}

TEST_F(ServerClientTest, GarbageRequestPayloadIsInvalidArgument) {
  auto client = Connect();
  absl::StatusOr<std::string> r = client->Call(kSvc, "Echo", "\xff\xff\xff");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("google.protobuf.StringValue"));
}

TEST_F(ServerClientTest, DuplicateRegistrationIsRefused) {
  EXPECT_EQ(server_.Register(kSvc, "Echo", [](ServerCall) {}).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ServerClientTest, ResponsesComeBackOutOfOrder) {
  auto client = Connect();
  std::promise<absl::StatusOr<StringValue>> slow, fast;
  StartTypedCall<StringValue>(*client, kSvc, "Later", Str("slow"), {},
                              [&](absl::StatusOr<StringValue> r) { slow.set_value(std::move(r)); });
  // Make sure the slow call reached the server before the fast one is sent.
  for (int i = 0; i < 500 && LaterCount() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(LaterCount(), 1u);
  StartTypedCall<StringValue>(*client, kSvc, "Echo", Str("fast"), {},
                              [&](absl::StatusOr<StringValue> r) { fast.set_value(std::move(r)); });
  absl::StatusOr<StringValue> f = fast.get_future().get();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->value(), "fast");
  auto slow_future = slow.get_future();
  EXPECT_EQ(slow_future.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  AnswerLater("slow");
  absl::StatusOr<StringValue> s = slow_future.get();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->value(), "later slow");
}

TEST_F(ServerClientTest, ManyConcurrentCallsFromManyThreads) {
  auto client = Connect();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::string v = absl::StrCat(t, "-", i);
        absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client, kSvc, "Echo", Str(v));
        if (r.ok() && r->value() == v) ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1600);
}

TEST_F(ServerClientTest, BlockingHandlersRunOffTheIoThread) {
  auto client = Connect();
  std::promise<absl::StatusOr<StringValue>> sleeping;
  StartTypedCall<StringValue>(*client, kSvc, "Sleep", Str("300"), {},
                              [&](absl::StatusOr<StringValue> r) { sleeping.set_value(std::move(r)); });
  // While one handler sleeps, the connection keeps answering.
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(CallTyped<StringValue>(*client, kSvc, "Echo", Str("x")).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
  absl::StatusOr<StringValue> r = sleeping.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "slept 300");
}

TEST_F(ServerClientTest, MetadataAndDeadlineReachTheHandler) {
  auto client = Connect();
  CallOptions options;
  options.metadata = {{"containerd-namespace", "k8s.io"}, {"x", "1"}, {"x", "2"}};
  absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client, kSvc, "Metadata", Str("x"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "2:2:none");
  options.timeout = absl::Seconds(10);
  r = CallTyped<StringValue>(*client, kSvc, "Metadata", Str("containerd-namespace"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "1:k8s.io:set");
}

TEST_F(ServerClientTest, ClientTimeoutFailsTheCallAndLateAnswersAreDropped) {
  auto client = Connect();
  CallOptions options;
  options.timeout = absl::Milliseconds(100);
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> r = client->Call(kSvc, "Later", Str("t").SerializeAsString(), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(90));
  AnswerLater("t");  // too late: dropped, and the connection still works
  EXPECT_TRUE(CallTyped<StringValue>(*client, kSvc, "Echo", Str("after")).ok());
}

TEST_F(ServerClientTest, ServerDeadlineCancelsTheHandlerAndAnswersDeadlineExceeded) {
  auto [a, b] = SocketPair();
  ASSERT_TRUE(server_.Serve(std::move(a), "raw").ok());
  testing::RawPeer peer(std::move(b));
  Request req;
  req.set_service(kSvc);
  req.set_method("Hang");
  req.set_timeout_nano(absl::ToInt64Nanoseconds(absl::Milliseconds(50)));
  peer.WriteRequest(1, req);
  uint32_t stream = 0;
  std::optional<Response> resp = peer.ReadResponse(&stream);
  ASSERT_TRUE(resp.has_value());
  EXPECT_EQ(stream, 1u);
  EXPECT_EQ(resp->status().code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(hung_.size(), 1u);
  EXPECT_TRUE(hung_[0].context().cancelled());
  hung_[0].Reply(std::string("too late"));  // dropped; nothing more arrives
  EXPECT_FALSE(peer.ReadFrame(100).has_value());
}

TEST_F(ServerClientTest, DroppedCallIsAnsweredInternal) {
  auto client = Connect();
  absl::StatusOr<std::string> r = client->Call(kSvc, "Drop", "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("dropped the call"));
}

TEST_F(ServerClientTest, CancelFailsThePendingCall) {
  auto client = Connect();
  std::promise<absl::StatusOr<std::string>> done;
  uint32_t id = client->StartCall(kSvc, "Later", Str("c").SerializeAsString(), {},
                                  [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  EXPECT_EQ(id % 2, 1u);
  client->Cancel(id);
  EXPECT_EQ(done.get_future().get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(CallTyped<StringValue>(*client, kSvc, "Echo", Str("after")).ok());
}

TEST_F(ServerClientTest, ServerGoingAwayFailsEveryPendingCall) {
  auto client = Connect();
  std::vector<std::future<absl::StatusOr<std::string>>> futures;
  std::vector<std::shared_ptr<std::promise<absl::StatusOr<std::string>>>> promises;
  for (int i = 0; i < 10; ++i) {
    auto p = std::make_shared<std::promise<absl::StatusOr<std::string>>>();
    futures.push_back(p->get_future());
    client->StartCall(kSvc, "Later", Str("pending").SerializeAsString(), {},
                      [p](absl::StatusOr<std::string> r) { p->set_value(std::move(r)); });
  }
  for (int i = 0; i < 500 && LaterCount() < 10; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  server_.Shutdown();
  for (auto& f : futures) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    EXPECT_EQ(f.get().status().code(), absl::StatusCode::kUnavailable);
  }
  // New calls on the dead connection fail at once too.
  EXPECT_EQ(client->Call(kSvc, "Echo", "").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(client->closed());
}

TEST_F(ServerClientTest, DestroyingTheClientFailsPendingCalls) {
  auto client = Connect();
  std::promise<absl::StatusOr<std::string>> done;
  client->StartCall(kSvc, "Later", Str("d").SerializeAsString(), {},
                    [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  for (int i = 0; i < 500 && LaterCount() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  client.reset();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  absl::StatusCode code = f.get().status().code();
  EXPECT_TRUE(code == absl::StatusCode::kCancelled || code == absl::StatusCode::kUnavailable) << code;
  // The server notices the connection went away.
  for (int i = 0; i < 500 && server_.connection_count() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(server_.connection_count(), 0u);
}

TEST_F(ServerClientTest, OverUnixSocketWithSeveralClients) {
  std::string path = (std::filesystem::temp_directory_path() /
                      absl::StrCat("vessel-ttrpc-test-", ::getpid(), ".sock")).string();
  ASSERT_TRUE(server_.ListenUnix(path).ok());
  std::vector<std::shared_ptr<Client>> clients;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<std::shared_ptr<Client>> c = Client::ConnectUnix(io_.io(), path);
    ASSERT_TRUE(c.ok()) << c.status();
    clients.push_back(*c);
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    absl::StatusOr<StringValue> r =
        CallTyped<StringValue>(*clients[i], kSvc, "Echo", Str(absl::StrCat("c", i)));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->value(), absl::StrCat("c", i));
  }
  // A second server on the same live path is refused; after shutdown the path can be reused.
  Server other(io_.io());
  EXPECT_EQ(other.ListenUnix(path).code(), absl::StatusCode::kAlreadyExists);
  server_.Shutdown();
  std::filesystem::remove(path);
}

TEST_F(ServerClientTest, ConnectToMissingSocketSaysUnavailable) {
  absl::StatusOr<std::shared_ptr<Client>> c = Client::ConnectUnix(io_.io(), "/nonexistent/vessel.sock");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/vessel.sock"));
}

}  // namespace
}  // namespace vessel::ttrpc
