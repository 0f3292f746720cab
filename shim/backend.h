// What the task service needs from a pod sandbox. The real one (SdkPod) is the sandbox SDK's
// Sandbox, a VM in this process; unit tests use a fake, so the task logic is tested without a VM.
#ifndef VESSEL_SHIM_BACKEND_H_
#define VESSEL_SHIM_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"

namespace vessel::shim {

class PodBackend {
 public:
  virtual ~PodBackend() = default;

  // Returns the init's pid; the init is created stopped.
  virtual absl::StatusOr<uint32_t> CreateContainer(sandbox::ContainerConfig config) = 0;
  virtual absl::Status Start(const std::string& container_id) = 0;
  // Creates and starts the process; returns its pid.
  virtual absl::StatusOr<uint32_t> Exec(const std::string& container_id, sandbox::ExecConfig config) = 0;
  virtual absl::Status Signal(const std::string& container_id, const std::string& exec_id, int signal,
                              bool all) = 0;
  virtual absl::Status ResizeTty(const std::string& container_id, const std::string& exec_id,
                                 uint32_t rows, uint32_t columns) = 0;
  virtual absl::Status CloseStdin(const std::string& container_id, const std::string& exec_id) = 0;
  virtual absl::StatusOr<agent::v1::StatsContainerResponse> Stats(const std::string& container_id) = 0;
  // Calls `done` once the process ended: its status, or an error when it can no longer be known
  // (the VM died). From any thread; may be at once.
  virtual void WatchExit(const std::string& container_id, const std::string& exec_id,
                         std::function<void(absl::StatusOr<uint32_t>)> done) = 0;
  // Kills what runs in it and removes it (its exits are reported first).
  virtual absl::Status RemoveContainer(const std::string& container_id) = 0;
  // Ends the VM. Idempotent.
  virtual absl::Status Stop() = 0;
};

// Boots a pod sandbox; blocks until it is ready (tens of seconds on software KVM).
using PodFactory = std::function<absl::StatusOr<std::unique_ptr<PodBackend>>(
    sandbox::SandboxConfig config, sandbox::SandboxEvents events)>;

// The sandbox SDK: Sandbox::Create in this process.
PodFactory SdkPodFactory();

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_BACKEND_H_
