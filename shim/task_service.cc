#include "shim/task_service.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "containerd/events/task.pb.h"
#include "rpc/ttrpc/typed.h"
#include "shim/address.h"
#include "shim/mounts.h"
#include "shim/stdio.h"
#include "vmm/base/errors.h"

namespace vessel::shim {

namespace task = containerd::task::v2;
namespace types = containerd::v1::types;
namespace events = containerd::events;
using google::protobuf::Empty;

namespace {

constexpr size_t kMaxSpecBytes = 16 << 20;

std::string Who(const std::string& id, const std::string& exec_id) {
  return exec_id.empty() ? absl::StrCat("task ", id) : absl::StrCat("exec ", exec_id, " of task ", id);
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus("open " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  if (text.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", kMaxSpecBytes, " bytes"));
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object (an OCI runtime spec)"));
  }
  return j;
}

absl::Status Unsupported(absl::string_view method) {
  return absl::UnimplementedError(absl::StrCat(method, " is not supported by vessel yet"));
}

}  // namespace

absl::Status ForContainerd(const absl::Status& status, absl::string_view what) {
  if (status.ok()) return status;
  if (status.code() == absl::StatusCode::kFailedPrecondition &&
      (absl::StrContains(status.message(), "exited") || absl::StrContains(status.message(), "finished"))) {
    return absl::NotFoundError(absl::StrCat(what, ": process already finished"));
  }
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

absl::StatusOr<std::string> NetnsPathFromSpec(const nlohmann::json& spec) {
  auto linux = spec.find("linux");
  if (linux == spec.end() || !linux->is_object()) return std::string();
  auto ns = linux->find("namespaces");
  if (ns == linux->end() || !ns->is_array()) return std::string();
  for (const nlohmann::json& n : *ns) {
    if (!n.is_object() || n.value("type", nlohmann::json()) != "network") continue;
    auto path = n.find("path");
    if (path == n.end() || path->is_null()) return std::string();
    if (!path->is_string()) {
      return absl::InvalidArgumentError("config.json: linux.namespaces[network].path must be a string");
    }
    std::string p = path->get<std::string>();
    if (!p.empty() && p.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: network namespace path \"", p, "\" is not absolute"));
    }
    return p;
  }
  return std::string();
}

absl::StatusOr<std::string> RootPathFromSpec(const nlohmann::json& spec, const std::string& bundle) {
  std::string path = "rootfs";
  if (auto root = spec.find("root"); root != spec.end() && root->is_object()) {
    if (auto p = root->find("path"); p != root->end()) {
      if (!p->is_string() || p->get<std::string>().empty()) {
        return absl::InvalidArgumentError("config.json: root.path must be a non-empty string");
      }
      path = p->get<std::string>();
    }
  }
  return path.front() == '/' ? path : absl::StrCat(bundle, "/", path);
}

io::containerd::cgroups::v2::Metrics MetricsFromAgent(const agent::v1::StatsContainerResponse& stats) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  io::containerd::cgroups::v2::Metrics m;
  m.mutable_pids()->set_current(stats.pids().current());
  m.mutable_pids()->set_limit(stats.pids().limit() == 0 ? kMax : stats.pids().limit());
  auto* cpu = m.mutable_cpu();
  cpu->set_usage_usec(stats.cpu().usage_usec());
  cpu->set_user_usec(stats.cpu().user_usec());
  cpu->set_system_usec(stats.cpu().system_usec());
  cpu->set_nr_periods(stats.cpu().nr_periods());
  cpu->set_nr_throttled(stats.cpu().nr_throttled());
  cpu->set_throttled_usec(stats.cpu().throttled_usec());
  auto* mem = m.mutable_memory();
  mem->set_anon(stats.memory().anon_bytes());
  mem->set_file(stats.memory().file_bytes());
  mem->set_usage(stats.memory().usage_bytes());
  mem->set_usage_limit(stats.memory().limit_bytes() == 0 ? kMax : stats.memory().limit_bytes());
  mem->set_swap_usage(stats.memory().swap_usage_bytes());
  m.mutable_memory_events()->set_oom(stats.memory().oom_events());
  m.mutable_memory_events()->set_oom_kill(stats.memory().oom_kill_events());
  for (const agent::v1::IoDeviceStats& d : stats.io()) {
    auto* e = m.mutable_io()->add_usage();
    e->set_dev_major(d.dev_major());
    e->set_dev_minor(d.dev_minor());
    e->set_rbytes(d.read_bytes());
    e->set_wbytes(d.write_bytes());
    e->set_rios(d.read_ios());
    e->set_wios(d.write_ios());
  }
  return m;
}

