// PodBackend over the sandbox SDK.
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rpc/ttrpc/io_thread.h"
#include "shim/backend.h"
#include "shim/state.h"
#include "vmm/base/errors.h"

namespace vessel::shim {
namespace {

class SdkPod final : public PodBackend {
 public:
  explicit SdkPod(std::unique_ptr<sandbox::Sandbox> sandbox) : sandbox_(std::move(sandbox)) {}
  ~SdkPod() override {
    (void)sandbox_->Stop();
  }

  absl::StatusOr<uint32_t> CreateContainer(sandbox::ContainerConfig config) override {
    absl::StatusOr<sandbox::Container*> c = sandbox_->CreateContainer(std::move(config));
    if (!c.ok()) return c.status();
    return (*c)->pid();
  }
  absl::Status Start(const std::string& id) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    return c->Start();
  }
  absl::StatusOr<uint32_t> Exec(const std::string& id, sandbox::ExecConfig config) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    std::string exec_id = config.exec_id;
    VESSEL_RETURN_IF_ERROR(c->Exec(std::move(config)));
    return c->pid(exec_id);
  }
  absl::Status Signal(const std::string& id, const std::string& exec_id, int signal, bool all) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    return c->Signal(signal, exec_id, all);
  }
  absl::Status ResizeTty(const std::string& id, const std::string& exec_id, uint32_t rows,
                         uint32_t columns) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    return c->ResizeTty(rows, columns, exec_id);
  }
  absl::Status CloseStdin(const std::string& id, const std::string& exec_id) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    return c->CloseStdin(exec_id);
  }
  absl::StatusOr<agent::v1::StatsContainerResponse> Stats(const std::string& id) override {
    VESSEL_ASSIGN_OR_RETURN(sandbox::Container* c, Get(id));
    return c->Stats();
  }
  void WatchExit(const std::string& id, const std::string& exec_id,
                 std::function<void(absl::StatusOr<uint32_t>)> done) override {
    absl::StatusOr<sandbox::Container*> c = Get(id);
    if (!c.ok()) {
      done(c.status());
      return;
    }
    (*c)->AsyncWait(exec_id, io_.io().get_executor(), std::move(done));
  }
  absl::Status RemoveContainer(const std::string& id) override { return sandbox_->RemoveContainer(id); }
  absl::Status Stop() override { return sandbox_->Stop(); }

 private:
  absl::StatusOr<sandbox::Container*> Get(const std::string& id) {
    sandbox::Container* c = sandbox_->GetContainer(id);
    if (c == nullptr) return absl::NotFoundError(absl::StrCat("no container ", id, " in sandbox ", sandbox_->id()));
    return c;
  }

  // Runs the AsyncWait completions; declared first so that it outlives nothing it serves.
  ttrpc::IoThread io_;
  std::unique_ptr<sandbox::Sandbox> sandbox_;
};

}  // namespace

PodFactory SdkPodFactory() {
  return [](sandbox::SandboxConfig config,
            sandbox::SandboxEvents events) -> absl::StatusOr<std::unique_ptr<PodBackend>> {
    // Only this shim owns this sandbox id in its namespace: what is there was left by a shim that
    // died without containerd's `delete` (SIGKILL, host crash of containerd).
    std::string stale = SandboxStateDir(config.runtime.state_dir, config.id);
    std::error_code ec;
    if (std::filesystem::exists(stale, ec)) {
      absl::Status removed = RemoveSandboxState(stale, "");
      if (!removed.ok()) {
        return absl::Status(removed.code(), absl::StrCat("stale state of a dead shim: ", removed.message()));
      }
    }
    absl::StatusOr<std::unique_ptr<sandbox::Sandbox>> s = sandbox::Sandbox::Create(std::move(config), std::move(events));
    if (!s.ok()) return s.status();
    return std::make_unique<SdkPod>(std::move(*s));
  };
}

}  // namespace vessel::shim
