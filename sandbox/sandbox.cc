// Sandbox: boot the in-process VM, reach its agent, prepare it for containers; Stop and cleanup.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "devices/fs/fs_config.h"
#include "sandbox/host_mounts.h"
#include "sandbox/network/pod_network.h"
#include "sandbox/sandbox_impl.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

constexpr size_t kConsoleTail = 64 * 1024;
namespace v1 = agent::v1;
using Clock = std::chrono::steady_clock;

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 64 || id == "." || id == "..") return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

// A guest CID >= 3 from the sandbox id (FNV-1a), below the reserved VMADDR_CID_ANY.
uint32_t GuestCidFor(const std::string& id) {
  uint32_t h = 2166136261u;
  for (unsigned char c : id) h = (h ^ c) * 16777619u;
  return 3 + h % 0x7ffffff0u;
}

absl::Status MakeDirs(const std::string& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("create directory ", path, ": ", ec.message()));
  ::chmod(path.c_str(), mode);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SandboxImpl>> SandboxImpl::Create(SandboxConfig config,
                                                                 SandboxEvents events) {
  if (!ValidId(config.id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sandbox id \"", config.id, "\" must be 1-64 characters of [A-Za-z0-9_.-]"));
  }
  VESSEL_RETURN_IF_ERROR(ValidateRuntimeConfig(config.runtime));
  std::unique_ptr<SandboxImpl> sandbox(new SandboxImpl(std::move(config), std::move(events)));
  absl::Status booted = sandbox->Boot();
  if (!booted.ok()) {
    std::string tail = sandbox->ConsoleTail(2048);
    (void)sandbox->Stop(std::chrono::seconds(2));
    if (!tail.empty()) {
      return absl::Status(booted.code(), absl::StrCat(booted.message(), "\n--- end of the guest console ---\n",
                                                      tail));
    }
    return booted;
  }
  return sandbox;
}