TaskService::TaskService(TaskServiceOptions options) : options_(std::move(options)) {}

TaskService::~TaskService() { Teardown(); }

std::string TaskService::sandbox_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sandbox_id_;
}

size_t TaskService::task_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.size();
}

absl::StatusOr<TaskService::Proc*> TaskService::FindLocked(const std::string& id, const std::string& exec_id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", id, " not found"));
  if (exec_id.empty()) return &it->second.init;
  auto e = it->second.execs.find(exec_id);
  if (e == it->second.execs.end()) {
    return absl::NotFoundError(absl::StrCat("exec ", exec_id, " of task ", id, " not found"));
  }
  return &e->second;
}

absl::StatusOr<std::shared_ptr<PodBackend>> TaskService::EnsurePod(const std::string& container_id, const nlohmann::json& spec,
                                                   const std::string& sandbox_id) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (torn_down_) return absl::UnavailableError("the shim is shutting down");
    if (pod_ != nullptr) {
      if (sandbox_id != sandbox_id_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "task ", container_id, " belongs to pod sandbox ", sandbox_id, " but this shim serves sandbox ",
            sandbox_id_, " (check the io.kubernetes.cri.sandbox-id annotation)"));
      }
      return pod_;
    }
  }
  sandbox::SandboxConfig config;
  config.id = sandbox_id;
  config.runtime = options_.runtime;
  if (auto h = spec.find("hostname"); h != spec.end() && h->is_string()) config.hostname = h->get<std::string>();
  VESSEL_ASSIGN_OR_RETURN(config.netns_path, NetnsPathFromSpec(spec));
  if (options_.log != nullptr) {
    options_.log->set_sandbox(sandbox_id);
    options_.log->Info(absl::StrCat("booting sandbox ", sandbox_id, " for task ", container_id,
                                    config.netns_path.empty() ? "" : " in network namespace ",
                                    config.netns_path));
  }
  sandbox::SandboxEvents events;
  events.on_exit = [this](const std::string& cid, const std::string& eid, uint32_t status) {
    OnExit(cid, eid, status);
  };
  events.on_oom = [this](const std::string& cid) { OnOom(cid); };
  absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<PodBackend>> pod = options_.pod_factory(std::move(config), std::move(events));
  if (!pod.ok()) {
    if (options_.log != nullptr) options_.log->Error(absl::StrCat("sandbox ", sandbox_id, ": ", pod.status().ToString()));
    return absl::Status(pod.status().code(), absl::StrCat("create sandbox ", sandbox_id, ": ", pod.status().message()));
  }
  if (options_.log != nullptr) {
    options_.log->Info(absl::StrCat("sandbox ", sandbox_id, " ready after ", absl::FormatDuration(absl::Now() - t0)));
  }
  std::lock_guard<std::mutex> lock(mu_);
  pod_ = std::move(*pod);
  sandbox_id_ = sandbox_id;
  return pod_;
}

