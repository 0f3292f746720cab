#include "guest/agent/agent.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "guest/agent/fs_util.h"
#include "guest/agent/mounts.h"
#include "guest/agent/namespaces.h"
#include "guest/agent/network.h"
#include "guest/agent/spawn.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::agent {
namespace {

constexpr auto kKillWait = std::chrono::seconds(5);

// Storages mounted so far by a request that may still fail: unmounted unless released.
class StorageGuard {
 public:
  ~StorageGuard() {
    for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) (void)UnmountStorage(*it);
  }
  void Add(std::string mount_point) { mounted_.push_back(std::move(mount_point)); }
  std::vector<std::string> Release() { return std::exchange(mounted_, {}); }

 private:
  std::vector<std::string> mounted_;
};

absl::Status MountAll(const std::string& root,
                      const google::protobuf::RepeatedPtrField<v1::Storage>& storages,
                      StorageGuard& guard) {
  for (const v1::Storage& s : storages) {
    VESSEL_ASSIGN_OR_RETURN(std::string mount_point, MountStorage(root, s));
    guard.Add(std::move(mount_point));
  }
  return absl::OkStatus();
}

// pid 1 of the sandbox's shared PID namespace: reaps what is re-parented to it, nothing else.
// Runs system calls only (cloned from a multithreaded process).
absl::StatusOr<pid_t> SpawnPidnsHolder() {
  long pid = ::syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return ErrnoStatus("clone the sandbox pid namespace");
  if (pid == 0) {
    ::syscall(SYS_close_range, 3U, ~0U, 0U);  // hold none of the agent's sockets
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_SETMASK, &chld, nullptr);
    for (;;) {
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      siginfo_t info;
      ::sigwaitinfo(&chld, &info);
    }
  }
  return static_cast<pid_t>(pid);
}

// InvalidArgument for a missing or malformed id (such a container cannot exist).
absl::Status CheckIds(const std::string& container_id, const std::string* exec_id = nullptr) {
  VESSEL_RETURN_IF_ERROR(ValidateId("container_id", container_id));
  if (exec_id != nullptr && !exec_id->empty())
    VESSEL_RETURN_IF_ERROR(ValidateId("exec_id", *exec_id));
  return absl::OkStatus();
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  if (options.connector == nullptr)
    return absl::InvalidArgumentError("agent needs a host connector");
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  VESSEL_ASSIGN_OR_RETURN(agent->cgroup_root_, CgroupRoot::Create(agent->options_.cgroup_root));
  Agent* raw = agent.get();
  VESSEL_ASSIGN_OR_RETURN(agent->oom_watcher_,
                          OomWatcher::Create([raw](const std::string& id) { raw->OnOom(id); }));
  return agent;
}

Agent::~Agent() {
  oom_watcher_.reset();  // joins its thread before the state it reports into goes
  Shutdown();
  cgroup_root_.Remove();
}

void Agent::TakeWaiters(ProcessState& p, Waiters& out) {
  v1::WaitProcessResponse resp;
  resp.set_exit_status(p.exit_status);
  *resp.mutable_exited_at() = ToTimestamp(p.exited_at);
  for (auto& w : p.waiters) out.emplace_back(std::move(w), resp);
  p.waiters.clear();
}

void Agent::Answer(Waiters& waiters) {
  for (auto& [reply, resp] : waiters) reply(resp);
}

void Agent::Reap() {
  Waiters done;
  std::vector<std::shared_ptr<ProcessState>>
      released;  // dropped after mu_ (a relay joins its thread)
  {
    // Reaping under mu_: a pid that SignalProcess sees unreaped cannot be recycled under it.
    std::lock_guard<std::mutex> lock(mu_);
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      auto it = by_pid_.find(pid);
      if (it == by_pid_.end()) continue;  // an orphan re-parented to us (PID 1 / subreaper)
      ProcessState& p = *it->second;
      p.reaped = true;
      p.exited_at = absl::Now();
      p.exit_status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
      if (p.exited()) TakeWaiters(p, done);
      released.push_back(std::move(it->second));
      by_pid_.erase(it);
    }
  }
  reaped_cv_.notify_all();
  Answer(done);
}

