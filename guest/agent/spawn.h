// Creating a process: the parent validates the request and precomputes everything (argv, env,
// candidate executable paths, mount steps, error messages); the child, cloned from a
// multithreaded agent, runs system calls only (no allocation, no locks) and reports failures
// through a CLOEXEC pipe like runc: a record means it failed, EOF means execve succeeded.
#ifndef VESSEL_GUEST_AGENT_SPAWN_H_
#define VESSEL_GUEST_AGENT_SPAWN_H_

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "guest/agent/mounts.h"
#include "guest/agent/namespaces.h"
#include "guest/agent/seccomp.h"
#include "guest/agent/stdio.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

// A v1::Process turned into what the child needs.
struct ProcessPlan {
  std::vector<std::string> argv, env;
  std::vector<char*> argv_c, env_c;         // NULL-terminated views of the above
  std::vector<std::string> exe_candidates;  // args[0], or each $PATH entry + "/" + args[0]
  std::string exe_not_found;                // the error message when none is executable
  std::string cwd, cwd_error;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> additional_gids;
  std::vector<std::pair<int, rlimit>> rlimits;
  std::string rlimit_error;
  uint64_t bounding = 0, effective = 0, permitted = 0, inheritable = 0, ambient = 0;
  bool no_new_privileges = false;
  bool terminal = false;
};

// InvalidArgument for empty args, a relative cwd, an unknown rlimit or capability name.
absl::StatusOr<ProcessPlan> PlanProcess(const v1::Process& process);

struct SpawnRequest {
  ProcessPlan* process = nullptr;
  NamespacePlan* namespaces = nullptr;
  const RootfsPlan* rootfs = nullptr;  // container init only: build the file system, pivot_root
  std::string hostname;                // set in the new UTS namespace
  int cgroup_procs_fd = -1;            // the child writes "0" here first
  ChildStdio* stdio = nullptr;
  bool wait_for_start = false;  // container init: report ready, block until Start
  // Installed with no_new_privileges as the last step before execve (after Start); without it
  // before capabilities and ids are dropped (it needs CAP_SYS_ADMIN then), as runc does.
  const SeccompProgram* seccomp = nullptr;
};

struct Spawned {
  pid_t pid = -1;
  ScopedFd report;  // read end of the child's error pipe
  ScopedFd start;   // write end of the start pipe (wait_for_start)
};

// Clones the child. The caller must hold whatever lock the reaper takes, so that the pid is
// registered before its exit can be reaped.
absl::StatusOr<Spawned> Spawn(SpawnRequest& request);

// Reads one report from the child. expect_ready: the child must say "ready" (Create); otherwise
// EOF means the exec happened (Start, Exec). A failure comes back as InvalidArgument (the request
// could not work: missing executable, bad cwd, bad mount) or Internal, with the child's message.
// With expect_ready, `pty_master_fd` (may be null) receives the fd number of the pty master a
// child with ChildStdio::pty_in_child holds (-1 otherwise).
absl::Status ReadChildReport(int fd, bool expect_ready, int* pty_master_fd = nullptr);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_SPAWN_H_
