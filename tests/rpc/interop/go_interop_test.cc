// Interop with containerd's Go ttrpc (Debian's golang-github-containerd-ttrpc-dev), via the
// ttrpc-peer program built from ttrpc_peer.go: our server against the Go client, and our client
// against the Go server, with error statuses, metadata, timeouts and disconnects.
#include <google/protobuf/wrappers.pb.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/typed.h"

namespace vessel::ttrpc {
namespace {

using ::google::protobuf::StringValue;
using ::testing::HasSubstr;

constexpr char kSvc[] = "vessel.test.v1.Echo";
const std::string kPeer = VESSEL_TTRPC_PEER;

StringValue Str(std::string s) {
  StringValue v;
  v.set_value(std::move(s));
  return v;
}

std::string TempSocket(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          absl::StrCat("vessel-interop-", tag, "-", ::getpid(), ".sock")).string();
}

void SkipWithoutPeer() {
  if (kPeer.empty() || !std::filesystem::exists(kPeer)) {
    GTEST_SKIP() << "Go ttrpc peer not built: install golang-go and golang-github-containerd-ttrpc-dev "
                    "(./setup.sh does) and re-run cmake";
  }
}

// Runs the Go peer once and returns what it printed.
std::string RunGo(const std::vector<std::string>& args) {
  std::string cmd = kPeer;
  for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  EXPECT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  ::pclose(f);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class OurServerGoClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SkipWithoutPeer();
    if (IsSkipped()) return;
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                     server_, kSvc, "Echo",
                     [](const CallContext&, const StringValue& r) -> absl::StatusOr<StringValue> { return r; }))
                    .ok());
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                     server_, kSvc, "Fail",
                     [](const CallContext&, const StringValue& r) -> absl::StatusOr<StringValue> {
                       return absl::NotFoundError(absl::StrCat("container ", r.value(), " not found"));
                     }))
                    .ok());
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                     server_, kSvc, "Metadata",
                     [](const CallContext& ctx, const StringValue& r) -> absl::StatusOr<StringValue> {
                       return Str(absl::StrCat(absl::StrJoin(ctx.MetadataValues(r.value()), ","),
                                               ";deadline=",
                                               ctx.deadline != absl::InfiniteFuture() ? "true" : "false"));
                     }))
                    .ok());
    ASSERT_TRUE(server_.Register(kSvc, "Hang", [this](ServerCall call) {
                  std::lock_guard<std::mutex> lock(mu_);
                  hung_.push_back(call);
                }).ok());
    ASSERT_TRUE(server_.ListenUnix(path_).ok());
  }
  void TearDown() override {
    server_.Shutdown();
    std::filesystem::remove(path_);
  }

  std::string Call(std::vector<std::string> extra) {
    std::vector<std::string> args = {"call", "-socket", path_};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunGo(args);
  }

  IoThread io_;
  Server server_{io_.io()};
  std::string path_ = TempSocket("ours");
  std::mutex mu_;
  std::vector<ServerCall> hung_;
};

TEST_F(OurServerGoClientTest, Echo) {
  EXPECT_EQ(Call({"-method", "Echo", "-value", "hello from go"}), "code=0 value=hello from go message=");
}

TEST_F(OurServerGoClientTest, ErrorStatusReachesGoWithCodeAndMessage) {
  EXPECT_EQ(Call({"-method", "Fail", "-value", "c1"}), "code=5 value= message=container c1 not found");
}

TEST_F(OurServerGoClientTest, UnknownMethodAndServiceAreUnimplemented) {
  EXPECT_THAT(Call({"-method", "Nope"}), HasSubstr("code=12 "));
  EXPECT_THAT(Call({"-service", "no.such.Service", "-method", "Echo"}), HasSubstr("code=12 "));
}

TEST_F(OurServerGoClientTest, MetadataAndDeadlineFromGo) {
  EXPECT_EQ(Call({"-method", "Metadata", "-value", "k", "-md", "k=v1", "-md", "k=v2"}),
            "code=0 value=v1,v2;deadline=false message=");
  EXPECT_EQ(Call({"-method", "Metadata", "-value", "k", "-md", "k=v", "-timeout-ms", "5000"}),
            "code=0 value=v;deadline=true message=");
}

