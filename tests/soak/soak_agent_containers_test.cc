// Issue 10 soak: 1,000 containers (~2-3 s here) created, started (stdout and stderr on Unix
// sockets, read to EOF), waited and removed one after another in one sandbox of vessel-agent in
// host mode (a child process serving ttrpc on a Unix socket, as tests/agent does). The agent's
// open fds, threads, mounts and mappings (/proc/<pid>) and this client's must be back at their
// post-warm-up baseline exactly, the agent's container cgroups gone, VmRSS within 512 KiB (agent)
// and 1 MiB (client): the reasons are in bench/soak/soak.h. Needs root. `vessel_soak
// --containers N` runs any count.
#include <unistd.h>

#include <cstdio>

#include "absl/status/status.h"
#include "bench/soak/soak.h"
#include "gtest/gtest.h"

namespace vessel::soak {
namespace {

TEST(SoakAgentContainers, ThousandContainersReturnToBaseline) {
  if (::geteuid() != 0) GTEST_SKIP() << "the agent needs root (namespaces, mounts, cgroups)";
  // Other programs' mounts on this shared host must not move the mount counts (the agent, our
  // child, inherits the private namespace).
  absl::Status isolated = IsolateMounts();
  if (!isolated.ok()) std::printf("note: %s\n", isolated.ToString().c_str());
  AgentSoakOptions o;
  o.agent_path = VESSEL_AGENT_PATH;
  o.busybox_path = VESSEL_BUSYBOX_PATH;
  o.iterations = 1000;
  o.warmup = 10;
  o.trace_every = 100;
  SoakResult r = AgentContainerSoak(o);
  std::printf("%s", r.Table().c_str());
  EXPECT_EQ(r.completed, o.iterations);
  for (const std::string& p : r.Problems()) ADD_FAILURE() << p;
}

}  // namespace
}  // namespace vessel::soak
