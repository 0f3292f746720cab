// What the agent knows about a container and its processes. Guarded by Agent's mutex.
#ifndef VESSEL_GUEST_AGENT_CONTAINER_H_
#define VESSEL_GUEST_AGENT_CONTAINER_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "guest/agent/cgroups.h"
#include "guest/agent/seccomp.h"
#include "guest/agent/stdio.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

// One process (a container's init or an exec). Its exit is recorded by the reaper the moment it
// is reaped, so a WaitProcess that comes later still gets it.
struct ProcessState {
  std::string container_id, exec_id;
  pid_t pid = -1;
  bool reaped = false;
  uint32_t exit_status = 0;  // exit code, or 128 + signal
  absl::Time exited_at;
  bool io_done = true;     // terminal: the relay has forwarded all output
  ScopedFd stdin_control;  // non-terminal stdin socket (CloseStdin)
  std::unique_ptr<PtyRelay> relay;
  std::vector<ttrpc::TypedReply<v1::WaitProcessResponse>> waiters;

  bool exited() const { return reaped && io_done; }
};

struct Container {
  enum class State { kCreated, kStarting, kRunning };
  std::string id;
  State state = State::kCreated;
  std::shared_ptr<ProcessState> init;
  std::map<std::string, std::shared_ptr<ProcessState>> execs;
  ScopedFd start_fd;   // write a byte: init execs
  ScopedFd report_fd;  // init's error pipe
  ContainerCgroup cgroup;
  std::vector<std::string> storages;  // mount points (agent view) to unmount on removal
  std::shared_ptr<const SeccompProgram> seccomp;  // the spec's filter, for init and execs
};

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_CONTAINER_H_