absl::StatusOr<task::CreateTaskResponse> TaskService::Create(const task::CreateTaskRequest& req) {
  const std::string& id = req.id();
  if (!IsValidId(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task id \"", id, "\" must be 1-64 characters of [A-Za-z0-9_.-] for vessel"));
  }
  if (req.bundle().empty() || req.bundle().front() != '/') {
    return absl::InvalidArgumentError(absl::StrCat("task ", id, ": bundle \"", req.bundle(), "\" is not an absolute path"));
  }
  if (!req.checkpoint().empty()) return Unsupported("Create from a checkpoint");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (tasks_.count(id) != 0 || creating_.count(id) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("task ", id, " already exists"));
    }
    if (exit_requested_ || torn_down_) return absl::UnavailableError("the shim is shutting down");
    creating_.insert(id);
  }
  absl::Cleanup forget = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    creating_.erase(id);
  };

  absl::StatusOr<nlohmann::json> spec = ReadJsonFile(req.bundle() + "/config.json");
  if (!spec.ok()) return ForContainerd(spec.status(), absl::StrCat("task ", id));
  absl::StatusOr<PodMembership> pod_of = PodMembershipFromSpec(*spec, id);
  if (!pod_of.ok()) return ForContainerd(pod_of.status(), absl::StrCat("task ", id));

  Task t;
  t.id = id;
  t.bundle = req.bundle();
  t.rootfs = req.bundle() + "/rootfs";
  if (req.rootfs_size() > 0) {
    if (::mkdir(t.rootfs.c_str(), 0711) != 0 && errno != EEXIST) {
      return ErrnoStatus(absl::StrCat("task ", id, ": mkdir ", t.rootfs));
    }
    std::vector<containerd::types::Mount> mounts(req.rootfs().begin(), req.rootfs().end());
    absl::Status m = MountAll(mounts, t.rootfs);
    if (!m.ok()) return ForContainerd(m, absl::StrCat("task ", id, ": rootfs"));
    t.rootfs_mounted = true;
  }
  absl::Cleanup unmount = [&] {
    if (t.rootfs_mounted) (void)UnmountAll(t.rootfs);
  };

  absl::StatusOr<std::shared_ptr<PodBackend>> pod = EnsurePod(id, *spec, pod_of->sandbox_id);
  if (!pod.ok()) return pod.status();

  absl::StatusOr<OpenedStdio> io = OpenStdio(req.stdin(), req.stdout(), req.stderr(), req.terminal());
  if (!io.ok()) return ForContainerd(io.status(), absl::StrCat("task ", id));
  sandbox::ContainerConfig cc;
  cc.id = id;
  cc.spec = std::move(*spec);
  // With mounts the rootfs is what we mounted; without (`ctr run --rootfs DIR`) it is the spec's
  // root.path, relative to the bundle, as runc reads it.
  if (req.rootfs_size() > 0) {
    cc.rootfs_dir = t.rootfs;
  } else {
    absl::StatusOr<std::string> root = RootPathFromSpec(cc.spec, t.bundle);
    if (!root.ok()) return ForContainerd(root.status(), absl::StrCat("task ", id));
    cc.rootfs_dir = *root;
  }
  cc.stdio = {io->in.get(), io->out.get(), io->err.get(), req.terminal()};
  absl::StatusOr<uint32_t> pid = (*pod)->CreateContainer(std::move(cc));
  if (!pid.ok()) return ForContainerd(pid.status(), absl::StrCat("create task ", id));
  // The sandbox holds its own copies of the stdio fds; ours close with `io`.

  t.init.pid = *pid;
  t.init.stdin_path = req.stdin();
  t.init.stdout_path = req.stdout();
  t.init.stderr_path = req.stderr();
  t.init.terminal = req.terminal();
  std::move(unmount).Cancel();
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.emplace(id, std::move(t));
    events::TaskCreate ev;
    ev.set_container_id(id);
    ev.set_bundle(req.bundle());
    *ev.mutable_rootfs() = req.rootfs();
    ev.mutable_io()->set_stdin(req.stdin());
    ev.mutable_io()->set_stdout(req.stdout());
    ev.mutable_io()->set_stderr(req.stderr());
    ev.mutable_io()->set_terminal(req.terminal());
    ev.set_checkpoint(req.checkpoint());
    ev.set_pid(*pid);
    if (options_.events != nullptr) options_.events->Publish(kTopicTaskCreate, ev);
  }
  // Like runc's init.pid: `delete` after a crash reports it.
  std::ofstream(req.bundle() + "/init.pid") << *pid;
  WatchExit(*pod, id, "");
  if (options_.log != nullptr) options_.log->Info(absl::StrCat("created task ", id, " (pid ", *pid, ")"));
  task::CreateTaskResponse resp;
  resp.set_pid(*pid);
  return resp;
}

void TaskService::WatchExit(const std::shared_ptr<PodBackend>& pod, const std::string& id, const std::string& exec_id) {
  pod->WatchExit(id, exec_id, [this, id, exec_id](absl::StatusOr<uint32_t> status) {
    OnExit(id, exec_id, std::move(status));
  });
}

void TaskService::PublishExitLocked(const Task& task, const Proc& proc) {
  if (options_.events == nullptr) return;
  events::TaskExit ev;
  ev.set_container_id(task.id);
  ev.set_id(proc.exec_id.empty() ? task.id : proc.exec_id);
  ev.set_pid(proc.pid);
  ev.set_exit_status(proc.exit_status);
  ToTimestamp(proc.exited_at, ev.mutable_exited_at());
  options_.events->Publish(kTopicTaskExit, ev);
}

