// Golden bytes for the ttrpc framing and its two messages, checked both ways.
#include "rpc/ttrpc/frame.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/ttrpc/status.h"
#include "rpc/ttrpc/ttrpc.pb.h"

namespace vessel::ttrpc {
namespace {

using ::testing::HasSubstr;

std::string Bytes(std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); }
absl::Span<const uint8_t> Span(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

TEST(FrameHeaderTest, EncodesBigEndianLengthStreamTypeFlags) {
  auto h = EncodeFrameHeader(FrameHeader{0x01020304, 0x0a0b0c0d, 2, 0x05});
  EXPECT_EQ(std::string(h.begin(), h.end()),
            Bytes({0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x02, 0x05}));
}

TEST(FrameHeaderTest, DecodesWhatItEncodes) {
  std::string wire = Bytes({0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00});
  absl::StatusOr<FrameHeader> h = DecodeFrameHeader(Span(wire));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, (FrameHeader{42, 1, 1, 0}));
}

TEST(FrameHeaderTest, AcceptsExactlyFourMiB) {
  std::string wire = Bytes({0x00, 0x40, 0x00, 0x00, 0, 0, 0, 3, 2, 0});
  absl::StatusOr<FrameHeader> h = DecodeFrameHeader(Span(wire));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->length, kMaxPayload);
}

TEST(FrameHeaderTest, RefusesOverFourMiB) {
  std::string wire = Bytes({0x00, 0x40, 0x00, 0x01, 0, 0, 0, 3, 2, 0});
  absl::StatusOr<FrameHeader> h = DecodeFrameHeader(Span(wire));
  EXPECT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(h.status().message()), HasSubstr("4194305"));
}

TEST(FrameHeaderTest, RefusesShortHeaderAndUnknownTypes) {
  EXPECT_EQ(DecodeFrameHeader(Span(Bytes({0, 0, 0, 1}))).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (uint8_t type : {0, 4, 0xff}) {
    std::string wire = Bytes({0, 0, 0, 0, 0, 0, 0, 1, type, 0});
    EXPECT_EQ(DecodeFrameHeader(Span(wire)).status().code(), absl::StatusCode::kInvalidArgument)
        << int{type};
  }
  std::string data = Bytes({0, 0, 0, 0, 0, 0, 0, 1, 3, kFlagRemoteClosed | kFlagNoData});
  EXPECT_TRUE(DecodeFrameHeader(Span(data)).ok());
}

// Request{service:"s", method:"m", payload:"\x01", timeout_nano:5, metadata:[{k:"a", v:"b"}]}
// field 1 (0x0a) len 1 's'; field 2 (0x12) len 1 'm'; field 3 (0x1a) len 1 0x01;
// field 4 varint (0x20) 5; field 5 (0x2a) len 6 { field 1 (0x0a) len 1 'a', field 2 (0x12) len 1 'b' }.
const std::string kRequestWire = Bytes({0x0a, 0x01, 's', 0x12, 0x01, 'm', 0x1a, 0x01, 0x01, 0x20,
                                        0x05, 0x2a, 0x06, 0x0a, 0x01, 'a', 0x12, 0x01, 'b'});

TEST(MessagesTest, RequestGoldenBytesBothWays) {
  Request r;
  r.set_service("s");
  r.set_method("m");
  r.set_payload(std::string(1, '\x01'));
  r.set_timeout_nano(5);
  KeyValue* kv = r.add_metadata();
  kv->set_key("a");
  kv->set_value("b");
  EXPECT_EQ(r.SerializeAsString(), kRequestWire);

  Request parsed;
  ASSERT_TRUE(parsed.ParseFromString(kRequestWire));
  EXPECT_EQ(parsed.service(), "s");
  EXPECT_EQ(parsed.method(), "m");
  EXPECT_EQ(parsed.payload(), std::string(1, '\x01'));
  EXPECT_EQ(parsed.timeout_nano(), 5);
  ASSERT_EQ(parsed.metadata_size(), 1);
  EXPECT_EQ(parsed.metadata(0).key(), "a");
  EXPECT_EQ(parsed.metadata(0).value(), "b");
}

// Response{status:{code:5, message:"x"}, payload:"p"}:
// field 1 (0x0a) len 5 { field 1 varint (0x08) 5, field 2 (0x12) len 1 'x' }; field 2 (0x12) len 1 'p'.
const std::string kResponseWire = Bytes({0x0a, 0x05, 0x08, 0x05, 0x12, 0x01, 'x', 0x12, 0x01, 'p'});

TEST(MessagesTest, ResponseGoldenBytesBothWays) {
  Response r;
  StatusToProto(absl::NotFoundError("x"), r.mutable_status());
  r.set_payload("p");
  EXPECT_EQ(r.SerializeAsString(), kResponseWire);

  Response parsed;
  ASSERT_TRUE(parsed.ParseFromString(kResponseWire));
  absl::Status s = StatusFromProto(parsed.status());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "x");
  EXPECT_EQ(parsed.payload(), "p");
}

TEST(MessagesTest, WholeFrameOfARequest) {
  auto h = EncodeFrameHeader(FrameHeader{static_cast<uint32_t>(kRequestWire.size()), 1, 1, 0});
  std::string frame = std::string(h.begin(), h.end()) + kRequestWire;
  EXPECT_EQ(frame.substr(0, 10), Bytes({0, 0, 0, 19, 0, 0, 0, 1, 1, 0}));
  EXPECT_EQ(frame.size(), 29u);
}

TEST(StatusTest, CodesCrossAsTheirGrpcNumbers) {
  Status p;
  StatusToProto(absl::OkStatus(), &p);
  EXPECT_EQ(p.code(), 0);
  StatusToProto(absl::FailedPreconditionError("f"), &p);
  EXPECT_EQ(p.code(), 9);
  StatusToProto(absl::UnimplementedError("u"), &p);
  EXPECT_EQ(p.code(), 12);
  p.set_code(14);
  EXPECT_TRUE(absl::IsUnavailable(StatusFromProto(p)));
}

TEST(StatusTest, OutOfRangeCodeBecomesUnknownAndKeepsTheNumber) {
  Status p;
  p.set_code(99);
  p.set_message("odd");
  absl::Status s = StatusFromProto(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(std::string(s.message()), HasSubstr("99"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("odd"));
  p.set_code(-1);
  EXPECT_EQ(StatusFromProto(p).code(), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace vessel::ttrpc
