// The agent's state (one sandbox, its containers and processes) and the vessel.agent.v1.Agent
// operations on it. Thread-safe: RPC handlers run on the ttrpc io thread and a thread pool, exits
// arrive from the reaper (Reap, on SIGCHLD).
#ifndef VESSEL_GUEST_AGENT_AGENT_H_
#define VESSEL_GUEST_AGENT_AGENT_H_

#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "guest/agent/cgroups.h"
#include "guest/agent/container.h"
#include "guest/agent/oom.h"
#include "guest/agent/stdio.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

struct AgentOptions {
  // Where guest paths live: "/" in the guest; a scratch directory in host mode.
  std::string root = "/";
  // The sandbox cgroup (cgroup v2); empty: no cgroups.
  std::string cgroup_root;
  // Host mode: never touch the machine's hostname (only container UTS namespaces).
  bool host_mode = false;
  std::unique_ptr<HostConnector> connector;
  // Called after a DestroySandbox RPC succeeded (as PID 1: power the VM off). May be empty.
  std::function<void()> on_sandbox_destroyed;
};

class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  ~Agent();  // Shutdown()
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  absl::Status CreateSandbox(const v1::CreateSandboxRequest& req);
  const AgentOptions& options() const { return options_; }
  absl::Status DestroySandbox(const v1::DestroySandboxRequest& req);
  absl::StatusOr<v1::CreateContainerResponse> CreateContainer(
      const v1::CreateContainerRequest& req);
  absl::Status StartContainer(const v1::StartContainerRequest& req);
  absl::StatusOr<v1::ExecProcessResponse> ExecProcess(const v1::ExecProcessRequest& req);
  // Answers now if the process has exited, else when it does. Never blocks.
  void WaitProcess(const v1::WaitProcessRequest& req,
                   ttrpc::TypedReply<v1::WaitProcessResponse> reply);
  absl::Status SignalProcess(const v1::SignalProcessRequest& req);
  absl::Status RemoveContainer(const v1::RemoveContainerRequest& req);
  absl::Status ResizeTty(const v1::ResizeTtyRequest& req);
  absl::Status CloseStdin(const v1::CloseStdinRequest& req);
  absl::StatusOr<v1::StatsContainerResponse> StatsContainer(const v1::StatsContainerRequest& req);
  // Long poll; answered Cancelled on shutdown.
  void GetOOMEvent(ttrpc::TypedReply<v1::OOMEvent> reply);

  // Reaps every exited child (call on SIGCHLD) and answers the waiters of those that are done.
  void Reap();
  // Kills every process, removes every container, unmounts storages, answers long polls.
  // Idempotent.
  void Shutdown();

 private:
  explicit Agent(AgentOptions options) : options_(std::move(options)) {}

  using Waiters =
      std::vector<std::pair<ttrpc::TypedReply<v1::WaitProcessResponse>, v1::WaitProcessResponse>>;
  // With mu_ held: takes the waiters of a finished process.
  static void TakeWaiters(ProcessState& p, Waiters& out);
  static void Answer(Waiters& waiters);
  void OnRelayDone(const std::string& container_id, const std::string& exec_id);
  void OnOom(const std::string& container_id);

  absl::StatusOr<std::shared_ptr<ProcessState>> FindProcessLocked(const std::string& container_id,
                                                                  const std::string& exec_id);
  // Kills what is left of `c` and waits (up to 5 s) until the reaper has reaped it all.
  void KillAndWaitLocked(std::unique_lock<std::mutex>& lock, Container& c);
  // Unmounts storages and removes the cgroup of a container no longer in the map.
  absl::Status Dispose(std::unique_ptr<Container> c);
  absl::Status StartRelay(const std::string& container_id, const std::string& exec_id,
                          ProcessState& p, ChildStdio& stdio);

  const AgentOptions options_;
  CgroupRoot cgroup_root_;

  std::mutex mu_;
  std::condition_variable reaped_cv_;
  bool sandbox_created_ = false;
  bool shut_down_ = false;
  std::string sandbox_id_;
  std::string hostname_;
  std::vector<std::string> sandbox_storages_;
  // sandbox_pidns: pid 1 of the PID namespace the containers share (reaps orphans, holds it open).
  pid_t pidns_holder_ = -1;
  ScopedFd pidns_fd_;
  std::map<std::string, std::unique_ptr<Container>> containers_;
  std::map<std::string, bool> creating_;  // ids reserved by a CreateContainer in progress
  std::map<pid_t, std::shared_ptr<ProcessState>> by_pid_;
  std::vector<ttrpc::TypedReply<v1::OOMEvent>> oom_waiters_;
  std::deque<std::string> oom_events_;       // not yet taken by a GetOOMEvent (bounded)
  std::unique_ptr<OomWatcher> oom_watcher_;  // last: its thread calls OnOom
};

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_AGENT_H_