void TaskService::OnExit(const std::string& container_id, const std::string& exec_id,
                         absl::StatusOr<uint32_t> status) {
  std::vector<WaitReply> waiters;
  task::WaitResponse resp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(container_id);
    if (it == tasks_.end()) return;
    Task& t = it->second;
    Proc* p = &t.init;
    if (!exec_id.empty()) {
      auto e = t.execs.find(exec_id);
      if (e == t.execs.end()) return;
      p = &e->second;
    }
    if (p->exited) return;  // the SDK's on_exit and WatchExit both report it
    p->exited = true;
    p->exited_at = absl::Now();
    // Unknown status (the VM is gone): what a SIGKILL gives, as containerd reports a dead shim.
    p->exit_status = status.ok() ? *status : 128 + SIGKILL;
    p->status = types::STOPPED;
    if (options_.log != nullptr) {
      options_.log->Info(absl::StrCat(Who(container_id, exec_id), " exited with status ", p->exit_status,
                                      status.ok() ? "" : absl::StrCat(" (", status.status().message(), ")")));
    }
    if (p->starting) {
      p->exit_event_pending = true;  // Start publishes it after its own event
    } else {
      PublishExitLocked(t, *p);
    }
    waiters.swap(p->waiters);
    resp.set_exit_status(p->exit_status);
    ToTimestamp(p->exited_at, resp.mutable_exited_at());
  }
  for (WaitReply& w : waiters) w(resp);
}

void TaskService::OnOom(const std::string& container_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (tasks_.count(container_id) == 0) return;
  if (options_.log != nullptr) options_.log->Warn(absl::StrCat("task ", container_id, " hit its memory limit (OOM kill)"));
  events::TaskOOM ev;
  ev.set_container_id(container_id);
  if (options_.events != nullptr) options_.events->Publish(kTopicTaskOOM, ev);
}

absl::StatusOr<task::StartResponse> TaskService::Start(const task::StartRequest& req) {
  const std::string& id = req.id();
  const std::string& exec_id = req.exec_id();
  std::string who = Who(id, exec_id);
  std::shared_ptr<PodBackend> pod;
  sandbox::ExecConfig exec;
  std::string stdin_path, stdout_path, stderr_path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(id, exec_id));
    if (tasks_[id].deleting) return absl::NotFoundError(absl::StrCat(who, " is being deleted"));
    if (p->starting) return absl::FailedPreconditionError(absl::StrCat(who, " is already being started"));
    if (p->exited) return absl::FailedPreconditionError(absl::StrCat(who, " has already exited"));
    if (p->status != types::CREATED) return absl::FailedPreconditionError(absl::StrCat(who, " is already started"));
    if (!exec_id.empty() && tasks_[id].init.exited) {
      return absl::FailedPreconditionError(absl::StrCat("task ", id, " has exited: cannot start exec ", exec_id));
    }
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
    p->starting = true;
    if (!exec_id.empty()) {
      exec.exec_id = exec_id;
      exec.process = p->process_spec;
      stdin_path = p->stdin_path;
      stdout_path = p->stdout_path;
      stderr_path = p->stderr_path;
      exec.stdio.terminal = p->terminal;
    }
  }
  absl::Status s;
  uint32_t pid = 0;
  if (exec_id.empty()) {
    s = pod->Start(id);
  } else {
    absl::StatusOr<OpenedStdio> io = OpenStdio(stdin_path, stdout_path, stderr_path, exec.stdio.terminal);
    if (!io.ok()) {
      s = io.status();
    } else {
      exec.stdio.stdin_fd = io->in.get();
      exec.stdio.stdout_fd = io->out.get();
      exec.stdio.stderr_fd = io->err.get();
      absl::StatusOr<uint32_t> exec_pid = pod->Exec(id, std::move(exec));
      s = exec_pid.status();
      if (exec_pid.ok()) pid = *exec_pid;
    }
  }
  task::StartResponse resp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Proc*> found = FindLocked(id, exec_id);
    if (!found.ok()) return found.status();  // deleted meanwhile
    Proc* p = *found;
    Task& t = tasks_[id];
    p->starting = false;
    if (!s.ok()) {
      if (p->exit_event_pending) {
        p->exit_event_pending = false;
        PublishExitLocked(t, *p);
      }
      return ForContainerd(s, absl::StrCat("start ", who));
    }
    if (!exec_id.empty()) p->pid = pid;
    if (!p->exited) p->status = types::RUNNING;
    if (exec_id.empty()) {
      events::TaskStart ev;
      ev.set_container_id(id);
      ev.set_pid(p->pid);
      if (options_.events != nullptr) options_.events->Publish(kTopicTaskStart, ev);
    } else {
      events::TaskExecStarted ev;
      ev.set_container_id(id);
      ev.set_exec_id(exec_id);
      ev.set_pid(p->pid);
      if (options_.events != nullptr) options_.events->Publish(kTopicTaskExecStarted, ev);
    }
    if (p->exit_event_pending) {
      p->exit_event_pending = false;
      PublishExitLocked(t, *p);
    }
    resp.set_pid(p->pid);
  }
  if (!exec_id.empty()) WatchExit(pod, id, exec_id);
  if (options_.log != nullptr) options_.log->Info(absl::StrCat("started ", who));
  return resp;
}

