// The sandbox SDK: a VM in this process, and containers in it.
//
//   auto sandbox = vessel::sandbox::Sandbox::Create({.id = "pod1"});   // boots, waits for the agent
//   auto* c = (*sandbox)->CreateContainer({.id = "c1", .spec = DefaultOciSpec({"sh", "-c", "echo hi"}),
//                                         .rootfs_dir = "/srv/busybox", .stdio = {.stdout_fd = 1}});
//   (*c)->Start();  uint32_t status = *(*c)->Wait();  (*sandbox)->RemoveContainer("c1");
//   (*sandbox)->Stop();
//
// Every method is thread-safe; several sandboxes may live in one process. Blocking methods (Create,
// Wait, Stop) must not run on an io_context thread that the caller also needs for their completion:
// use the Async variants (which post the result to the caller's executor) there.
#ifndef VESSEL_SANDBOX_SANDBOX_H_
#define VESSEL_SANDBOX_SANDBOX_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vessel/sandbox/config.h"

namespace vessel::agent::v1 {
class StatsContainerResponse;
}

namespace vessel::sandbox {

class SandboxImpl;
class ContainerImpl;

// Called on an internal thread; must not block for long and must not call Wait/Stop.
struct SandboxEvents {
  // A process exited (after all its output was delivered). exec_id "" = the container's init.
  // status: the exit code, or 128 + the signal that killed it.
  std::function<void(const std::string& container_id, const std::string& exec_id, uint32_t status)>
      on_exit;
  // A container hit its memory limit and the guest kernel killed a process in it.
  std::function<void(const std::string& container_id)> on_oom;
};

// Where Sandbox::Create's time went.
struct SandboxTimeline {
  std::chrono::nanoseconds vm_setup{0};      // config checks, share, Machine::Create, vCPUs started
  std::chrono::nanoseconds agent_ready{0};   // vCPUs started -> the agent answered Version
  std::chrono::nanoseconds sandbox_ready{0}; // -> CreateSandbox done (shares mounted, network up)
  // Restored from a template (vm_setup then includes the restore; agent_ready is the time to the
  // agent's answer after the restored vCPUs started) rather than booted; its key when so.
  bool from_template = false;
  std::string template_key;
  std::string start_path;  // how it started, for logs: "restored from template 1a2b3c4d" / "cold boot (...)"
};

class Container {
 public:
  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  const std::string& id() const;
  // Guest pid of the init process.
  uint32_t pid() const;
  // Guest pid of a process started with Exec ("" = the init); 0 if there is no such process.
  uint32_t pid(const std::string& exec_id) const;

  // Lets the init process (created stopped) exec the program.
  absl::Status Start();
  // Starts another process in the running container.
  absl::Status Exec(ExecConfig config);
  // Blocks until the process (exec_id "" = init) exited and its output was delivered; the status
  // is the exit code or 128 + signal. May be called any number of times, also after the exit.
  absl::StatusOr<uint32_t> Wait(const std::string& exec_id = "");
  // Posts `done(status)` to `executor` once the process exited (Wait without blocking).
  void AsyncWait(const std::string& exec_id, boost::asio::any_io_executor executor,
                 std::function<void(absl::StatusOr<uint32_t>)> done);
  // all: every process of the container (init's signal to the whole cgroup).
  absl::Status Signal(int signal, const std::string& exec_id = "", bool all = false);
  absl::Status ResizeTty(uint32_t rows, uint32_t columns, const std::string& exec_id = "");
  // Stops feeding stdin: the process reads what was already sent, then EOF.
  absl::Status CloseStdin(const std::string& exec_id = "");
  absl::StatusOr<agent::v1::StatsContainerResponse> Stats();

 private:
  friend class SandboxImpl;
  explicit Container(std::shared_ptr<ContainerImpl> impl);
  std::shared_ptr<ContainerImpl> impl_;
};

class Sandbox {
 public:
  // Boots the VM (in this process), waits for its agent (bounded by runtime.boot_timeout; the
  // error then quotes the end of the guest console) and prepares it for containers.
  static absl::StatusOr<std::unique_ptr<Sandbox>> Create(SandboxConfig config,
                                                         SandboxEvents events = {});
  // Stop() if it was not called.
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // Shares the rootfs into the guest and creates the container with its init process stopped.
  // The returned Container lives until RemoveContainer or the Sandbox's end.
  absl::StatusOr<Container*> CreateContainer(ContainerConfig config);
  Container* GetContainer(const std::string& id);
  // Kills what still runs in it (SIGKILL), removes it in the guest, unshares its rootfs and mounts.
  absl::Status RemoveContainer(const std::string& id);

  // Asks the agent to end every container and power off, then stops the VM if it has not ended
  // within `deadline`. Afterwards this process holds no thread, fd, mapping, tap or mount of the
  // sandbox. Idempotent.
  absl::Status Stop(std::chrono::milliseconds deadline = std::chrono::seconds(10));

  const std::string& id() const;
  // The sandbox's state directory (console.log, vsock socket, share).
  const std::string& dir() const;
  // The last `bytes` of the guest console.
  std::string ConsoleTail(size_t bytes = 4096) const;
  SandboxTimeline timeline() const;
  // "hardware KVM" or "kvm_pvm (software nested virtualization)".
  std::string platform() const;

 private:
  explicit Sandbox(std::unique_ptr<SandboxImpl> impl);
  std::unique_ptr<SandboxImpl> impl_;
};

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_SANDBOX_H_