void Agent::OnRelayDone(const std::string& container_id, const std::string& exec_id) {
  Waiters done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto c = containers_.find(container_id);
    if (c == containers_.end()) return;
    ProcessState* p = nullptr;
    if (exec_id.empty()) {
      p = c->second->init.get();
    } else if (auto e = c->second->execs.find(exec_id); e != c->second->execs.end()) {
      p = e->second.get();
    }
    if (p == nullptr) return;
    p->io_done = true;
    if (p->exited()) TakeWaiters(*p, done);
  }
  Answer(done);
}

absl::Status Agent::StartRelay(const std::string& container_id, const std::string& exec_id,
                               ProcessState& p, ChildStdio& stdio) {
  if (!stdio.pty_master.valid()) {
    p.stdin_control = std::move(stdio.stdin_control);
    return absl::OkStatus();
  }
  p.io_done = false;
  p.relay = std::make_unique<PtyRelay>(
      std::move(stdio.pty_master), std::move(stdio.terminal_socket),
      [this, container_id, exec_id] { OnRelayDone(container_id, exec_id); });
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<ProcessState>> Agent::FindProcessLocked(
    const std::string& container_id, const std::string& exec_id) {
  auto c = containers_.find(container_id);
  if (c == containers_.end())
    return absl::NotFoundError(absl::StrCat("no container '", container_id, "'"));
  if (exec_id.empty()) return c->second->init;
  auto e = c->second->execs.find(exec_id);
  if (e == c->second->execs.end()) {
    return absl::NotFoundError(
        absl::StrCat("no process '", exec_id, "' in container '", container_id, "'"));
  }
  return e->second;
}

// ---- sandbox ----

absl::Status Agent::CreateSandbox(const v1::CreateSandboxRequest& req) {
  VESSEL_RETURN_IF_ERROR(ValidateId("sandbox_id", req.sandbox_id()));
  if (req.hostname().size() > 64)
    return absl::InvalidArgumentError("hostname is longer than 64 characters");
  VESSEL_RETURN_IF_ERROR(ValidateNetwork(req.interfaces(), req.routes()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return absl::UnavailableError("the agent is shutting down");
    if (sandbox_created_) {
      return absl::AlreadyExistsError(absl::StrCat("sandbox '", sandbox_id_, "' already exists"));
    }
    sandbox_created_ = true;  // reserved; undone below on failure
    sandbox_id_ = req.sandbox_id();
  }
  absl::Cleanup undo = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    sandbox_created_ = false;
  };
  StorageGuard guard;
  VESSEL_RETURN_IF_ERROR(MountAll(options_.root, req.storages(), guard));
  if (!req.dns().empty()) VESSEL_RETURN_IF_ERROR(WriteResolvConf(options_.root, req.dns()));
  if (!req.interfaces().empty() || !req.routes().empty()) {
    VESSEL_RETURN_IF_ERROR(ConfigureNetwork(req.interfaces(), req.routes()));
  }
  if (!req.hostname().empty() && !options_.host_mode &&
      ::sethostname(req.hostname().data(), req.hostname().size()) != 0) {
    return ErrnoStatus("sethostname");
  }
  pid_t holder = -1;
  ScopedFd pidns;
  if (req.sandbox_pidns()) {
    VESSEL_ASSIGN_OR_RETURN(holder, SpawnPidnsHolder());
    std::string path = absl::StrCat("/proc/", holder, "/ns/pid");
    pidns.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!pidns.valid()) {
      absl::Status status = ErrnoStatus(absl::StrCat("open ", path));
      ::kill(holder, SIGKILL);
      return status;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  pidns_holder_ = holder;
  pidns_fd_ = std::move(pidns);
  hostname_ = req.hostname();
  sandbox_storages_ = guard.Release();
  std::move(undo).Cancel();
  return absl::OkStatus();
}

absl::Status Agent::DestroySandbox(const v1::DestroySandboxRequest& req) {
  std::vector<std::unique_ptr<Container>> removed;
  std::vector<std::string> storages;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!sandbox_created_) return absl::FailedPreconditionError("no sandbox was created");
    if (!req.sandbox_id().empty() && req.sandbox_id() != sandbox_id_) {
      return absl::NotFoundError(absl::StrCat("no sandbox '", req.sandbox_id(), "'"));
    }
    // No new containers from here on. The containers stay in the map while they are killed: the
    // reaper finds their processes through by_pid_ and marks them reaped (KillAndWaitLocked lets go
    // of mu_ while it waits, so each one is looked up again afterwards).
    sandbox_created_ = false;
    std::vector<std::string> ids;
    for (auto& [id, c] : containers_) ids.push_back(id);
    for (const std::string& id : ids) {
      auto it = containers_.find(id);
      if (it != containers_.end() && it->second != nullptr) KillAndWaitLocked(lock, *it->second);
    }
    for (auto& [id, c] : containers_) removed.push_back(std::move(c));
    containers_.clear();
    storages = std::move(sandbox_storages_);
    sandbox_storages_.clear();
    if (pidns_holder_ > 0) {
      // The holder is PID 1 of the shared namespace: killed, it exits only once everything in the
      // namespace has been reaped, by the reaper, which takes mu_. So wait for it with mu_
      // released (the reaper reaps the holder itself as an unknown child).
      const pid_t holder = pidns_holder_;
      ::kill(holder, SIGKILL);
      if (!reaped_cv_.wait_for(lock, kKillWait,
                               [holder] { return ::kill(holder, 0) != 0 && errno == ESRCH; })) {
        LogWarning("agent: the sandbox PID namespace's holder ", holder, " is still there ",
                   kKillWait.count(), " s after SIGKILL");
      }
    }
    pidns_holder_ = -1;
    pidns_fd_.reset();
  }
  absl::Status status;
  for (auto& c : removed) status.Update(Dispose(std::move(c)));
  for (auto it = storages.rbegin(); it != storages.rend(); ++it) status.Update(UnmountStorage(*it));
  return status;
}

