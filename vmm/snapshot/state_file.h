// The snapshot state file: a 24-byte header (magic "VSLSNAP1", format version, CRC-32 of the
// payload, payload length) followed by one serialized vessel.snapshot.v1.SnapshotState.
//
// Reading trusts nothing: a short file, another magic, an unknown format version, a payload
// length over the cap or past the end of the file, a checksum mismatch and a payload protobuf
// cannot parse are each refused with an error that names the file and what was wrong.
#ifndef VESSEL_VMM_SNAPSHOT_STATE_FILE_H_
#define VESSEL_VMM_SNAPSHOT_STATE_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel::snapshot {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kMaxStatePayload = 64ull << 20;
inline constexpr size_t kStateHeaderBytes = 24;

// The file names inside a snapshot directory.
inline constexpr char kStateFileName[] = "state";
inline constexpr char kMemoryFileName[] = "memory";

// Header + payload, as written to disk.
std::string EncodeStateFile(const v1::SnapshotState& state);
// `what` names the source in errors (a path).
absl::StatusOr<v1::SnapshotState> DecodeStateFile(absl::string_view bytes, absl::string_view what);

// Writes atomically (a temporary file in the same directory, fsync, rename).
absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state);
absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path);

}  // namespace vessel::snapshot

#endif  // VESSEL_VMM_SNAPSHOT_STATE_FILE_H_
