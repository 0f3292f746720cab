// vessel.agent.v1.Agent on a ttrpc server: which handler runs where. Calls that
// may block (clone, mounts, waiting for a child's report) run on `pool`;
// WaitProcess and GetOOMEvent are asynchronous (answered by the reaper or the
// OOM watcher, no thread per waiter); the rest answer on the io thread.
#ifndef VESSEL_GUEST_AGENT_SERVICE_H_
#define VESSEL_GUEST_AGENT_SERVICE_H_

#include <boost/asio/thread_pool.hpp>
#include <cstdint>

#include "absl/status/status.h"
#include "guest/agent/agent.h"
#include "rpc/ttrpc/server.h"

namespace vessel::agent {

inline constexpr char kAgentService[] = "vessel.agent.v1.Agent";
inline constexpr char kAgentVersion[] = VESSEL_AGENT_VERSION;

// Resident memory of this process in bytes, from /proc/self/smaps_rollup (statm
// without it); zeros if neither can be read.
struct AgentRss {
  uint64_t total = 0;  // Rss
  uint64_t file = 0;   // Rss - Anonymous: the binary's mapped pages (and shmem)
};
AgentRss ReadAgentRss();

absl::Status RegisterAgentService(ttrpc::Server& server, boost::asio::thread_pool& pool,
                                  Agent& agent);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_SERVICE_H_