absl::StatusOr<task::DeleteResponse> TaskService::Delete(const task::DeleteRequest& req) {
  const std::string& id = req.id();
  const std::string& exec_id = req.exec_id();
  std::string who = Who(id, exec_id);
  task::DeleteResponse resp;
  std::shared_ptr<PodBackend> pod;
  std::vector<WaitReply> unstarted_waiters;  // answered outside the lock
  absl::Cleanup answer_unstarted = [&] {
    for (WaitReply& w : unstarted_waiters) w(absl::NotFoundError(absl::StrCat(who, " was deleted before it ran")));
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(id, exec_id));
    Task& t = tasks_[id];
    if (t.deleting) return absl::FailedPreconditionError(absl::StrCat("task ", id, " is already being deleted"));
    if (p->starting || (p->status == types::RUNNING && !p->exited)) {
      return absl::FailedPreconditionError(absl::StrCat(who, " is running: kill it and wait for its exit first"));
    }
    if (!exec_id.empty()) {
      resp.set_pid(p->pid);
      resp.set_exit_status(p->exit_status);
      if (p->exited) ToTimestamp(p->exited_at, resp.mutable_exited_at());
      unstarted_waiters.swap(p->waiters);
      t.execs.erase(exec_id);
      return resp;
    }
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
    t.deleting = true;
  }
  absl::Status removed = pod->RemoveContainer(id);  // reports the exits of what it killed first
  if (!removed.ok() && options_.log != nullptr) {
    options_.log->Warn(absl::StrCat("remove ", who, " from the sandbox: ", removed.ToString()));
  }
  std::vector<WaitReply> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", id, " not found"));
    Task& t = it->second;
    if (t.rootfs_mounted) {
      absl::Status u = UnmountAll(t.rootfs);
      if (!u.ok() && options_.log != nullptr) options_.log->Warn(u.ToString());
    }
    if (!t.init.exited) {  // never started, or the sandbox could not tell
      t.init.exited = true;
      t.init.exit_status = 128 + SIGKILL;
      t.init.exited_at = absl::Now();
      t.init.status = types::STOPPED;
    }
    resp.set_pid(t.init.pid);
    resp.set_exit_status(t.init.exit_status);
    ToTimestamp(t.init.exited_at, resp.mutable_exited_at());
    waiters.swap(t.init.waiters);
    for (auto& [eid, e] : t.execs) {
      for (WaitReply& w : e.waiters) waiters.push_back(std::move(w));
    }
    events::TaskDelete ev;
    ev.set_container_id(id);
    ev.set_pid(t.init.pid);
    ev.set_exit_status(t.init.exit_status);
    ToTimestamp(t.init.exited_at, ev.mutable_exited_at());
    if (options_.events != nullptr) options_.events->Publish(kTopicTaskDelete, ev);
    tasks_.erase(it);
  }
  for (WaitReply& w : waiters) w(absl::NotFoundError(absl::StrCat(who, " was deleted")));
  if (options_.log != nullptr) options_.log->Info(absl::StrCat("deleted ", who));
  return resp;
}

