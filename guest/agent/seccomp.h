// Seccomp filters from the OCI spec (v1::LinuxSeccomp): the agent compiles them with libseccomp
// into a classic BPF program before it clones; the child installs that program with the raw
// seccomp(2) system call (no libseccomp, no allocation in the clone).
#ifndef VESSEL_GUEST_AGENT_SECCOMP_H_
#define VESSEL_GUEST_AGENT_SECCOMP_H_

#include <linux/filter.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {

// A compiled filter, shared by the container's init and its exec'd processes.
struct SeccompProgram {
  std::vector<sock_filter> instructions;
  unsigned int flags = 0;  // SECCOMP_FILTER_FLAG_*
};

// InvalidArgument naming the field for an unknown action, architecture, flag, operator, an
// argument index over 5 or an errno over 4095; system call names libseccomp does not know are
// skipped (one log line naming them), like runc. An empty default_action is InvalidArgument too.
absl::StatusOr<std::shared_ptr<const SeccompProgram>> CompileSeccomp(const v1::LinuxSeccomp& spec);

// Child side, system calls only: installs `program`. Returns 0 or an errno.
int InstallSeccomp(const SeccompProgram& program);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_SECCOMP_H_