void Agent::Shutdown() {
  std::vector<ttrpc::TypedReply<v1::OOMEvent>> oom;
  bool destroy = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    oom.swap(oom_waiters_);
    destroy = sandbox_created_;
  }
  for (auto& reply : oom) reply(absl::CancelledError("the agent is shutting down"));
  if (destroy) {
    absl::Status s = DestroySandbox(v1::DestroySandboxRequest());
    if (!s.ok()) LogWarning("agent: shutdown: ", s.message());
  }
}

// ---- containers ----

void Agent::KillAndWaitLocked(std::unique_lock<std::mutex>& lock, Container& c) {
  auto alive = [&c] {
    if (!c.init->reaped) return true;
    for (auto& [id, p] : c.execs) {
      if (p != nullptr && !p->reaped) return true;
    }
    return false;
  };
  if (!alive()) return;
  for (pid_t pid : c.cgroup.Pids()) ::kill(pid, SIGKILL);
  if (!c.init->reaped) ::kill(c.init->pid, SIGKILL);
  for (auto& [id, p] : c.execs) {
    if (p != nullptr && !p->reaped) ::kill(p->pid, SIGKILL);
  }
  if (!reaped_cv_.wait_for(lock, kKillWait, alive)) {
    LogWarning("agent: container ", c.id, ": processes still alive ", kKillWait.count(),
               " s after SIGKILL");
  }
}

void Agent::OnOom(const std::string& container_id) {
  std::unique_lock<std::mutex> lock(mu_);
  if (oom_waiters_.empty()) {
    if (oom_events_.size() >= 256) oom_events_.pop_front();
    oom_events_.push_back(container_id);
    return;
  }
  ttrpc::TypedReply<v1::OOMEvent> reply = std::move(oom_waiters_.front());
  oom_waiters_.erase(oom_waiters_.begin());
  lock.unlock();
  v1::OOMEvent event;
  event.set_container_id(container_id);
  reply(event);
}

absl::Status Agent::Dispose(std::unique_ptr<Container> c) {
  if (oom_watcher_ != nullptr) oom_watcher_->Unwatch(c->id);
  absl::Status status = c->cgroup.Remove();
  for (auto it = c->storages.rbegin(); it != c->storages.rend(); ++it)
    status.Update(UnmountStorage(*it));
  c.reset();  // joins relays outside mu_
  // The guest kernel keeps a removed container's unused dentries (its rootfs path on the virtio-fs
  // share) until memory pressure, and each cached share directory holds an fd in the VMM: one per
  // container ever removed (issue 10's soak). Every 16th removal drops unused dentries and inodes,
  // which bounds that at 16 without re-reading the images' files after every container.
  static std::atomic<unsigned> removed{0};
  if (!options_.host_mode && ++removed % 16 == 0) {
    int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, "2", 1);
      ::close(fd);
    }
  }
  return status;
}

