// Where a shim listens and which shim serves a container: containerd 1.6's naming scheme
// (runtime/v2/shim/util_unix.go SocketAddress) and the CRI pod grouping.
#ifndef VESSEL_SHIM_ADDRESS_H_
#define VESSEL_SHIM_ADDRESS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace vessel::shim {

// containerd's shim socket directory (defaults.DefaultStateDir + "/s"), whatever containerd's own
// state directory is.
inline constexpr char kSocketDir[] = "/run/containerd/s";
// A sockaddr_un path limit containerd enforces (socketPathLimit).
inline constexpr size_t kSocketPathLimit = 106;

// CRI annotations (containerd's pkg/cri/annotations).
inline constexpr char kContainerTypeAnnotation[] = "io.kubernetes.cri.container-type";
inline constexpr char kSandboxIdAnnotation[] = "io.kubernetes.cri.sandbox-id";

// Go's filepath.Clean: one slash between elements, no "." elements, ".." resolved lexically.
std::string CleanPath(absl::string_view path);

// "unix:///run/containerd/s/<hex sha256 of filepath.Join(containerd_address, ns, id)>", exactly
// as shim.SocketAddress computes it. InvalidArgument when ns or id is empty.
absl::StatusOr<std::string> SocketAddress(absl::string_view containerd_address, absl::string_view ns,
                                          absl::string_view id);
// The filesystem path of a "unix://PATH" address; InvalidArgument for anything else (abstract
// sockets included) or a path over kSocketPathLimit.
absl::StatusOr<std::string> SocketPath(absl::string_view address);

// Which pod a container belongs to, from its OCI spec's annotations.
struct PodMembership {
  // The shim group and sandbox (VM) id: the CRI sandbox id, or the container's own id.
  std::string sandbox_id;
  // True for a CRI workload container ("container"); false for the pod's sandbox container or a
  // container outside any pod.
  bool joins_existing_pod = false;
};
// InvalidArgument when annotations is not an object of strings, or the sandbox id is not
// 1-64 characters of [A-Za-z0-9_.-].
absl::StatusOr<PodMembership> PodMembershipFromSpec(const nlohmann::json& spec,
                                                    absl::string_view container_id);

// A containerd namespace name (identifiers.Validate): [A-Za-z0-9]+([._-][A-Za-z0-9]+)*, at most 76
// characters. Safe as a path component.
bool IsValidNamespace(absl::string_view ns);

// [A-Za-z0-9_.-]{1,64}: what the SDK accepts as a sandbox or container id.
bool IsValidId(absl::string_view id);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_ADDRESS_H_
