// The sandbox's and container's state behind the public API (sandbox.h).
#ifndef VESSEL_SANDBOX_SANDBOX_IMPL_H_
#define VESSEL_SANDBOX_SANDBOX_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rpc/ttrpc/io_thread.h"
#include "sandbox/agent_client.h"
#include "sandbox/network/tc_mirror.h"
#include "sandbox/stdio_stream.h"
#include "vessel/sandbox/sandbox.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/machine.h"

namespace vessel::sandbox {

// The MAC a network template's guest NIC is probed with (locally administered); a clone's agent
// gives the NIC the pod's MAC.
inline constexpr char kTemplateMac[] = "02:76:73:00:00:01";

// The guest path where the agent mounts the sandbox share.
inline constexpr char kGuestShareDir[] = "/run/vessel/shared";
inline constexpr char kShareTag[] = "vessel-shared";
inline constexpr char kTapName[] = "tap0_vessel";

class SandboxImpl;

// One process of a container (exec_id "" = init): its stdio streams and its exit.
struct ProcessState {
  std::string exec_id;
  uint32_t pid = 0;  // guest pid of an exec (the init's is ContainerImpl::pid_)
  std::vector<std::unique_ptr<StdioStream>> streams;
  StdioStream* input = nullptr;  // the stream stdin goes through, if any
  std::thread reaper;            // WaitProcess, then output drain, then the exit event
  bool reaper_started = false;
  std::optional<absl::StatusOr<uint32_t>> exit;
  std::vector<std::pair<boost::asio::any_io_executor, std::function<void(absl::StatusOr<uint32_t>)>>>
      async_waiters;
};

class ContainerImpl {
 public:
  ContainerImpl(SandboxImpl* sandbox, std::string id, std::string host_dir)
      : sandbox_(sandbox), id_(std::move(id)), host_dir_(std::move(host_dir)) {}
  ~ContainerImpl();

  const std::string& id() const { return id_; }
  uint32_t pid() const { return pid_; }
  uint32_t ProcessPid(const std::string& exec_id);

  absl::Status Create(ContainerConfig config);
  absl::Status Start();
  absl::Status Exec(ExecConfig config);
  absl::StatusOr<uint32_t> Wait(const std::string& exec_id);
  void AsyncWait(const std::string& exec_id, boost::asio::any_io_executor executor,
                 std::function<void(absl::StatusOr<uint32_t>)> done);
  absl::Status Signal(int signal, const std::string& exec_id, bool all);
  absl::Status ResizeTty(uint32_t rows, uint32_t columns, const std::string& exec_id);
  absl::Status CloseStdin(const std::string& exec_id);
  absl::StatusOr<agent::v1::StatsContainerResponse> Stats();
  // Kills what runs, removes it in the guest (unless the agent is gone), joins every thread and
  // undoes the host mounts.
  absl::Status Remove(bool agent_alive);

 private:
  // Listens for the process's stdio streams and fills `stdio` with their ports.
  absl::Status WireStdio(const StdioConfig& config, const std::string& exec_id, ProcessState& process,
                         agent::v1::Stdio* stdio);
  void StartReaper(ProcessState& process);
  void Reap(ProcessState* process);
  absl::Status Teardown();

  SandboxImpl* const sandbox_;
  const std::string id_;
  const std::string host_dir_;              // <share>/<id>: rootfs and bind mount points
  std::vector<std::string> host_mounts_;    // bind mounts under host_dir_, in mount order
  uint32_t pid_ = 0;
  bool created_ = false;
  bool terminal_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<ProcessState>> processes_;
};

class SandboxImpl {
 public:
  static absl::StatusOr<std::unique_ptr<SandboxImpl>> Create(SandboxConfig config, SandboxEvents events);
  // For BuildTemplate: boots `config`'s VM (never from a template) until the agent answers, pauses
  // it, saves it to `snapshot_dir`, then stops and cleans up.
  static absl::StatusOr<SnapshotInfo> BootAndSnapshot(SandboxConfig config, const std::string& snapshot_dir,
                                                      bool network);
  ~SandboxImpl();

  absl::StatusOr<Container*> CreateContainer(ContainerConfig config);
  Container* GetContainer(const std::string& id);
  absl::Status RemoveContainer(const std::string& id);
  absl::Status Stop(std::chrono::milliseconds deadline);

  const std::string& id() const { return config_.id; }
  const std::string& dir() const { return dir_; }
  std::string ConsoleTail(size_t bytes) const;
  SandboxTimeline timeline() const { return timeline_; }
  std::string platform() const;

  // For containers.
  AgentClient& agent() { return *agent_; }
  const std::string& vsock_uds() const { return uds_; }
  const std::string& share_dir() const { return share_dir_; }
  uint32_t NextPort() { return next_port_.fetch_add(1); }
  const SandboxEvents& events() const { return events_; }
  bool has_dns() const { return !config_.dns.empty(); }
  bool agent_alive() const { return agent_ != nullptr && !agent_->raw().closed(); }

 private:
  SandboxImpl(SandboxConfig config, SandboxEvents events)
      : config_(std::move(config)), events_(std::move(events)) {}
  absl::Status Boot();
  // Machine::Restore from the template for the configuration when there is one that applies;
  // nullptr (with timeline_.start_path saying why) when the sandbox must cold-boot.
  std::unique_ptr<Machine> RestoreFromTemplate(const MachineConfig& mc);
  // A restored guest is a copy of the template's: fresh entropy and the host's time.
  absl::Status MakeRestoredGuestUnique();
  void OnConsole(absl::string_view bytes);
  std::optional<std::string> VmEnded();
  void WatchOom();
  absl::Status Cleanup();

  const SandboxConfig config_;
  const SandboxEvents events_;
  std::string dir_;
  std::string share_dir_;
  std::string uds_;
  SandboxTimeline timeline_;
  std::string snapshot_to_;  // BootAndSnapshot's directory
  bool template_network_ = false;    // BootAndSnapshot: give the VM a network device
  std::string template_device_mac_;  // restored with a network device: the MAC its guest NIC has

  mutable std::mutex console_mu_;
  std::string console_tail_;  // the last kConsoleTail bytes
  ScopedFd console_log_;

  std::unique_ptr<ttrpc::IoThread> io_;
  std::unique_ptr<Machine> machine_;
  std::optional<network::TcMirror> tc_;
  std::thread vm_waiter_;
  std::mutex vm_mu_;
  std::condition_variable vm_cv_;
  std::optional<MachineExit> vm_exit_;
  std::unique_ptr<AgentClient> agent_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> next_port_{0x10000};

  std::mutex mu_;  // containers_, stopped_
  std::map<std::string, std::unique_ptr<Container>> containers_;
  bool stopped_ = false;
};

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_SANDBOX_IMPL_H_