absl::StatusOr<v1::CreateContainerResponse> Agent::CreateContainer(
    const v1::CreateContainerRequest& req) {
  const std::string& id = req.container_id();
  VESSEL_RETURN_IF_ERROR(ValidateId("container_id", id));
  std::string hostname;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return absl::UnavailableError("the agent is shutting down");
    if (!sandbox_created_)
      return absl::FailedPreconditionError("no sandbox: call CreateSandbox first");
    if (containers_.count(id) != 0 || creating_.count(id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("container '", id, "' already exists"));
    }
    creating_[id] = true;
    hostname = req.hostname().empty() ? hostname_ : req.hostname();
  }
  absl::Cleanup unreserve = [this, &id] {
    std::lock_guard<std::mutex> lock(mu_);
    creating_.erase(id);
  };
  VESSEL_ASSIGN_OR_RETURN(ProcessPlan process, PlanProcess(req.process()));
  std::shared_ptr<const SeccompProgram> seccomp;
  if (req.has_seccomp()) {
    VESSEL_ASSIGN_OR_RETURN(seccomp, CompileSeccomp(req.seccomp()));
  }
  VESSEL_ASSIGN_OR_RETURN(NamespacePlan namespaces,
                          PlanNamespaces(req.namespaces(), options_.root));
  if ((namespaces.clone_flags & CLONE_NEWPID) != 0) {
    // sandbox_pidns: a "new" PID namespace is the sandbox's shared one.
    std::lock_guard<std::mutex> lock(mu_);
    if (pidns_fd_.valid()) {
      namespaces.join_pid.reset(::fcntl(pidns_fd_.get(), F_DUPFD_CLOEXEC, 3));
      if (!namespaces.join_pid.valid()) return ErrnoStatus("dup the sandbox pid namespace fd");
      namespaces.clone_flags &= ~CLONE_NEWPID;
    }
  }
  if ((namespaces.clone_flags & CLONE_NEWUTS) == 0) {
    if (!req.hostname().empty()) {
      return absl::InvalidArgumentError(
          "a container hostname needs a new UTS namespace (NAMESPACE_TYPE_UTS)");
    }
    hostname.clear();  // never the agent's own UTS namespace
  }
  if (hostname.size() > 64)
    return absl::InvalidArgumentError("hostname is longer than 64 characters");
  StorageGuard storages;
  VESSEL_RETURN_IF_ERROR(MountAll(options_.root, req.storages(), storages));
  VESSEL_ASSIGN_OR_RETURN(RootfsPlan rootfs, PlanRootfs(options_.root, req.rootfs(),
                                                        req.rootfs_readonly(), req.mounts()));
  auto c = std::make_unique<Container>();
  c->id = id;
  c->seccomp = seccomp;
  VESSEL_ASSIGN_OR_RETURN(c->cgroup, ContainerCgroup::Create(cgroup_root_, id, req.resources()));
  ScopedFd procs;
  if (c->cgroup.valid()) {
    VESSEL_ASSIGN_OR_RETURN(procs, c->cgroup.OpenProcs());
  }
  PtyPlace pty;
  for (const v1::Mount& m : req.mounts()) {
    pty.in_child = pty.in_child || (m.type() == "devpts" && m.destination() == "/dev/pts");
  }
  pty.in_child = pty.in_child && process.terminal;
  VESSEL_ASSIGN_OR_RETURN(ChildStdio stdio,
                          OpenChildStdio(*options_.connector, req.stdio(), process.terminal, pty));

  SpawnRequest spawn;
  spawn.process = &process;
  spawn.namespaces = &namespaces;
  spawn.rootfs = &rootfs;
  spawn.hostname = hostname;
  spawn.cgroup_procs_fd = procs.get();
  spawn.stdio = &stdio;
  spawn.wait_for_start = true;
  spawn.seccomp = seccomp.get();
  ScopedFd report;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!sandbox_created_ || shut_down_) {
      return absl::FailedPreconditionError("the sandbox was destroyed during CreateContainer");
    }
    VESSEL_ASSIGN_OR_RETURN(Spawned child, Spawn(spawn));
    c->init = std::make_shared<ProcessState>();
    c->init->container_id = id;
    c->init->pid = child.pid;
    c->start_fd = std::move(child.start);
    report = std::move(child.report);
    by_pid_[child.pid] = c->init;
    (void)StartRelay(id, "", *c->init, stdio);
    c->storages = storages.Release();
    containers_[id] = std::move(c);
    creating_.erase(id);
  }
  std::move(unreserve).Cancel();
  ScopedFd terminal_socket = std::move(stdio.terminal_socket);  // relayed once the child has a pty
  stdio = ChildStdio();  // the child has its copies
  procs.reset();

  int child_master = -1;
  absl::Status ready = ReadChildReport(report.get(), /*expect_ready=*/true, &child_master);
  ScopedFd master;
  if (ready.ok() && pty.in_child) {
    pid_t pid;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = containers_.find(id);
      pid = it == containers_.end() ? -1 : it->second->init->pid;
    }
    ScopedFd pidfd(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
    if (!pidfd.valid()) {
      ready = ErrnoStatus("pidfd_open the container's init (to take its pty)");
    } else {
      master.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), child_master, 0)));
      if (!master.valid()) ready = ErrnoStatus("pidfd_getfd the container's pty master");
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = containers_.find(id);
  if (it == containers_.end())
    return absl::AbortedError(absl::StrCat("container '", id, "' was removed while being created"));
  if (ready.ok() && master.valid()) {
    ChildStdio relay;
    relay.pty_master = std::move(master);
    relay.terminal_socket = std::move(terminal_socket);
    (void)StartRelay(id, "", *it->second->init, relay);
  }
  if (ready.ok()) {
    it->second->report_fd = std::move(report);
    if (it->second->cgroup.valid() && oom_watcher_ != nullptr)
      oom_watcher_->Watch(id, it->second->cgroup.path());
    v1::CreateContainerResponse resp;
    resp.set_pid(static_cast<uint32_t>(it->second->init->pid));
    return resp;
  }
  // Leave nothing behind: the init is gone (or killed now), then the container goes.
  KillAndWaitLocked(lock, *it->second);
  it = containers_.find(id);
  if (it == containers_.end()) return ready;
  std::unique_ptr<Container> failed = std::move(it->second);
  containers_.erase(it);
  lock.unlock();
  (void)Dispose(std::move(failed));
  return ready;
}

