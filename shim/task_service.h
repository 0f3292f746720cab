// containerd.task.v2.Task on top of one pod sandbox: the tasks (containers) and their processes,
// their states and exits, waiters, stdio and events. Blocking work (the sandbox boot, agent calls)
// runs on the caller's thread: the ttrpc registration puts those methods on a thread pool and Wait
// on no thread at all.
#ifndef VESSEL_SHIM_TASK_SERVICE_H_
#define VESSEL_SHIM_TASK_SERVICE_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/thread_pool.hpp>
#include <google/protobuf/empty.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "containerd/task/v2/shim.pb.h"
#include "io/containerd/cgroups/v2/metrics.pb.h"
#include "nlohmann/json.hpp"
#include "rpc/ttrpc/server.h"
#include "shim/backend.h"
#include "shim/events.h"
#include "shim/log.h"
#include "vessel/sandbox/config.h"

namespace vessel::shim {

inline constexpr char kTaskService[] = "containerd.task.v2.Task";
inline constexpr char kShimVersion[] = "0.1.0";

struct TaskServiceOptions {
  std::string ns;
  sandbox::RuntimeConfig runtime;
  PodFactory pod_factory;
  EventPublisher* events = nullptr;  // not owned; outlives the service
  ShimLog* log = nullptr;            // not owned
  // Called (once) when Shutdown finds no task left: the process should stop serving and exit.
  std::function<void()> request_exit;
};

// containerd's meaning of an error, from an SDK or agent status: FailedPrecondition "already
// exited" from a signal is NotFound "process already finished" (what runc's shim answers);
// everything else keeps its code, with `what` in front of the message.
absl::Status ForContainerd(const absl::Status& status, absl::string_view what);

// The OCI spec's network namespace path (linux.namespaces[type=network].path), "" if none.
// InvalidArgument for a relative path.
absl::StatusOr<std::string> NetnsPathFromSpec(const nlohmann::json& spec);

// containerd's cgroup v2 Metrics from the agent's numbers ("no limit", 0 in the agent, is
// math.MaxUint64 as containerd's cgroups package reports "max").
io::containerd::cgroups::v2::Metrics MetricsFromAgent(const agent::v1::StatsContainerResponse& stats);

// The container's root directory without rootfs mounts: the spec's root.path, relative to the
// bundle unless absolute ("rootfs" when absent).
absl::StatusOr<std::string> RootPathFromSpec(const nlohmann::json& spec, const std::string& bundle);

class TaskService {
 public:
  using WaitReply = std::function<void(const absl::StatusOr<containerd::task::v2::WaitResponse>&)>;

  explicit TaskService(TaskServiceOptions options);
  ~TaskService();  // Teardown()
  TaskService(const TaskService&) = delete;
  TaskService& operator=(const TaskService&) = delete;

  absl::StatusOr<containerd::task::v2::CreateTaskResponse> Create(
      const containerd::task::v2::CreateTaskRequest& req);
  absl::StatusOr<containerd::task::v2::StartResponse> Start(const containerd::task::v2::StartRequest& req);
  absl::StatusOr<containerd::task::v2::DeleteResponse> Delete(const containerd::task::v2::DeleteRequest& req);
  absl::StatusOr<google::protobuf::Empty> Exec(const containerd::task::v2::ExecProcessRequest& req);
  absl::StatusOr<containerd::task::v2::StateResponse> State(const containerd::task::v2::StateRequest& req);
  absl::StatusOr<google::protobuf::Empty> Kill(const containerd::task::v2::KillRequest& req);
  // Answers through `reply` once the process exited (at once if it has).
  void Wait(const containerd::task::v2::WaitRequest& req, WaitReply reply);
  absl::StatusOr<containerd::task::v2::PidsResponse> Pids(const containerd::task::v2::PidsRequest& req);
  absl::StatusOr<google::protobuf::Empty> CloseIO(const containerd::task::v2::CloseIORequest& req);
  absl::StatusOr<google::protobuf::Empty> ResizePty(const containerd::task::v2::ResizePtyRequest& req);
  absl::StatusOr<containerd::task::v2::ConnectResponse> Connect(const containerd::task::v2::ConnectRequest& req);
  absl::StatusOr<google::protobuf::Empty> Shutdown(const containerd::task::v2::ShutdownRequest& req);
  absl::StatusOr<containerd::task::v2::StatsResponse> Stats(const containerd::task::v2::StatsRequest& req);
  // SIGSTOP / SIGCONT to every process of the container (the guest kernel has no freezer
  // interface in the agent yet): State says PAUSED in between.
  absl::StatusOr<google::protobuf::Empty> Pause(const containerd::task::v2::PauseRequest& req);
  absl::StatusOr<google::protobuf::Empty> Resume(const containerd::task::v2::ResumeRequest& req);
  absl::StatusOr<google::protobuf::Empty> Update(const containerd::task::v2::UpdateTaskRequest& req);
  absl::StatusOr<google::protobuf::Empty> Checkpoint(const containerd::task::v2::CheckpointTaskRequest& req);