absl::Status SandboxImpl::Boot() {
  const Clock::time_point t0 = Clock::now();
  const RuntimeConfig& rt = config_.runtime;
  dir_ = absl::StrCat(rt.state_dir, "/sandboxes/", config_.id);
  share_dir_ = dir_ + "/shared";
  uds_ = dir_ + "/vsock.sock";
  if (std::filesystem::exists(dir_)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "sandbox directory ", dir_, " already exists: a sandbox with this id is running, or one "
        "crashed (unmount anything under it and remove it)"));
  }
  VESSEL_RETURN_IF_ERROR(MakeDirs(share_dir_, 0711));
  console_log_.reset(::open((dir_ + "/console.log").c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0640));
  if (!console_log_.valid()) return ErrnoStatus("create " + dir_ + "/console.log");

  MachineConfig mc;
  mc.vcpus = rt.vcpus;
  mc.mem_mib = rt.memory_mib;
  mc.kernel_path = rt.kernel;
  mc.initrd_path = rt.initramfs;
  mc.extra_cmdline = rt.kernel_cmdline;
  mc.seccomp = rt.seccomp;
  mc.console_sink = [this](absl::string_view bytes) { OnConsole(bytes); };
  for (const std::string& disk : config_.disks) {
    block::BlockConfig b;
    b.path = disk;
    mc.disks.push_back(b);
  }
  vsock::VsockConfig vc;
  // Hybrid vsock: the CID is private to this VM; still, each sandbox gets its own, so clones of
  // one template differ in it too (a restored guest re-reads it at the transport reset).
  vc.guest_cid = GuestCidFor(config_.id);
  vc.uds_path = uds_;
  mc.vsock = vc;
  fs::FsConfig share;
  share.tag = kShareTag;
  share.shared_dir = share_dir_;
  share.cache = rt.shared_fs_cache == "never"    ? fs::CachePolicy::kNever
                : rt.shared_fs_cache == "always" ? fs::CachePolicy::kAlways
                                                 : fs::CachePolicy::kAuto;
  mc.shares.push_back(share);

  std::optional<network::PodNetwork> pod;
  if (!config_.netns_path.empty()) {
    absl::StatusOr<network::PodNetwork> inspected = network::InspectPodNetwork(config_.netns_path);
    if (!inspected.ok()) return inspected.status();
    pod = std::move(*inspected);
    net::NetConfig nc;
    nc.tap_name = kTapName;
    nc.mac = pod->link.mac;
    nc.netns_path = config_.netns_path;
    mc.nets.push_back(nc);
  }

  if (snapshot_to_.empty()) {
    machine_ = RestoreFromTemplate(mc);
  } else {
    timeline_.start_path = "cold boot to build a template";
    if (template_network_) {
      // A throwaway tap in this network namespace (it goes away with the VM); the guest NIC is
      // probed with kTemplateMac.
      net::NetConfig nc;
      nc.tap_name = absl::StrCat("vtpl", ::getpid() % 100000);
      nc.mac = net::ParseMac(kTemplateMac).value();
      mc.nets.push_back(nc);
    }
  }
  if (machine_ == nullptr) {
    LogInfo("sandbox ", config_.id, ": booting a VM (", rt.vcpus, " vCPU, ", rt.memory_mib,
            " MiB) from ", rt.kernel, " + ", rt.initramfs, " (", timeline_.start_path, ")");
    absl::StatusOr<std::unique_ptr<Machine>> machine = Machine::Create(std::move(mc));
    if (!machine.ok()) return machine.status();
    machine_ = std::move(*machine);
  }
  if (pod.has_value()) {
    absl::StatusOr<network::TcMirror> tc =
        network::TcMirror::Create(config_.netns_path, pod->link.name, kTapName);
    if (!tc.ok()) return tc.status();
    tc_.emplace(std::move(*tc));
  }
  io_ = std::make_unique<ttrpc::IoThread>();
  VESSEL_RETURN_IF_ERROR(machine_->Start());
  vm_waiter_ = std::thread([this] {
    MachineExit exit = machine_->Wait();
    std::lock_guard<std::mutex> lock(vm_mu_);
    vm_exit_ = exit;
    vm_cv_.notify_all();
  });
  const Clock::time_point t1 = Clock::now();
  timeline_.vm_setup = t1 - t0;
  if (machine_->platform().flavor == KvmFlavor::kPvm && !timeline_.from_template) {
    LogInfo("sandbox ", config_.id, ": ", machine_->platform().Name(),
            ": the guest kernel runs under software emulation here, so booting takes about 40 s "
            "(tens of milliseconds on hardware KVM)");
  }

  absl::StatusOr<std::unique_ptr<AgentClient>> agent = ConnectAgent(
      io_->io(), *machine_->vsock(),
      absl::Now() + absl::FromChrono(std::chrono::duration_cast<std::chrono::milliseconds>(rt.boot_timeout)),
      [this] { return VmEnded(); });
  if (!agent.ok()) {
    return absl::Status(agent.status().code(),
                        absl::StrCat("sandbox ", config_.id, ": ", agent.status().message(),
                                     " (console log: ", dir_, "/console.log)"));
  }
  agent_ = std::move(*agent);
  if (!snapshot_to_.empty()) return absl::OkStatus();  // BootAndSnapshot takes it from here
  if (timeline_.from_template) VESSEL_RETURN_IF_ERROR(MakeRestoredGuestUnique());
  const Clock::time_point t2 = Clock::now();
  timeline_.agent_ready = t2 - t1;

  v1::CreateSandboxRequest req;
  req.set_sandbox_id(config_.id);
  req.set_hostname(config_.hostname.empty() ? config_.id : config_.hostname);
  req.set_sandbox_pidns(config_.shared_pid_namespace);
  v1::Storage* storage = req.add_storages();
  storage->set_driver("virtio-fs");
  storage->set_source(kShareTag);
  storage->set_fstype("virtiofs");
  storage->set_mount_point(kGuestShareDir);
  for (const std::string& line : config_.dns) req.add_dns(line);
  if (!config_.dns.empty()) {
    // Also in the share, for the containers (each gets it at /etc/resolv.conf unless its spec
    // mounts one, as Docker and CRI do).
    std::string text;
    for (const std::string& line : config_.dns) {
      if (line.find('\n') != std::string::npos) {
        return absl::InvalidArgumentError("a DNS line contains a newline: give one entry per line");
      }
      absl::StrAppend(&text, line, "\n");
    }
    std::string path = share_dir_ + "/resolv.conf";
    ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd.valid() || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return ErrnoStatus("write " + path);
    }
  }
  if (pod.has_value()) {
    // The guest kernel is built without IPv6 (guest/kernel/vessel.config): pass IPv4 only.
    auto is_v6 = [](const std::string& a) { return a.find(':') != std::string::npos; };
    v1::Interface* itf = req.add_interfaces();
    *itf = pod->interface;
    if (!template_device_mac_.empty()) itf->set_device_mac(template_device_mac_);
    itf->clear_addresses();
    for (const v1::IPAddress& a : pod->interface.addresses()) {
      if (!is_v6(a.address())) *itf->add_addresses() = a;
    }
    for (const v1::Route& r : pod->routes) {
      if (is_v6(r.destination()) || is_v6(r.gateway()) || is_v6(r.source())) continue;
      *req.add_routes() = r;
    }
  }
  VESSEL_RETURN_IF_ERROR(agent_->CallEmpty("CreateSandbox", req, absl::Minutes(2)));
  timeline_.sandbox_ready = Clock::now() - t2;
  WatchOom();
  LogInfo("sandbox ", config_.id, ": ready, ", timeline_.start_path, " (VM setup ",
          std::chrono::duration_cast<std::chrono::milliseconds>(timeline_.vm_setup).count(),
          " ms, agent ready after ",
          std::chrono::duration_cast<std::chrono::milliseconds>(timeline_.agent_ready).count(),
          " ms, sandbox set up in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(timeline_.sandbox_ready).count(), " ms)");
  return absl::OkStatus();
}