absl::Status Agent::StartContainer(const v1::StartContainerRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id()));
  ScopedFd start, report;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = containers_.find(req.container_id());
    if (it == containers_.end())
      return absl::NotFoundError(absl::StrCat("no container '", req.container_id(), "'"));
    Container& c = *it->second;
    if (c.init->reaped)
      return absl::FailedPreconditionError(absl::StrCat("container '", c.id, "' has exited"));
    if (c.state != Container::State::kCreated) {
      return absl::FailedPreconditionError(
          absl::StrCat("container '", c.id, "' was already started"));
    }
    if (!c.report_fd.valid()) {
      return absl::FailedPreconditionError(
          absl::StrCat("container '", c.id, "' is still being created"));
    }
    c.state = Container::State::kStarting;
    start = std::move(c.start_fd);
    report = std::move(c.report_fd);
  }
  char go = 1;
  absl::Status status;
  if (::write(start.get(), &go, 1) != 1) {
    status = ErrnoStatus(absl::StrCat("start container '", req.container_id(), "'"));
  } else {
    start.reset();
    status = ReadChildReport(report.get(), /*expect_ready=*/false);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = containers_.find(req.container_id());
  if (it != containers_.end()) it->second->state = Container::State::kRunning;
  return status;
}

absl::StatusOr<v1::ExecProcessResponse> Agent::ExecProcess(const v1::ExecProcessRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id()));
  const std::string& cid = req.container_id();
  const std::string& eid = req.exec_id();
  VESSEL_RETURN_IF_ERROR(ValidateId("exec_id", eid));
  VESSEL_ASSIGN_OR_RETURN(ProcessPlan process, PlanProcess(req.process()));
  pid_t init_pid;
  ScopedFd procs;
  std::shared_ptr<const SeccompProgram> seccomp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = containers_.find(cid);
    if (it == containers_.end())
      return absl::NotFoundError(absl::StrCat("no container '", cid, "'"));
    Container& c = *it->second;
    if (c.state != Container::State::kRunning || c.init->reaped) {
      return absl::FailedPreconditionError(absl::StrCat("container '", cid, "' is not running"));
    }
    if (c.execs.count(eid) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("process '", eid, "' already exists in container '", cid, "'"));
    }
    c.execs[eid] = nullptr;  // reserved
    init_pid = c.init->pid;
    seccomp = c.seccomp;
    if (c.cgroup.valid()) {
      absl::StatusOr<ScopedFd> fd = c.cgroup.OpenProcs();
      if (!fd.ok()) {
        c.execs.erase(eid);
        return fd.status();
      }
      procs = std::move(*fd);
    }
  }
  auto unreserve = [this, &cid, &eid] {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = containers_.find(cid);
    if (it != containers_.end()) it->second->execs.erase(eid);
  };
  absl::StatusOr<NamespacePlan> namespaces = PlanJoinProcess(init_pid);
  if (!namespaces.ok()) {
    unreserve();
    return namespaces.status();
  }
  // A terminal for an exec comes from the container's own devpts when it has one.
  PtyPlace pty;
  std::string devpts = absl::StrCat("/proc/", init_pid, "/root/dev/pts");
  if (process.terminal && ::access((devpts + "/ptmx").c_str(), F_OK) == 0) pty.devpts_dir = devpts;
  absl::StatusOr<ChildStdio> stdio =
      OpenChildStdio(*options_.connector, req.stdio(), process.terminal, pty);
  if (!stdio.ok()) {
    unreserve();
    return stdio.status();
  }
  SpawnRequest spawn;
  spawn.process = &process;
  spawn.namespaces = &*namespaces;
  spawn.cgroup_procs_fd = procs.get();
  spawn.stdio = &*stdio;
  spawn.seccomp = seccomp.get();
  ScopedFd report;
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = containers_.find(cid);
    if (it == containers_.end() || it->second->init->reaped) {
      if (it != containers_.end()) it->second->execs.erase(eid);
      return absl::FailedPreconditionError(absl::StrCat("container '", cid, "' is not running"));
    }
    absl::StatusOr<Spawned> child = Spawn(spawn);
    if (!child.ok()) {
      it->second->execs.erase(eid);
      return child.status();
    }
    auto p = std::make_shared<ProcessState>();
    p->container_id = cid;
    p->exec_id = eid;
    p->pid = child->pid;
    pid = child->pid;
    report = std::move(child->report);
    by_pid_[pid] = p;
    (void)StartRelay(cid, eid, *p, *stdio);
    it->second->execs[eid] = std::move(p);
  }
  *stdio = ChildStdio();
  procs.reset();
  absl::Status status = ReadChildReport(report.get(), /*expect_ready=*/false);
  if (!status.ok()) {
    // The child exits 127 on its own; forget the exec id so the caller may retry.
    std::unique_lock<std::mutex> lock(mu_);
    auto it = containers_.find(cid);
    if (it != containers_.end()) {
      std::shared_ptr<ProcessState> p = it->second->execs[eid];
      reaped_cv_.wait_for(lock, kKillWait, [&p] { return p == nullptr || p->reaped; });
      it = containers_.find(cid);
      if (it != containers_.end()) it->second->execs.erase(eid);
      lock.unlock();
      p.reset();  // joins a relay outside mu_
    }
    return status;
  }
  v1::ExecProcessResponse resp;
  resp.set_pid(static_cast<uint32_t>(pid));
  return resp;
}

