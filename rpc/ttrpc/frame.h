// ttrpc framing: every message is a 10-byte header (payload length and stream id as big-endian
// uint32, then a type byte and a flags byte) followed by the payload, at most 4 MiB.
#ifndef VESSEL_RPC_TTRPC_FRAME_H_
#define VESSEL_RPC_TTRPC_FRAME_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vessel::ttrpc {

inline constexpr size_t kFrameHeaderSize = 10;
inline constexpr uint32_t kMaxPayload = 4u << 20;

enum class MessageType : uint8_t {
  kRequest = 1,
  kResponse = 2,
  kData = 3,  // streaming (ttrpc >= 1.2); parsed, then refused: vessel speaks unary only
};

// Flags of streaming frames, for the log line when one is refused.
inline constexpr uint8_t kFlagRemoteClosed = 0x1;
inline constexpr uint8_t kFlagRemoteOpen = 0x2;
inline constexpr uint8_t kFlagNoData = 0x4;

struct FrameHeader {
  uint32_t length = 0;  // payload bytes, header excluded
  uint32_t stream_id = 0;
  uint8_t type = 0;  // a MessageType, or anything a peer sent
  uint8_t flags = 0;

  bool operator==(const FrameHeader&) const = default;
};

std::array<uint8_t, kFrameHeaderSize> EncodeFrameHeader(const FrameHeader& header);

// Decodes the first kFrameHeaderSize bytes of `bytes` (which must hold that many) and checks what
// a header alone can violate: a payload over kMaxPayload, or a type that is not 1..3.
absl::StatusOr<FrameHeader> DecodeFrameHeader(absl::Span<const uint8_t> bytes);

std::string MessageTypeName(uint8_t type);

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_FRAME_H_