void SandboxImpl::WatchOom() {
  if (stopping_ || agent_ == nullptr) return;
  ttrpc::CallOptions options;  // a long poll: no timeout
  ttrpc::StartTypedCall<v1::OOMEvent>(
      agent_->raw(), kAgentService, "GetOOMEvent", v1::GetOOMEventRequest(), options,
      [this](absl::StatusOr<v1::OOMEvent> event) {
        if (!event.ok()) return;  // the agent or the connection is going away
        if (events_.on_oom) events_.on_oom(event->container_id());
        WatchOom();
      });
}

void SandboxImpl::OnConsole(absl::string_view bytes) {
  if (console_log_.valid()) (void)!::write(console_log_.get(), bytes.data(), bytes.size());
  if (config_.runtime.debug_console) (void)!::write(STDERR_FILENO, bytes.data(), bytes.size());
  std::lock_guard<std::mutex> lock(console_mu_);
  console_tail_.append(bytes.data(), bytes.size());
  if (console_tail_.size() > kConsoleTail) console_tail_.erase(0, console_tail_.size() - kConsoleTail);
}

std::string SandboxImpl::ConsoleTail(size_t bytes) const {
  std::lock_guard<std::mutex> lock(console_mu_);
  if (console_tail_.size() <= bytes) return console_tail_;
  return console_tail_.substr(console_tail_.size() - bytes);
}

std::optional<std::string> SandboxImpl::VmEnded() {
  std::lock_guard<std::mutex> lock(vm_mu_);
  if (!vm_exit_.has_value()) return std::nullopt;
  return absl::StrCat(ExitReasonName(vm_exit_->reason), vm_exit_->detail.empty() ? "" : ": ",
                      vm_exit_->detail);
}

std::string SandboxImpl::platform() const {
  return machine_ != nullptr ? machine_->platform().Name() : "unknown";
}

absl::StatusOr<Container*> SandboxImpl::CreateContainer(ContainerConfig config) {
  if (!ValidId(config.id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "container id \"", config.id, "\" must be 1-64 characters of [A-Za-z0-9_.-]"));
  }
  std::string id = config.id;
  auto impl = std::make_shared<ContainerImpl>(this, id, absl::StrCat(share_dir_, "/", id));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::FailedPreconditionError("sandbox " + config_.id + " is stopped");
    if (containers_.count(id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("container ", id, " already exists in sandbox ",
                                                   config_.id));
    }
    containers_[id] = nullptr;  // reserve the id while it is being created
  }
  absl::Status created = impl->Create(std::move(config));
  std::lock_guard<std::mutex> lock(mu_);
  if (!created.ok()) {
    containers_.erase(id);
    return created;
  }
  std::unique_ptr<Container>& slot = containers_[id];
  slot.reset(new Container(std::move(impl)));
  return slot.get();
}

Container* SandboxImpl::GetContainer(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = containers_.find(id);
  return it == containers_.end() ? nullptr : it->second.get();
}

absl::Status SandboxImpl::RemoveContainer(const std::string& id) {
  std::unique_ptr<Container> container;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end() || it->second == nullptr) {
      return absl::NotFoundError(absl::StrCat("no container ", id, " in sandbox ", config_.id));
    }
    container = std::move(it->second);
    containers_.erase(it);
  }
  return container->impl_->Remove(agent_alive());
}