  // The sandbox's exit and OOM reports (SandboxEvents), also called by the backend's WatchExit.
  void OnExit(const std::string& container_id, const std::string& exec_id, absl::StatusOr<uint32_t> status);
  void OnOom(const std::string& container_id);

  // Stops the sandbox, unmounts what is left, fails pending waiters. Idempotent.
  void Teardown();

  // The pod sandbox id once the first task created it ("" before).
  std::string sandbox_id() const;
  size_t task_count() const;

 private:
  struct Proc {
    std::string exec_id;
    uint32_t pid = 0;
    containerd::v1::types::Status status = containerd::v1::types::CREATED;
    std::string stdin_path, stdout_path, stderr_path;
    bool terminal = false;
    nlohmann::json process_spec;  // exec: the OCI process
    bool starting = false;        // Start in flight: its exit event waits for the start event
    bool exited = false;
    bool exit_event_pending = false;
    uint32_t exit_status = 0;
    absl::Time exited_at;
    std::vector<WaitReply> waiters;
  };
  struct Task {
    std::string id;
    std::string bundle;
    std::string rootfs;  // <bundle>/rootfs
    bool rootfs_mounted = false;
    bool deleting = false;
    bool paused = false;  // every process SIGSTOPped (Pause)
    Proc init;
    std::map<std::string, Proc> execs;
  };

  // The process, or NotFound naming it.
  absl::StatusOr<Proc*> FindLocked(const std::string& id, const std::string& exec_id);
  absl::StatusOr<google::protobuf::Empty> SetPaused(const std::string& id, bool paused);
  void FillState(const Task& task, const Proc& proc, containerd::task::v2::StateResponse* out) const;
  absl::StatusOr<std::shared_ptr<PodBackend>> EnsurePod(const std::string& container_id, const nlohmann::json& spec,
                                        const std::string& sandbox_id);
  void PublishExitLocked(const Task& task, const Proc& proc);
  void WatchExit(const std::shared_ptr<PodBackend>& pod, const std::string& id, const std::string& exec_id);

  const TaskServiceOptions options_;

  std::mutex create_mu_;  // serializes the pod's creation
  mutable std::mutex mu_;
  // Set once under both locks; Teardown stops it and drops it. Handlers hold a reference while
  // they use it, so a call in flight at teardown fails instead of touching a freed pod.
  std::shared_ptr<PodBackend> pod_;
  std::string sandbox_id_;           // mu_
  std::map<std::string, Task> tasks_;  // mu_
  std::set<std::string> creating_;     // mu_: ids whose Create is in flight
  bool exit_requested_ = false;        // mu_
  bool torn_down_ = false;             // mu_
};

// Registers the 17 methods: Wait asynchronously, the rest on `pool` (they may block on the VM).
absl::Status RegisterTaskService(ttrpc::Server& server, boost::asio::thread_pool& pool, TaskService& service);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_TASK_SERVICE_H_
