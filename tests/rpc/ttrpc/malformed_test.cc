// Misbehaving peers: our server against a raw client writing bad frames, our client against a raw
// server writing bad answers. Whatever one peer does, the other side keeps serving everyone else.
#include <google/protobuf/wrappers.pb.h>

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
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
using testing::RawPeer;
using testing::SocketPair;

constexpr char kSvc[] = "vessel.test.v1.Echo";
constexpr uint8_t kReq = static_cast<uint8_t>(MessageType::kRequest);

Request EchoRequest(const std::string& value) {
  StringValue v;
  v.set_value(value);
  Request r;
  r.set_service(kSvc);
  r.set_method("Echo");
  r.set_payload(v.SerializeAsString());
  return r;
}

class MalformedServerInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE((RegisterUnary<StringValue, StringValue>(
                    server_, kSvc, "Echo",
                    [](const CallContext&, const StringValue& r) -> absl::StatusOr<StringValue> { return r; })
                    ).ok());
    // A well-behaved neighbour that must keep working throughout.
    auto [a, b] = SocketPair();
    ASSERT_TRUE(server_.Serve(std::move(a), "good").ok());
    good_ = *Client::Create(io_.io(), std::move(b), "good-client");
  }

  RawPeer Bad() {
    auto [a, b] = SocketPair();
    EXPECT_TRUE(server_.Serve(std::move(a), "bad").ok());
    return RawPeer(std::move(b));
  }

  void ExpectGoodClientWorks() {
    StringValue v;
    v.set_value("ping");
    absl::StatusOr<StringValue> r = CallTyped<StringValue>(*good_, kSvc, "Echo", v);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->value(), "ping");
  }

  void WaitForConnections(size_t n) {
    for (int i = 0; i < 1000 && server_.connection_count() != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_EQ(server_.connection_count(), n);
  }

  IoThread io_;
  Server server_{io_.io()};
  std::shared_ptr<Client> good_;
};

TEST_F(MalformedServerInputTest, ShortHeaderThenCloseDropsOnlyThatConnection) {
  RawPeer bad = Bad();
  bad.WriteBytes(std::string("\x00\x00\x00", 3));
  bad.Close();
  WaitForConnections(1);
  ExpectGoodClientWorks();
}

TEST_F(MalformedServerInputTest, PeerClosingMidPayloadDropsOnlyThatConnection) {
  RawPeer bad = Bad();
  std::string payload = EchoRequest("abc").SerializeAsString();
  bad.WriteFrame(1, kReq, payload.substr(0, 3), 0, payload.size());
  bad.Close();
  WaitForConnections(1);
  ExpectGoodClientWorks();
}

TEST_F(MalformedServerInputTest, LengthOverFourMiBClosesTheConnection) {
  RawPeer bad = Bad();
  bad.WriteFrame(1, kReq, "", 0, kMaxPayload + 1);
  EXPECT_TRUE(bad.SeesEof());
  WaitForConnections(1);
  ExpectGoodClientWorks();
}

TEST_F(MalformedServerInputTest, UnknownTypeClosesTheConnection) {
  RawPeer bad = Bad();
  bad.WriteFrame(1, 7, "x");
  EXPECT_TRUE(bad.SeesEof());
  ExpectGoodClientWorks();
}

TEST_F(MalformedServerInputTest, GarbageRequestIsAnsweredAndTheConnectionStays) {
  RawPeer bad = Bad();
  bad.WriteFrame(1, kReq, "\xff\xff\xff\xff");
  uint32_t stream = 0;
  std::optional<Response> r = bad.ReadResponse(&stream);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stream, 1u);
  EXPECT_EQ(r->status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  bad.WriteRequest(3, EchoRequest("after garbage"));
  r = bad.ReadResponse(&stream);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stream, 3u);
  EXPECT_EQ(r->status().code(), 0);
  StringValue v;
  ASSERT_TRUE(v.ParseFromString(r->payload()));
  EXPECT_EQ(v.value(), "after garbage");
}

TEST_F(MalformedServerInputTest, EvenStreamIdIsRefused) {
  RawPeer bad = Bad();
  bad.WriteRequest(2, EchoRequest("x"));
  uint32_t stream = 0;
  std::optional<Response> r = bad.ReadResponse(&stream);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stream, 2u);
  EXPECT_EQ(r->status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(r->status().message(), HasSubstr("odd"));
}

TEST_F(MalformedServerInputTest, StreamingDataFrameIsRefusedCleanly) {
  RawPeer bad = Bad();
  bad.WriteFrame(5, static_cast<uint8_t>(MessageType::kData), "chunk", kFlagRemoteOpen);
  uint32_t stream = 0;
  std::optional<Response> r = bad.ReadResponse(&stream);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stream, 5u);
  EXPECT_EQ(r->status().code(), static_cast<int>(absl::StatusCode::kUnimplemented));
  bad.WriteRequest(7, EchoRequest("still here"));
  EXPECT_TRUE(bad.ReadResponse().has_value());
}