absl::Status SandboxImpl::Stop(std::chrono::milliseconds deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::OkStatus();
    stopped_ = true;
  }
  stopping_ = true;
  const Clock::time_point end = Clock::now() + deadline;
  if (machine_ != nullptr) {
    // The agent ends every container and powers the VM off; its answer may or may not make it
    // out before the power goes, so wait for whichever comes first: the answer or the VM's end.
    auto answered = std::make_shared<bool>(false);
    if (agent_alive() && !VmEnded().has_value()) {
      v1::DestroySandboxRequest req;
      req.set_sandbox_id(config_.id);
      ttrpc::CallOptions options;
      options.timeout = absl::FromChrono(deadline);
      ttrpc::StartTypedCall<google::protobuf::Empty>(
          agent_->raw(), kAgentService, "DestroySandbox", req, options,
          [this, answered](absl::StatusOr<google::protobuf::Empty> r) {
            if (!r.ok()) LogInfo("sandbox ", config_.id, ": DestroySandbox: ", r.status().message());
            std::lock_guard<std::mutex> lock(vm_mu_);
            *answered = true;
            vm_cv_.notify_all();
          });
    }
    std::unique_lock<std::mutex> lock(vm_mu_);
    vm_cv_.wait_until(lock, end, [&] { return vm_exit_.has_value() || *answered; });
    // Answered: the power-off follows within moments.
    vm_cv_.wait_until(lock, std::min(end, Clock::now() + std::chrono::seconds(5)),
                      [&] { return vm_exit_.has_value(); });
    if (!vm_exit_.has_value()) {
      lock.unlock();
      LogWarning("sandbox ", config_.id, ": the VM did not power off in time; stopping it. "
                 "The guest console ended with:\n", ConsoleTail(1500));
      machine_->Stop();
    }
  }
  return Cleanup();
}

absl::Status SandboxImpl::Cleanup() {
  absl::Status status;
  if (vm_waiter_.joinable()) vm_waiter_.join();
  // The VM is gone: every stdio stream reaches EOF and every pending agent call fails.
  if (agent_ != nullptr) agent_->Close();
  std::map<std::string, std::unique_ptr<Container>> containers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    containers.swap(containers_);
  }
  for (auto& [id, container] : containers) {
    if (container != nullptr) status.Update(container->impl_->Remove(/*agent_alive=*/false));
  }
  if (tc_.has_value()) {
    status.Update(tc_->Remove());
    tc_.reset();
  }
  machine_.reset();  // joins the device threads, closes the tap, removes the vsock socket
  agent_.reset();
  io_.reset();
  console_log_.reset();
  if (!dir_.empty() && std::filesystem::exists(dir_)) status.Update(RemoveTreeIfUnmounted(dir_));
  return status;
}

SandboxImpl::~SandboxImpl() {
  absl::Status s = Stop(std::chrono::seconds(10));
  if (!s.ok()) LogWarning("sandbox ", config_.id, ": cleanup: ", s.message());
}

// ---- the public facade ----

absl::StatusOr<std::unique_ptr<Sandbox>> Sandbox::Create(SandboxConfig config, SandboxEvents events) {
  absl::StatusOr<std::unique_ptr<SandboxImpl>> impl = SandboxImpl::Create(std::move(config), std::move(events));
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<Sandbox>(new Sandbox(std::move(*impl)));
}
Sandbox::Sandbox(std::unique_ptr<SandboxImpl> impl) : impl_(std::move(impl)) {}
Sandbox::~Sandbox() = default;
absl::StatusOr<Container*> Sandbox::CreateContainer(ContainerConfig config) {
  return impl_->CreateContainer(std::move(config));
}
Container* Sandbox::GetContainer(const std::string& id) { return impl_->GetContainer(id); }
absl::Status Sandbox::RemoveContainer(const std::string& id) { return impl_->RemoveContainer(id); }
absl::Status Sandbox::Stop(std::chrono::milliseconds deadline) { return impl_->Stop(deadline); }
const std::string& Sandbox::id() const { return impl_->id(); }
const std::string& Sandbox::dir() const { return impl_->dir(); }
std::string Sandbox::ConsoleTail(size_t bytes) const { return impl_->ConsoleTail(bytes); }
SandboxTimeline Sandbox::timeline() const { return impl_->timeline(); }
std::string Sandbox::platform() const { return impl_->platform(); }

}  // namespace vessel::sandbox
