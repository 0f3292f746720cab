#include "rpc/ttrpc/frame.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vessel::ttrpc {
namespace {

void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t GetBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

std::array<uint8_t, kFrameHeaderSize> EncodeFrameHeader(const FrameHeader& header) {
  std::array<uint8_t, kFrameHeaderSize> out{};
  PutBe32(out.data(), header.length);
  PutBe32(out.data() + 4, header.stream_id);
  out[8] = header.type;
  out[9] = header.flags;
  return out;
}

absl::StatusOr<FrameHeader> DecodeFrameHeader(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttrpc frame header needs ", kFrameHeaderSize, " bytes, got ", bytes.size()));
  }
  FrameHeader h;
  h.length = GetBe32(bytes.data());
  h.stream_id = GetBe32(bytes.data() + 4);
  h.type = bytes[8];
  h.flags = bytes[9];
  if (h.length > kMaxPayload) {
    return absl::ResourceExhaustedError(absl::StrCat("ttrpc frame on stream ", h.stream_id, " carries ",
                                                     h.length, " bytes, over the ", kMaxPayload,
                                                     "-byte limit"));
  }
  if (h.type < 1 || h.type > 3) {
    return absl::InvalidArgumentError(absl::StrCat("ttrpc frame on stream ", h.stream_id,
                                                   " has unknown message type ", h.type));
  }
  return h;
}

std::string MessageTypeName(uint8_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::kRequest: return "request";
    case MessageType::kResponse: return "response";
    case MessageType::kData: return "data";
  }
  return absl::StrCat("type ", type);
}

}  // namespace vessel::ttrpc
