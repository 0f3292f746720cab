// The shim binary's three modes: `start` (containerd asks for a shim address), `delete` (cleanup
// after a dead shim) and serving (the long-running process `start` spawned).
#ifndef VESSEL_SHIM_COMMANDS_H_
#define VESSEL_SHIM_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "vessel/sandbox/config.h"

namespace vessel::shim {

struct ShimFlags {
  bool debug = false;
  bool version = false;
  std::string ns;              // -namespace
  std::string id;              // -id
  std::string address;         // -address: containerd's gRPC socket (hashed into our socket name)
  std::string publish_binary;  // -publish-binary (unused: events go over TTRPC_ADDRESS)
  std::string bundle;          // -bundle (delete); default: the working directory
  std::string socket;          // -socket: listen here instead of on the inherited fd 3
  std::string action;          // "start", "delete" or "" (serve)
};

// Go's flag package syntax, as containerd calls shims: -name value, -name=value, --name, boolean
// -debug/-v; the first non-flag argument is the action. InvalidArgument for unknown flags, a
// missing value, or an unknown action.
absl::StatusOr<ShimFlags> ParseFlags(const std::vector<std::string>& args);

// What `delete` prints: a containerd.task.v2.DeleteResponse (pid, exit status 137 = SIGKILL,
// exited_at), serialized.
std::string DeleteResponseBytes(uint32_t pid, absl::Time exited_at);

// $VESSEL_RUNTIME_CONFIG, else /etc/vessel/runtime.json if present, else the SDK's defaults.
absl::StatusOr<sandbox::RuntimeConfig> LoadShimRuntimeConfig();

int RunStart(const ShimFlags& flags);
int RunDelete(const ShimFlags& flags);
int RunServe(const ShimFlags& flags);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_COMMANDS_H_
