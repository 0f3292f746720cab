// Container: its rootfs and volumes shared into the guest, its processes, their stdio and exits.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <utility>

#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "sandbox/host_mounts.h"
#include "sandbox/oci_spec.h"
#include "sandbox/sandbox_impl.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

namespace v1 = agent::v1;

// After a process exits, how long its output may still take to arrive (a background child that
// keeps stdout open must not hold Wait forever).
constexpr std::chrono::milliseconds kOutputGrace{2000};
// How long RemoveContainer waits for a SIGKILLed container to be reaped.
constexpr absl::Duration kKillWait = absl::Seconds(20);

absl::StatusOr<ScopedFd> Dup(int fd, const char* what) {
  if (fd < 0) return ScopedFd();
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return ErrnoStatus(absl::StrCat("dup the caller's ", what, " fd ", fd));
  return ScopedFd(copy);
}

bool HasOption(const v1::Mount& m, const char* option) {
  for (const std::string& o : m.options()) {
    if (o == option) return true;
  }
  return false;
}

}  // namespace

ContainerImpl::~ContainerImpl() { (void)Teardown(); }

absl::Status ContainerImpl::WireStdio(const StdioConfig& config, const std::string& exec_id,
                                      ProcessState& process, v1::Stdio* stdio) {
  std::string who = absl::StrCat("container ", id_, exec_id.empty() ? "" : " exec ", exec_id);
  auto add = [&](ScopedFd in, ScopedFd out, const char* name) -> absl::StatusOr<uint32_t> {
    uint32_t port = sandbox_->NextPort();
    absl::StatusOr<std::unique_ptr<StdioStream>> s = StdioStream::Listen(
        sandbox_->vsock_uds(), port, std::move(in), std::move(out), absl::StrCat(who, " ", name));
    if (!s.ok()) return s.status();
    process.streams.push_back(std::move(*s));
    return port;
  };
  if (config.terminal) {
    VESSEL_ASSIGN_OR_RETURN(ScopedFd in, Dup(config.stdin_fd, "stdin"));
    VESSEL_ASSIGN_OR_RETURN(ScopedFd out, Dup(config.stdout_fd, "stdout"));
    VESSEL_ASSIGN_OR_RETURN(uint32_t port, add(std::move(in), std::move(out), "terminal"));
    stdio->set_terminal_port(port);
    process.input = process.streams.back().get();
    return absl::OkStatus();
  }
  if (config.stdin_fd >= 0) {
    VESSEL_ASSIGN_OR_RETURN(ScopedFd in, Dup(config.stdin_fd, "stdin"));
    VESSEL_ASSIGN_OR_RETURN(uint32_t port, add(std::move(in), ScopedFd(), "stdin"));
    stdio->set_stdin_port(port);
    process.input = process.streams.back().get();
  }
  if (config.stdout_fd >= 0) {
    VESSEL_ASSIGN_OR_RETURN(ScopedFd out, Dup(config.stdout_fd, "stdout"));
    VESSEL_ASSIGN_OR_RETURN(uint32_t port, add(ScopedFd(), std::move(out), "stdout"));
    stdio->set_stdout_port(port);
  }
  if (config.stderr_fd >= 0) {
    VESSEL_ASSIGN_OR_RETURN(ScopedFd out, Dup(config.stderr_fd, "stderr"));
    VESSEL_ASSIGN_OR_RETURN(uint32_t port, add(ScopedFd(), std::move(out), "stderr"));
    stdio->set_stderr_port(port);
  }
  return absl::OkStatus();
}

