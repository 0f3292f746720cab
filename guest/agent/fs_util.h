// Small file-system helpers for the agent: whole small files (cgroup and /proc files), mkdir -p,
// and validation of names and paths that arrive from the host (untrusted).
#ifndef VESSEL_GUEST_AGENT_FS_UTIL_H_
#define VESSEL_GUEST_AGENT_FS_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vessel::agent {

// Reads up to 1 MiB of `path` (cgroup and procfs files report size 0, so this reads to EOF).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path);
// open(O_WRONLY) + one write(2): what cgroup control files need.
absl::Status WriteSmallFile(const std::string& path, absl::string_view data);
// Creates `path` and its missing parents (mode 0755).
absl::Status MkdirAll(const std::string& path);

// A container/exec/sandbox id: 1..128 chars of [A-Za-z0-9_.-], not "." or "..".
absl::Status ValidateId(absl::string_view what, absl::string_view id);
// An absolute path without "." or ".." components or NUL bytes.
absl::Status ValidateAbsolutePath(absl::string_view what, absl::string_view path);

// Maps a guest path onto the agent's root: "/" in the guest, a scratch directory in host mode
// (see --root). The path must have passed ValidateAbsolutePath.
std::string UnderRoot(const std::string& root, absl::string_view path);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_FS_UTIL_H_