absl::StatusOr<Empty> TaskService::Exec(const task::ExecProcessRequest& req) {
  const std::string& id = req.id();
  const std::string& exec_id = req.exec_id();
  if (!IsValidId(exec_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("exec id \"", exec_id, "\" must be 1-64 characters of [A-Za-z0-9_.-] for vessel"));
  }
  nlohmann::json process = nlohmann::json::parse(req.spec().value(), nullptr, /*allow_exceptions=*/false);
  if (process.is_discarded() || !process.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("exec ", exec_id, " of task ", id,
                                                   ": spec is not an OCI process JSON object"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", id, " not found"));
  Task& t = it->second;
  if (t.deleting) return absl::NotFoundError(absl::StrCat("task ", id, " is being deleted"));
  if (t.execs.count(exec_id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("exec ", exec_id, " of task ", id, " already exists"));
  }
  if (t.init.exited) return absl::FailedPreconditionError(absl::StrCat("task ", id, " has exited"));
  Proc& p = t.execs[exec_id];
  p.exec_id = exec_id;
  p.process_spec = std::move(process);
  p.stdin_path = req.stdin();
  p.stdout_path = req.stdout();
  p.stderr_path = req.stderr();
  p.terminal = req.terminal();
  events::TaskExecAdded ev;
  ev.set_container_id(id);
  ev.set_exec_id(exec_id);
  if (options_.events != nullptr) options_.events->Publish(kTopicTaskExecAdded, ev);
  return Empty();
}

void TaskService::FillState(const Task& task, const Proc& proc, task::StateResponse* out) const {
  out->set_id(proc.exec_id.empty() ? task.id : proc.exec_id);
  out->set_bundle(task.bundle);
  out->set_pid(proc.pid);
  types::Status status = proc.exited ? types::STOPPED : proc.status;
  if (status == types::RUNNING && task.paused) status = types::PAUSED;
  out->set_status(status);
  out->set_stdin(proc.stdin_path);
  out->set_stdout(proc.stdout_path);
  out->set_stderr(proc.stderr_path);
  out->set_terminal(proc.terminal);
  out->set_exit_status(proc.exit_status);
  if (proc.exited) ToTimestamp(proc.exited_at, out->mutable_exited_at());
  out->set_exec_id(proc.exec_id);
}

absl::StatusOr<task::StateResponse> TaskService::State(const task::StateRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(req.id(), req.exec_id()));
  task::StateResponse resp;
  FillState(tasks_[req.id()], *p, &resp);
  return resp;
}

absl::StatusOr<Empty> TaskService::Kill(const task::KillRequest& req) {
  std::string who = Who(req.id(), req.exec_id());
  if (req.signal() == 0 || req.signal() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("kill ", who, ": signal ", req.signal(), " is not 1-64"));
  }
  std::shared_ptr<PodBackend> pod;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(req.id(), req.exec_id()));
    if (p->exited) return absl::NotFoundError(absl::StrCat(who, ": process already finished"));
    if (!req.exec_id().empty() && p->status == types::CREATED && !p->starting) {
      return absl::FailedPreconditionError(absl::StrCat(who, " has not been started"));
    }
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
  }
  absl::Status s = pod->Signal(req.id(), req.exec_id(), static_cast<int>(req.signal()), req.all());
  if (!s.ok()) return ForContainerd(s, absl::StrCat("kill ", who));
  return Empty();
}

void TaskService::Wait(const task::WaitRequest& req, WaitReply reply) {
  task::WaitResponse resp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Proc*> p = FindLocked(req.id(), req.exec_id());
    if (!p.ok()) {
      reply(p.status());
      return;
    }
    if (!(*p)->exited) {
      (*p)->waiters.push_back(std::move(reply));
      return;
    }
    resp.set_exit_status((*p)->exit_status);
    ToTimestamp((*p)->exited_at, resp.mutable_exited_at());
  }
  reply(resp);
}

absl::StatusOr<task::PidsResponse> TaskService::Pids(const task::PidsRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(req.id());
  if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", req.id(), " not found"));
  task::PidsResponse resp;
  const Task& t = it->second;
  if (!t.init.exited && t.init.pid != 0) resp.add_processes()->set_pid(t.init.pid);
  for (const auto& [eid, e] : t.execs) {
    if (!e.exited && e.pid != 0 && e.status == types::RUNNING) resp.add_processes()->set_pid(e.pid);
  }
  return resp;
}

absl::StatusOr<Empty> TaskService::CloseIO(const task::CloseIORequest& req) {
  std::shared_ptr<PodBackend> pod;
  bool started = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(req.id(), req.exec_id()));
    started = req.exec_id().empty() || p->status != types::CREATED || p->starting;
    if (p->exited) return Empty();
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
  }
  if (!req.stdin() || !started) return Empty();
  absl::Status s = pod->CloseStdin(req.id(), req.exec_id());
  if (!s.ok()) return ForContainerd(s, absl::StrCat("close the stdin of ", Who(req.id(), req.exec_id())));
  return Empty();
}