TEST_F(OurServerGoClientTest, GoTimeoutBecomesOurDeadlineAndCancels) {
  EXPECT_THAT(Call({"-method", "Hang", "-timeout-ms", "200"}), HasSubstr("code=4 "));
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(hung_.size(), 1u);
  // The Go client sent timeout_nano; the handler sees its deadline and, by now, the cancellation.
  EXPECT_NE(hung_[0].context().deadline, absl::InfiniteFuture());
  for (int i = 0; i < 500 && !hung_[0].context().cancelled(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(hung_[0].context().cancelled());
}

class OurClientGoServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SkipWithoutPeer();
    if (IsSkipped()) return;
    StartGoServer();
    absl::StatusOr<std::shared_ptr<Client>> c = Client::ConnectUnix(io_.io(), path_);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *c;
  }
  void TearDown() override {
    StopGoServer();
    std::filesystem::remove(path_);
  }

  void StartGoServer() {
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::execl(kPeer.c_str(), kPeer.c_str(), "serve", "-socket", path_.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(out[1]);
    char buf[16] = {};
    ssize_t n = ::read(out[0], buf, sizeof(buf) - 1);  // "ready\n" once it listens
    ::close(out[0]);
    ASSERT_GT(n, 0) << "Go ttrpc server did not start";
    ASSERT_EQ(std::string(buf, n), "ready\n");
  }
  void StopGoServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  IoThread io_;
  std::string path_ = TempSocket("go");
  pid_t pid_ = -1;
  std::shared_ptr<Client> client_;
};

TEST_F(OurClientGoServerTest, Echo) {
  absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client_, kSvc, "Echo", Str("hello from c++"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "hello from c++");
}

TEST_F(OurClientGoServerTest, ConcurrentCallsOnOneConnection) {
  std::vector<std::future<absl::StatusOr<StringValue>>> futures;
  for (int i = 0; i < 100; ++i) {
    auto p = std::make_shared<std::promise<absl::StatusOr<StringValue>>>();
    futures.push_back(p->get_future());
    StartTypedCall<StringValue>(*client_, kSvc, "Echo", Str(absl::StrCat("v", i)), {},
                                [p](absl::StatusOr<StringValue> r) { p->set_value(std::move(r)); });
  }
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<StringValue> r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->value(), absl::StrCat("v", i));
  }
}

TEST_F(OurClientGoServerTest, GoErrorStatusesArriveWithTheirCodes) {
  for (absl::StatusCode code : {absl::StatusCode::kNotFound, absl::StatusCode::kAlreadyExists,
                                absl::StatusCode::kFailedPrecondition, absl::StatusCode::kInternal}) {
    absl::StatusOr<StringValue> r = CallTyped<StringValue>(
        *client_, kSvc, "Fail", Str(absl::StrCat(static_cast<int>(code), ":from go")));
    EXPECT_EQ(r.status().code(), code);
    EXPECT_EQ(r.status().message(), "from go");
  }
}

TEST_F(OurClientGoServerTest, UnknownMethodIsUnimplemented) {
  EXPECT_EQ(client_->Call(kSvc, "Nope", "").status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(client_->Call("no.such.Service", "Echo", "").status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(OurClientGoServerTest, MetadataAndTimeoutReachGo) {
  CallOptions options;
  options.metadata = {{"containerd-namespace", "k8s.io"}};
  options.timeout = absl::Seconds(5);
  absl::StatusOr<StringValue> r =
      CallTyped<StringValue>(*client_, kSvc, "Metadata", Str("containerd-namespace"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value(), "k8s.io;deadline=true");
}

TEST_F(OurClientGoServerTest, TimeoutGivesDeadlineExceeded) {
  CallOptions options;
  options.timeout = absl::Milliseconds(150);
  absl::StatusOr<StringValue> r = CallTyped<StringValue>(*client_, kSvc, "Sleep", Str("5000"), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The connection is still good afterwards.
  EXPECT_TRUE(CallTyped<StringValue>(*client_, kSvc, "Echo", Str("after")).ok());
}

TEST_F(OurClientGoServerTest, GoServerDyingFailsPendingCalls) {
  std::promise<absl::StatusOr<std::string>> done;
  client_->StartCall(kSvc, "Sleep", Str("10000").SerializeAsString(), {},
                     [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  StopGoServer();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace vessel::ttrpc