TEST_F(MalformedServerInputTest, ResponseFramesFromAClientAreIgnored) {
  RawPeer bad = Bad();
  bad.WriteFrame(1, static_cast<uint8_t>(MessageType::kResponse), "whatever");
  bad.WriteRequest(3, EchoRequest("x"));
  uint32_t stream = 0;
  ASSERT_TRUE(bad.ReadResponse(&stream).has_value());
  EXPECT_EQ(stream, 3u);
}

TEST_F(MalformedServerInputTest, ManyRequestsInOneWriteAllAnswered) {
  RawPeer bad = Bad();
  std::string burst;
  for (uint32_t i = 0; i < 100; ++i) {
    std::string p = EchoRequest(absl::StrCat(i)).SerializeAsString();
    auto h = EncodeFrameHeader(FrameHeader{static_cast<uint32_t>(p.size()), 2 * i + 1, kReq, 0});
    burst += std::string(h.begin(), h.end()) + p;
  }
  bad.WriteBytes(burst);
  std::set<uint32_t> streams;
  for (int i = 0; i < 100; ++i) {
    uint32_t stream = 0;
    std::optional<Response> r = bad.ReadResponse(&stream);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status().code(), 0);
    streams.insert(stream);
  }
  EXPECT_EQ(streams.size(), 100u);
}

TEST_F(MalformedServerInputTest, InFlightLimitAnswersResourceExhausted) {
  ServerOptions options;
  options.max_in_flight_per_connection = 2;
  Server small(io_.io(), options);
  std::vector<ServerCall> held;
  std::mutex mu;
  ASSERT_TRUE(small.Register(kSvc, "Hold", [&](ServerCall c) {
                std::lock_guard<std::mutex> lock(mu);
                held.push_back(c);
              }).ok());
  auto [a, b] = SocketPair();
  ASSERT_TRUE(small.Serve(std::move(a), "limited").ok());
  RawPeer peer(std::move(b));
  Request hold;
  hold.set_service(kSvc);
  hold.set_method("Hold");
  for (uint32_t s : {1u, 3u, 5u}) peer.WriteRequest(s, hold);
  uint32_t stream = 0;
  std::optional<Response> r = peer.ReadResponse(&stream);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(stream, 5u);
  EXPECT_EQ(r->status().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  std::lock_guard<std::mutex> lock(mu);
  held.clear();  // dropped: both answered Internal
}

class MalformedClientInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto [a, b] = SocketPair();
    client_ = *Client::Create(io_.io(), std::move(a), "client");
    server_ = std::make_unique<RawPeer>(std::move(b));
  }
  IoThread io_;
  std::shared_ptr<Client> client_;
  std::unique_ptr<RawPeer> server_;
};

TEST_F(MalformedClientInputTest, GarbageResponseFailsThatCallWithDataLoss) {
  std::promise<absl::StatusOr<std::string>> done;
  uint32_t id = client_->StartCall(kSvc, "Echo", "", {},
                                   [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(server_->ReadFrame().has_value());
  server_->WriteFrame(id, static_cast<uint8_t>(MessageType::kResponse), "\xff\xff\xff");
  EXPECT_EQ(done.get_future().get().status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(MalformedClientInputTest, ServerClosingMidFrameFailsPendingCalls) {
  std::promise<absl::StatusOr<std::string>> done;
  client_->StartCall(kSvc, "Echo", "", {}, [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(server_->ReadFrame().has_value());
  server_->WriteBytes(std::string("\x00\x00\x01", 3));
  server_->Close();
  absl::StatusOr<std::string> r = done.get_future().get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("mid-frame"));
}

TEST_F(MalformedClientInputTest, OversizedResponseClosesAndFails) {
  std::promise<absl::StatusOr<std::string>> done;
  uint32_t id = client_->StartCall(kSvc, "Echo", "", {},
                                   [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(server_->ReadFrame().has_value());
  server_->WriteFrame(id, static_cast<uint8_t>(MessageType::kResponse), "", 0, kMaxPayload + 1);
  EXPECT_EQ(done.get_future().get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(server_->SeesEof());
}

TEST_F(MalformedClientInputTest, AnswersForUnknownStreamsAreIgnored) {
  std::promise<absl::StatusOr<std::string>> done;
  uint32_t id = client_->StartCall(kSvc, "Echo", "", {},
                                   [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(server_->ReadFrame().has_value());
  Response ok;
  ok.mutable_status();
  ok.set_payload("right");
  server_->WriteFrame(id + 100, static_cast<uint8_t>(MessageType::kResponse), ok.SerializeAsString());
  server_->WriteFrame(id, static_cast<uint8_t>(MessageType::kRequest), "");  // ignored too
  server_->WriteFrame(id, static_cast<uint8_t>(MessageType::kResponse), ok.SerializeAsString());
  absl::StatusOr<std::string> r = done.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "right");
}

}  // namespace
}  // namespace vessel::ttrpc