absl::StatusOr<Empty> TaskService::ResizePty(const task::ResizePtyRequest& req) {
  std::string who = Who(req.id(), req.exec_id());
  std::shared_ptr<PodBackend> pod;
  {
    std::lock_guard<std::mutex> lock(mu_);
    VESSEL_ASSIGN_OR_RETURN(Proc * p, FindLocked(req.id(), req.exec_id()));
    if (!p->terminal) return absl::FailedPreconditionError(absl::StrCat(who, " has no terminal"));
    if (p->exited) return absl::NotFoundError(absl::StrCat(who, ": process already finished"));
    if (!req.exec_id().empty() && p->status == types::CREATED) {
      return absl::FailedPreconditionError(absl::StrCat(who, " has not been started"));
    }
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
  }
  if (req.width() > 0xffff || req.height() > 0xffff) {
    return absl::InvalidArgumentError(absl::StrCat("resize ", who, ": ", req.width(), "x", req.height(),
                                                   " is larger than 65535"));
  }
  absl::Status s = pod->ResizeTty(req.id(), req.exec_id(), req.height(), req.width());
  if (!s.ok()) return ForContainerd(s, absl::StrCat("resize the terminal of ", who));
  return Empty();
}

absl::StatusOr<task::ConnectResponse> TaskService::Connect(const task::ConnectRequest& req) {
  task::ConnectResponse resp;
  resp.set_shim_pid(static_cast<uint32_t>(::getpid()));
  resp.set_version(kShimVersion);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(req.id());
  if (it != tasks_.end()) resp.set_task_pid(it->second.init.pid);
  return resp;
}

absl::StatusOr<Empty> TaskService::Shutdown(const task::ShutdownRequest& /*req*/) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!tasks_.empty() || !creating_.empty() || exit_requested_) return Empty();
    exit_requested_ = true;
  }
  if (options_.log != nullptr) options_.log->Info("shutdown: no task left, the shim exits");
  if (options_.request_exit) options_.request_exit();
  return Empty();
}

absl::StatusOr<task::StatsResponse> TaskService::Stats(const task::StatsRequest& req) {
  std::shared_ptr<PodBackend> pod;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(req.id());
    if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", req.id(), " not found"));
    if (it->second.init.exited) return absl::NotFoundError(absl::StrCat("task ", req.id(), ": process already finished"));
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
  }
  absl::StatusOr<agent::v1::StatsContainerResponse> stats = pod->Stats(req.id());
  if (!stats.ok()) return ForContainerd(stats.status(), absl::StrCat("stats of task ", req.id()));
  io::containerd::cgroups::v2::Metrics metrics = MetricsFromAgent(*stats);
  task::StatsResponse resp;
  resp.mutable_stats()->set_type_url(metrics.GetDescriptor()->full_name());
  resp.mutable_stats()->set_value(metrics.SerializeAsString());
  return resp;
}

absl::StatusOr<Empty> TaskService::SetPaused(const std::string& id, bool paused) {
  std::shared_ptr<PodBackend> pod;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", id, " not found"));
    const Task& t = it->second;
    if (t.init.exited || t.init.status != types::RUNNING || t.deleting) {
      return absl::FailedPreconditionError(absl::StrCat("task ", id, " is not running"));
    }
    if (t.paused == paused) {
      return absl::FailedPreconditionError(absl::StrCat("task ", id, paused ? " is already paused" : " is not paused"));
    }
    pod = pod_;
    if (pod == nullptr) return absl::UnavailableError("the shim is shutting down");
  }
  absl::Status s = pod->Signal(id, "", paused ? SIGSTOP : SIGCONT, /*all=*/true);
  if (!s.ok()) return ForContainerd(s, absl::StrCat(paused ? "pause" : "resume", " task ", id));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return absl::NotFoundError(absl::StrCat("task ", id, " was deleted"));
  it->second.paused = paused;
  if (options_.events != nullptr) {
    if (paused) {
      events::TaskPaused ev;
      ev.set_container_id(id);
      options_.events->Publish(kTopicTaskPaused, ev);
    } else {
      events::TaskResumed ev;
      ev.set_container_id(id);
      options_.events->Publish(kTopicTaskResumed, ev);
    }
  }
  return Empty();
}

