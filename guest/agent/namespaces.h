// Namespaces of a container: which to create (clone flags) and which to join (setns fds), from
// the request; and the fds an exec needs to enter a running container's namespaces.
#ifndef VESSEL_GUEST_AGENT_NAMESPACES_H_
#define VESSEL_GUEST_AGENT_NAMESPACES_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

struct NamespaceJoin {
  ScopedFd fd;
  int nstype = 0;  // CLONE_NEW*
  std::string what;
};

struct NamespacePlan {
  int clone_flags = 0;              // created by clone (mnt, uts, ipc, pid, net)
  bool new_cgroup_ns = false;       // unshared after the child joined its cgroup
  ScopedFd join_pid;                // joined before clone (pid_for_children), see Spawn
  std::vector<NamespaceJoin> join;  // joined in the child (setns)
};

// Validates the list (known types, no duplicates, no user namespace, a mount namespace present)
// and opens the paths to join, mapped under `root`.
absl::StatusOr<NamespacePlan> PlanNamespaces(
    const google::protobuf::RepeatedPtrField<v1::Namespace>& namespaces, const std::string& root);

// For an exec: joins every namespace of `pid` that differs from the agent's own.
absl::StatusOr<NamespacePlan> PlanJoinProcess(pid_t pid);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_NAMESPACES_H_