absl::Status ContainerImpl::Create(ContainerConfig config) {
  VESSEL_ASSIGN_OR_RETURN(ConvertedSpec converted, ConvertOciSpec(config.spec));
  v1::CreateContainerRequest& req = converted.request;
  struct stat st;
  if (config.rootfs_dir.empty() || ::stat(config.rootfs_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("container ", id_, ": rootfs ", config.rootfs_dir,
                                                   " is not a directory"));
  }
  // From here on a failure undoes what was done (Teardown).
  absl::Status status = [&]() -> absl::Status {
    if (::mkdir(host_dir_.c_str(), 0711) != 0) return ErrnoStatus("mkdir " + host_dir_);
    std::string rootfs = host_dir_ + "/rootfs";
    VESSEL_RETURN_IF_ERROR(BindMount(config.rootfs_dir, rootfs, req.rootfs_readonly()));
    host_mounts_.push_back(rootfs);
    if (!converted.binds.empty()) {
      std::string mounts = host_dir_ + "/mounts";
      if (::mkdir(mounts.c_str(), 0711) != 0) return ErrnoStatus("mkdir " + mounts);
      for (const HostBindMount& bind : converted.binds) {
        v1::Mount* m = req.mutable_mounts(bind.mount_index);
        std::string target = absl::StrCat(mounts, "/", bind.mount_index);
        absl::Status bound = BindMount(bind.host_source, target, HasOption(*m, "ro"));
        if (!bound.ok()) {
          return absl::Status(bound.code(), absl::StrCat("container ", id_, ": mount ", m->destination(),
                                                         ": ", bound.message()));
        }
        host_mounts_.push_back(target);
        m->set_source(absl::StrCat(kGuestShareDir, "/", id_, "/mounts/", bind.mount_index));
      }
    }
    if (sandbox_->has_dns()) {
      bool mounted = false;
      for (const v1::Mount& m : req.mounts()) mounted = mounted || m.destination() == "/etc/resolv.conf";
      if (!mounted) {
        v1::Mount* m = req.add_mounts();
        m->set_destination("/etc/resolv.conf");
        m->set_type("bind");
        m->set_source(absl::StrCat(kGuestShareDir, "/resolv.conf"));
        m->add_options("rbind");
        m->add_options("ro");
      }
    }
    req.set_container_id(id_);
    req.set_rootfs(absl::StrCat(kGuestShareDir, "/", id_, "/rootfs"));
    req.mutable_process()->set_terminal(config.stdio.terminal);
    terminal_ = config.stdio.terminal;
    auto process = std::make_unique<ProcessState>();
    VESSEL_RETURN_IF_ERROR(WireStdio(config.stdio, "", *process, req.mutable_stdio()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      processes_[""] = std::move(process);
    }
    absl::StatusOr<v1::CreateContainerResponse> created =
        sandbox_->agent().Call<v1::CreateContainerResponse>("CreateContainer", req, absl::Minutes(5));
    if (!created.ok()) return created.status();
    pid_ = created->pid();
    created_ = true;
    std::lock_guard<std::mutex> lock(mu_);
    StartReaper(*processes_[""]);
    return absl::OkStatus();
  }();
  if (!status.ok()) (void)Teardown();
  return status;
}

absl::Status ContainerImpl::Start() {
  v1::StartContainerRequest req;
  req.set_container_id(id_);
  return sandbox_->agent().CallEmpty("StartContainer", req);
}

absl::Status ContainerImpl::Exec(ExecConfig config) {
  if (config.exec_id.empty() || config.exec_id.size() > 64) {
    return absl::InvalidArgumentError("exec id must be 1-64 characters");
  }
  VESSEL_ASSIGN_OR_RETURN(v1::Process proc, ConvertOciProcess(config.process, "process"));
  proc.set_terminal(config.stdio.terminal);
  auto process = std::make_unique<ProcessState>();
  process->exec_id = config.exec_id;
  ProcessState* p = process.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (processes_.count(config.exec_id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("exec ", config.exec_id, " already exists in container ", id_));
    }
    processes_[config.exec_id] = std::move(process);
  }
  v1::ExecProcessRequest req;
  req.set_container_id(id_);
  req.set_exec_id(config.exec_id);
  absl::Status s = WireStdio(config.stdio, config.exec_id, *p, req.mutable_stdio());
  uint32_t pid = 0;
  if (s.ok()) {
    *req.mutable_process() = std::move(proc);
    absl::StatusOr<v1::ExecProcessResponse> r =
        sandbox_->agent().Call<v1::ExecProcessResponse>("ExecProcess", req, absl::Minutes(2));
    s = r.status();
    if (r.ok()) pid = r->pid();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.ok()) {
    processes_.erase(config.exec_id);  // its streams close with it
    return s;
  }
  p->pid = pid;
  StartReaper(*p);
  return absl::OkStatus();
}

void ContainerImpl::StartReaper(ProcessState& process) {
  process.reaper_started = true;
  process.reaper = std::thread([this, p = &process] { Reap(p); });
}