absl::StatusOr<Empty> TaskService::Pause(const task::PauseRequest& req) { return SetPaused(req.id(), true); }
absl::StatusOr<Empty> TaskService::Resume(const task::ResumeRequest& req) { return SetPaused(req.id(), false); }
absl::StatusOr<Empty> TaskService::Update(const task::UpdateTaskRequest&) { return Unsupported("Update"); }
absl::StatusOr<Empty> TaskService::Checkpoint(const task::CheckpointTaskRequest&) {
  return Unsupported("Checkpoint");
}

void TaskService::Teardown() {
  std::shared_ptr<PodBackend> pod;
  std::vector<std::string> rootfs;
  {
    std::lock_guard<std::mutex> create_lock(create_mu_);
    std::lock_guard<std::mutex> lock(mu_);
    if (torn_down_) return;
    torn_down_ = true;
    pod = std::move(pod_);
    for (auto& [id, t] : tasks_) {
      if (t.rootfs_mounted) rootfs.push_back(t.rootfs);
    }
  }
  if (pod != nullptr) {
    absl::Status s = pod->Stop();
    if (!s.ok() && options_.log != nullptr) options_.log->Warn(absl::StrCat("stop the sandbox: ", s.ToString()));
    pod.reset();
  }
  for (const std::string& r : rootfs) (void)UnmountAll(r);
  std::vector<WaitReply> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, t] : tasks_) {
      for (WaitReply& w : t.init.waiters) waiters.push_back(std::move(w));
      t.init.waiters.clear();
      for (auto& [eid, e] : t.execs) {
        for (WaitReply& w : e.waiters) waiters.push_back(std::move(w));
        e.waiters.clear();
      }
    }
  }
  for (WaitReply& w : waiters) w(absl::UnavailableError("the shim is shutting down"));
}

absl::Status RegisterTaskService(ttrpc::Server& server, boost::asio::thread_pool& pool, TaskService& s) {
  using ttrpc::CallContext;
#define VESSEL_SHIM_BLOCKING(Method, Req, Resp)                                                     \
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<Req, Resp>(                                      \
      server, pool, kTaskService, #Method,                                                          \
      [&s](const CallContext&, const Req& req) -> absl::StatusOr<Resp> { return s.Method(req); })))
  VESSEL_SHIM_BLOCKING(State, task::StateRequest, task::StateResponse);
  VESSEL_SHIM_BLOCKING(Create, task::CreateTaskRequest, task::CreateTaskResponse);
  VESSEL_SHIM_BLOCKING(Start, task::StartRequest, task::StartResponse);
  VESSEL_SHIM_BLOCKING(Delete, task::DeleteRequest, task::DeleteResponse);
  VESSEL_SHIM_BLOCKING(Pids, task::PidsRequest, task::PidsResponse);
  VESSEL_SHIM_BLOCKING(Pause, task::PauseRequest, Empty);
  VESSEL_SHIM_BLOCKING(Resume, task::ResumeRequest, Empty);
  VESSEL_SHIM_BLOCKING(Checkpoint, task::CheckpointTaskRequest, Empty);
  VESSEL_SHIM_BLOCKING(Kill, task::KillRequest, Empty);
  VESSEL_SHIM_BLOCKING(Exec, task::ExecProcessRequest, Empty);
  VESSEL_SHIM_BLOCKING(ResizePty, task::ResizePtyRequest, Empty);
  VESSEL_SHIM_BLOCKING(CloseIO, task::CloseIORequest, Empty);
  VESSEL_SHIM_BLOCKING(Update, task::UpdateTaskRequest, Empty);
  VESSEL_SHIM_BLOCKING(Stats, task::StatsRequest, task::StatsResponse);
  VESSEL_SHIM_BLOCKING(Connect, task::ConnectRequest, task::ConnectResponse);
  VESSEL_SHIM_BLOCKING(Shutdown, task::ShutdownRequest, Empty);
#undef VESSEL_SHIM_BLOCKING
  return ttrpc::RegisterAsync<task::WaitRequest, task::WaitResponse>(
      server, kTaskService, "Wait",
      [&s](const CallContext&, const task::WaitRequest& req, ttrpc::TypedReply<task::WaitResponse> reply) {
        s.Wait(req, [reply](const absl::StatusOr<task::WaitResponse>& r) { reply(r); });
      });
}

}  // namespace vessel::shim