void Agent::WaitProcess(const v1::WaitProcessRequest& req,
                        ttrpc::TypedReply<v1::WaitProcessResponse> reply) {
  if (absl::Status ids = CheckIds(req.container_id(), &req.exec_id()); !ids.ok()) {
    reply(ids);
    return;
  }
  Waiters now;
  absl::Status error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<std::shared_ptr<ProcessState>> p =
        FindProcessLocked(req.container_id(), req.exec_id());
    if (!p.ok()) {
      error = p.status();
    } else if (*p == nullptr) {
      error =
          absl::NotFoundError(absl::StrCat("process '", req.exec_id(), "' is still being created"));
    } else {
      (*p)->waiters.push_back(reply);
      if ((*p)->exited()) TakeWaiters(**p, now);
    }
  }
  if (!error.ok()) {
    reply(error);
    return;
  }
  Answer(now);
}

absl::Status Agent::SignalProcess(const v1::SignalProcessRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id(), &req.exec_id()));
  int sig = static_cast<int>(req.signal());
  if (sig <= 0 || sig >= NSIG)
    return absl::InvalidArgumentError(absl::StrCat("bad signal number ", req.signal()));
  if (req.all() && !req.exec_id().empty()) {
    return absl::InvalidArgumentError("'all' signals the whole container: exec_id must be empty");
  }
  std::lock_guard<std::mutex> lock(mu_);
  VESSEL_ASSIGN_OR_RETURN(std::shared_ptr<ProcessState> p,
                          FindProcessLocked(req.container_id(), req.exec_id()));
  if (p == nullptr) return absl::FailedPreconditionError("the process is still being created");
  if (p->reaped)
    return absl::FailedPreconditionError(absl::StrCat("process ", p->pid, " has already exited"));
  if (req.all()) {
    Container& c = *containers_[req.container_id()];
    for (pid_t pid : c.cgroup.Pids()) ::kill(pid, sig);
    for (auto& [id, e] : c.execs) {
      if (e != nullptr && !e->reaped) ::kill(e->pid, sig);
    }
  }
  if (::kill(p->pid, sig) != 0) return ErrnoStatus(absl::StrCat("kill ", p->pid));
  return absl::OkStatus();
}

