// Where the shim's sandboxes keep their host state, and removing what a dead shim left there.
// The SDK keeps a sandbox in <state_dir>/sandboxes/<id> (console log, vsock socket, the share with
// the containers' rootfs bind mounts). The shim gives each containerd namespace its own state_dir,
// so equal ids in two namespaces never collide; within a namespace only the shim that owns the
// group's socket uses <id>, so a directory found there at boot or by `delete` is stale.
#ifndef VESSEL_SHIM_STATE_H_
#define VESSEL_SHIM_STATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vessel::shim {

// <base>/<namespace>.
std::string ShimStateDir(const std::string& base, const std::string& ns);
// <state_dir>/sandboxes/<sandbox_id>, as the SDK lays it out.
std::string SandboxStateDir(const std::string& state_dir, const std::string& sandbox_id);

// The sandbox whose share holds <container_id> (<state_dir>/sandboxes/*/shared/<container_id>),
// "" if none. Container ids are unique in a namespace, so at most one matches.
std::string FindSandboxOf(const std::string& state_dir, const std::string& container_id);

// Mount points at or below `dir` in a /proc/self/mountinfo text, deepest first, octal escapes
// (\040) decoded, each once.
std::vector<std::string> MountsUnder(const std::string& dir, const std::string& mountinfo_text);

// Unmounts everything under <sandbox_dir>/shared/<container_id> and removes it; then, when no
// container is left in the share (or container_id is empty), unmounts everything under
// sandbox_dir and removes it. Never deletes through a mount: a directory with something still
// mounted below is left (FailedPrecondition naming it). A missing directory is fine.
absl::Status RemoveSandboxState(const std::string& sandbox_dir, const std::string& container_id);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_STATE_H_