void ContainerImpl::Reap(ProcessState* process) {
  v1::WaitProcessRequest req;
  req.set_container_id(id_);
  req.set_exec_id(process->exec_id);
  absl::StatusOr<v1::WaitProcessResponse> r =
      sandbox_->agent().Call<v1::WaitProcessResponse>("WaitProcess", req, absl::InfiniteDuration());
  // A wait that fails while the agent connection is still up is not an exit: ask again (logged,
  // so the cause shows), a few times, before reporting the process as lost.
  for (int retry = 0; !r.ok() && retry < 3 && sandbox_->agent_alive(); ++retry) {
    LogWarning("container ", id_, process->exec_id.empty() ? "" : absl::StrCat(" exec ", process->exec_id),
               ": WaitProcess failed with the agent still connected (", r.status().ToString(),
               "); waiting again");
    std::this_thread::sleep_for(std::chrono::milliseconds(200 << retry));
    r = sandbox_->agent().Call<v1::WaitProcessResponse>("WaitProcess", req, absl::InfiniteDuration());
  }
  absl::StatusOr<uint32_t> result =
      r.ok() ? absl::StatusOr<uint32_t>(r->exit_status())
             : absl::StatusOr<uint32_t>(absl::Status(r.status().code(),
                                                     absl::StrCat("container ", id_, ": ", r.status().message())));
  if (r.ok()) {
    auto until = std::chrono::steady_clock::now() + kOutputGrace;
    for (const std::unique_ptr<StdioStream>& s : process->streams) {
      if (!s->carries_output()) continue;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (!s->WaitOutputDone(std::max(left, std::chrono::milliseconds(0)))) {
        LogWarning("container ", id_, ": output still open ", kOutputGrace.count(),
                   " ms after the process exited (a background process holds it?)");
        break;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    process->exit = result;
    // Posted before Wait() can return, so a caller that saw the exit finds the handler queued.
    for (auto& [executor, done] : process->async_waiters) {
      boost::asio::post(executor, [done = std::move(done), result]() mutable { done(result); });
    }
    process->async_waiters.clear();
    cv_.notify_all();
  }
  if (r.ok() && sandbox_->events().on_exit) sandbox_->events().on_exit(id_, process->exec_id, *result);
}

uint32_t ContainerImpl::ProcessPid(const std::string& exec_id) {
  if (exec_id.empty()) return pid_;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = processes_.find(exec_id);
  return it == processes_.end() ? 0 : it->second->pid;
}

absl::StatusOr<uint32_t> ContainerImpl::Wait(const std::string& exec_id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = processes_.find(exec_id);
  if (it == processes_.end() || !it->second->reaper_started) {
    return absl::NotFoundError(absl::StrCat("no process \"", exec_id, "\" in container ", id_));
  }
  ProcessState* p = it->second.get();
  cv_.wait(lock, [&] { return p->exit.has_value(); });
  return *p->exit;
}

void ContainerImpl::AsyncWait(const std::string& exec_id, boost::asio::any_io_executor executor,
                              std::function<void(absl::StatusOr<uint32_t>)> done) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = processes_.find(exec_id);
  if (it == processes_.end() || !it->second->reaper_started) {
    absl::Status s = absl::NotFoundError(absl::StrCat("no process \"", exec_id, "\" in container ", id_));
    boost::asio::post(executor, [done = std::move(done), s]() mutable { done(s); });
    return;
  }
  ProcessState* p = it->second.get();
  if (p->exit.has_value()) {
    boost::asio::post(executor, [done = std::move(done), r = *p->exit]() mutable { done(r); });
    return;
  }
  p->async_waiters.emplace_back(std::move(executor), std::move(done));
}

absl::Status ContainerImpl::Signal(int signal, const std::string& exec_id, bool all) {
  if (signal <= 0 || signal >= 65) return absl::InvalidArgumentError(absl::StrCat("bad signal ", signal));
  v1::SignalProcessRequest req;
  req.set_container_id(id_);
  req.set_exec_id(exec_id);
  req.set_signal(static_cast<uint32_t>(signal));
  req.set_all(all);
  return sandbox_->agent().CallEmpty("SignalProcess", req);
}

absl::Status ContainerImpl::ResizeTty(uint32_t rows, uint32_t columns, const std::string& exec_id) {
  v1::ResizeTtyRequest req;
  req.set_container_id(id_);
  req.set_exec_id(exec_id);
  req.set_width(columns);
  req.set_height(rows);
  return sandbox_->agent().CallEmpty("ResizeTty", req);
}

absl::Status ContainerImpl::CloseStdin(const std::string& exec_id) {
  StdioStream* input = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = processes_.find(exec_id);
    if (it == processes_.end()) {
      return absl::NotFoundError(absl::StrCat("no process \"", exec_id, "\" in container ", id_));
    }
    input = it->second->input;
  }
  if (input != nullptr) input->CloseInput();
  if (terminal_) {  // a pty needs the agent to pass the end of input on (VEOF)
    v1::CloseStdinRequest req;
    req.set_container_id(id_);
    req.set_exec_id(exec_id);
    return sandbox_->agent().CallEmpty("CloseStdin", req);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StatsContainerResponse> ContainerImpl::Stats() {
  v1::StatsContainerRequest req;
  req.set_container_id(id_);
  return sandbox_->agent().Call<v1::StatsContainerResponse>("StatsContainer", req);
}

absl::Status ContainerImpl::Remove(bool agent_alive) {
  absl::Status status;
  if (agent_alive && created_) {
    bool running = false;
    ProcessState* init = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = processes_.find("");
      if (it != processes_.end()) {
        init = it->second.get();
        running = !init->exit.has_value();
      }
    }
    if (running) {
      (void)Signal(SIGKILL, "", /*all=*/true);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoMilliseconds(kKillWait), [&] { return init->exit.has_value(); });
    }
    v1::RemoveContainerRequest req;
    req.set_container_id(id_);
    status.Update(sandbox_->agent().CallEmpty("RemoveContainer", req));
  }
  status.Update(Teardown());
  return status;
}