absl::Status Agent::RemoveContainer(const v1::RemoveContainerRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id()));
  std::unique_ptr<Container> removed;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = containers_.find(req.container_id());
    if (it == containers_.end())
      return absl::NotFoundError(absl::StrCat("no container '", req.container_id(), "'"));
    Container& c = *it->second;
    if (c.state != Container::State::kCreated && !c.init->reaped) {
      return absl::FailedPreconditionError(absl::StrCat("container '", c.id, "' is still running"));
    }
    for (auto& [id, e] : c.execs) {
      if (e == nullptr)
        return absl::FailedPreconditionError("an exec into this container is in progress");
    }
    KillAndWaitLocked(lock, c);
    it = containers_.find(req.container_id());
    if (it == containers_.end())
      return absl::NotFoundError(absl::StrCat("no container '", req.container_id(), "'"));
    removed = std::move(it->second);
    containers_.erase(it);
  }
  return Dispose(std::move(removed));
}

absl::Status Agent::ResizeTty(const v1::ResizeTtyRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id(), &req.exec_id()));
  std::lock_guard<std::mutex> lock(mu_);
  VESSEL_ASSIGN_OR_RETURN(std::shared_ptr<ProcessState> p,
                          FindProcessLocked(req.container_id(), req.exec_id()));
  if (p == nullptr || p->relay == nullptr)
    return absl::FailedPreconditionError("the process has no terminal");
  if (req.width() > 0xffff || req.height() > 0xffff)
    return absl::InvalidArgumentError("terminal size out of range");
  winsize ws{};
  ws.ws_col = static_cast<unsigned short>(req.width());
  ws.ws_row = static_cast<unsigned short>(req.height());
  if (::ioctl(p->relay->master_fd(), TIOCSWINSZ, &ws) != 0) return ErrnoStatus("TIOCSWINSZ");
  return absl::OkStatus();
}

absl::Status Agent::CloseStdin(const v1::CloseStdinRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id(), &req.exec_id()));
  std::lock_guard<std::mutex> lock(mu_);
  VESSEL_ASSIGN_OR_RETURN(std::shared_ptr<ProcessState> p,
                          FindProcessLocked(req.container_id(), req.exec_id()));
  if (p == nullptr) return absl::FailedPreconditionError("the process is still being created");
  if (p->relay != nullptr) {
    p->relay->CloseInput();
  } else if (p->stdin_control.valid()) {
    ::shutdown(p->stdin_control.get(), SHUT_RD);
    p->stdin_control.reset();
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::StatsContainerResponse> Agent::StatsContainer(
    const v1::StatsContainerRequest& req) {
  VESSEL_RETURN_IF_ERROR(CheckIds(req.container_id()));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = containers_.find(req.container_id());
  if (it == containers_.end())
    return absl::NotFoundError(absl::StrCat("no container '", req.container_id(), "'"));
  return it->second->cgroup.Stats();
}

void Agent::GetOOMEvent(ttrpc::TypedReply<v1::OOMEvent> reply) {
  std::unique_lock<std::mutex> lock(mu_);
  if (shut_down_) {
    lock.unlock();
    reply(absl::CancelledError("the agent is shutting down"));
    return;
  }
  if (!oom_events_.empty()) {
    v1::OOMEvent event;
    event.set_container_id(oom_events_.front());
    oom_events_.pop_front();
    lock.unlock();
    reply(event);
    return;
  }
  oom_waiters_.push_back(std::move(reply));
}

}  // namespace vessel::agent
