// Host-side mounts that put a container's files into the sandbox share (bind mounts), and their
// removal. The share is a host directory served to the guest over virtio-fs; anything bind-mounted
// under it is visible to the guest at the same relative path.
#ifndef VESSEL_SANDBOX_HOST_MOUNTS_H_
#define VESSEL_SANDBOX_HOST_MOUNTS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vessel::sandbox {

// Bind-mounts `source` (a directory or a file, recursively) at `target` (created: a directory, or
// an empty file for a file source; its parent must exist). With `readonly` the bind mount itself is
// read-only on the host, so the guest cannot write through it whatever it does.
absl::Status BindMount(const std::string& source, const std::string& target, bool readonly);
// Lazily unmounts `target` (MNT_DETACH; not mounted is fine) and removes the empty directory or
// file left behind.
absl::Status UnmountAndRemove(const std::string& target);
// True when some mount point of this process lies at or below `dir` (from /proc/self/mountinfo).
bool HasMountsUnder(const std::string& dir);
// Removes `dir` and everything in it, but refuses (FailedPrecondition) while anything is mounted
// below it: a forgotten bind mount of a user's rootfs must never be deleted through.
absl::Status RemoveTreeIfUnmounted(const std::string& dir);

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_HOST_MOUNTS_H_