absl::Status ContainerImpl::Teardown() {
  std::map<std::string, std::unique_ptr<ProcessState>> processes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, p] : processes_) {
      for (auto& s : p->streams) s->Abort();
    }
  }
  // A reaper still in WaitProcess returns when the agent connection closes (Stop) or the process
  // was killed (Remove); join them without holding mu_, which they take.
  std::vector<std::thread*> reapers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, p] : processes_) {
      if (p->reaper.joinable()) reapers.push_back(&p->reaper);
    }
  }
  for (std::thread* t : reapers) t->join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    processes.swap(processes_);
  }
  processes.clear();  // closes the streams
  absl::Status status;
  for (auto it = host_mounts_.rbegin(); it != host_mounts_.rend(); ++it) status.Update(UnmountAndRemove(*it));
  host_mounts_.clear();
  ::rmdir((host_dir_ + "/mounts").c_str());
  ::rmdir(host_dir_.c_str());
  return status;
}

// ---- the public facade ----

Container::Container(std::shared_ptr<ContainerImpl> impl) : impl_(std::move(impl)) {}
Container::~Container() = default;
const std::string& Container::id() const { return impl_->id(); }
uint32_t Container::pid() const { return impl_->pid(); }
uint32_t Container::pid(const std::string& exec_id) const { return impl_->ProcessPid(exec_id); }
absl::Status Container::Start() { return impl_->Start(); }
absl::Status Container::Exec(ExecConfig config) { return impl_->Exec(std::move(config)); }
absl::StatusOr<uint32_t> Container::Wait(const std::string& exec_id) { return impl_->Wait(exec_id); }
void Container::AsyncWait(const std::string& exec_id, boost::asio::any_io_executor executor,
                          std::function<void(absl::StatusOr<uint32_t>)> done) {
  impl_->AsyncWait(exec_id, std::move(executor), std::move(done));
}
absl::Status Container::Signal(int signal, const std::string& exec_id, bool all) {
  return impl_->Signal(signal, exec_id, all);
}
absl::Status Container::ResizeTty(uint32_t rows, uint32_t columns, const std::string& exec_id) {
  return impl_->ResizeTty(rows, columns, exec_id);
}
absl::Status Container::CloseStdin(const std::string& exec_id) { return impl_->CloseStdin(exec_id); }
absl::StatusOr<v1::StatsContainerResponse> Container::Stats() { return impl_->Stats(); }

}  // namespace vessel::sandbox
