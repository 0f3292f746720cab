// OCI runtime spec (config.json) → the agent's CreateContainerRequest / Process.
//
// The spec is untrusted (it comes from containerd or a user): every field is type-checked and a bad
// one is InvalidArgument naming its JSON path. Bind mounts are not resolved here: their host sources
// are returned to the caller (the sandbox shares them into the guest and rewrites the source).
#ifndef VESSEL_SANDBOX_OCI_SPEC_H_
#define VESSEL_SANDBOX_OCI_SPEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::sandbox {

// A bind mount whose host source must be made visible in the guest: `mount_index` is its index in
// the request's mounts; the caller sets that mount's source to the guest path.
struct HostBindMount {
  int mount_index = 0;
  std::string host_source;
};

struct ConvertedSpec {
  agent::v1::CreateContainerRequest request;  // container_id, rootfs and stdio left empty
  std::vector<HostBindMount> binds;
};

// Limits on what a spec may hold (bounded work for untrusted input).
inline constexpr size_t kMaxSpecArgs = 4096;
inline constexpr size_t kMaxSpecMounts = 512;

absl::StatusOr<ConvertedSpec> ConvertOciSpec(const nlohmann::json& spec);
// An OCI "process" object alone (exec).
absl::StatusOr<agent::v1::Process> ConvertOciProcess(const nlohmann::json& process,
                                                     const std::string& where = "process");

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_OCI_SPEC_H_
