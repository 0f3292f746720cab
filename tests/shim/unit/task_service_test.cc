// The task service over a fake pod: what containerd sees (states, pids, exits, waiters, events,
// error codes) without a VM.
#include "shim/task_service.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "containerd/events/task.pb.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/typed.h"

namespace vessel::shim {
namespace {

namespace task = containerd::task::v2;
namespace types = containerd::v1::types;
namespace ev = containerd::services::events::ttrpc::v1;

// What the fake pod saw and does; shared between the test and the PodBackend the service owns.
struct FakeState {
  std::mutex mu;
  sandbox::SandboxEvents events;
  std::vector<sandbox::SandboxConfig> sandboxes;  // every factory call
  std::map<std::string, sandbox::ContainerConfig> containers;
  std::map<std::string, uint32_t> pids;
  std::set<std::string> running;  // "cid/eid"
  std::set<std::string> exited;
  std::map<std::string, std::vector<std::function<void(absl::StatusOr<uint32_t>)>>> watchers;
  std::vector<std::string> calls;
  uint32_t next_pid = 100;
  absl::Status factory_error;
  bool exit_during_start = false;  // the init exits (status 3) before Start returns
  int stdout_fd_seen = -2;
  std::vector<ScopedFd> held;  // the dups a real sandbox keeps
  bool terminal_seen = false;
  std::string stdout_bytes_written;

  static std::string Key(const std::string& c, const std::string& e) { return c + "/" + e; }

  // The process ends: the SDK's on_exit, then every WatchExit.
  void Exit(const std::string& c, const std::string& e, absl::StatusOr<uint32_t> status) {
    std::vector<std::function<void(absl::StatusOr<uint32_t>)>> w;
    {
      std::lock_guard<std::mutex> lock(mu);
      std::string k = Key(c, e);
      if (exited.count(k) != 0) return;
      exited.insert(k);
      running.erase(k);
      w.swap(watchers[k]);
    }
    if (status.ok() && events.on_exit) events.on_exit(c, e, *status);
    for (auto& f : w) f(status);
  }
};

class FakePod final : public PodBackend {
 public:
  explicit FakePod(std::shared_ptr<FakeState> s) : s_(std::move(s)) {}
  absl::StatusOr<uint32_t> CreateContainer(sandbox::ContainerConfig config) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back("create " + config.id);
    if (s_->containers.count(config.id)) return absl::AlreadyExistsError("exists");
    s_->stdout_fd_seen = config.stdio.stdout_fd;
    s_->terminal_seen = config.stdio.terminal;
    if (config.stdio.stdout_fd >= 0) {
      // As the SDK does: keep a dup, write through it.
      s_->held.emplace_back(::dup(config.stdio.stdout_fd));
      std::string msg = "hello\n";
      EXPECT_EQ(::write(config.stdio.stdout_fd, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
    }
    uint32_t pid = s_->next_pid++;
    s_->pids[config.id] = pid;
    s_->containers[config.id] = std::move(config);
    return pid;
  }
  absl::Status Start(const std::string& id) override {
    bool exit_now;
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->calls.push_back("start " + id);
      s_->running.insert(FakeState::Key(id, ""));
      exit_now = s_->exit_during_start;
    }
    if (exit_now) s_->Exit(id, "", 3u);
    return absl::OkStatus();
  }
  absl::StatusOr<uint32_t> Exec(const std::string& id, sandbox::ExecConfig config) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back("exec " + id + " " + config.exec_id + " " + config.process.dump());
    s_->running.insert(FakeState::Key(id, config.exec_id));
    return s_->next_pid++;
  }
  absl::Status Signal(const std::string& id, const std::string& exec_id, int signal, bool all) override {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->calls.push_back("signal " + id + " " + exec_id + " " + std::to_string(signal) + (all ? " all" : ""));
      if (s_->exited.count(FakeState::Key(id, exec_id))) {
        return absl::FailedPreconditionError("process has already exited");
      }
    }
    if (signal == SIGKILL || signal == SIGTERM) s_->Exit(id, exec_id, 128u + static_cast<uint32_t>(signal));
    return absl::OkStatus();
  }
  absl::Status ResizeTty(const std::string& id, const std::string& exec_id, uint32_t rows, uint32_t columns) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back("resize " + id + " " + exec_id + " " + std::to_string(rows) + "x" + std::to_string(columns));
    return absl::OkStatus();
  }
  absl::Status CloseStdin(const std::string& id, const std::string& exec_id) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back("closestdin " + id + " " + exec_id);
    return absl::OkStatus();
  }
  absl::StatusOr<agent::v1::StatsContainerResponse> Stats(const std::string&) override {
    agent::v1::StatsContainerResponse r;
    r.mutable_cpu()->set_usage_usec(1234);
    r.mutable_memory()->set_usage_bytes(4096);
    r.mutable_pids()->set_current(3);
    return r;
  }
  void WatchExit(const std::string& id, const std::string& exec_id,
                 std::function<void(absl::StatusOr<uint32_t>)> done) override {
    std::unique_lock<std::mutex> lock(s_->mu);
    s_->watchers[FakeState::Key(id, exec_id)].push_back(std::move(done));
  }
  absl::Status RemoveContainer(const std::string& id) override {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->calls.push_back("remove " + id);
    }
    s_->Exit(id, "", 137u);
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->containers.erase(id);
    return absl::OkStatus();
  }
  absl::Status Stop() override {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->calls.push_back("stop");
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<FakeState> s_;
};

class TaskServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vessel-shim-task-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fake_ = std::make_shared<FakeState>();
    publisher_ = std::make_unique<EventPublisher>(
        "default",
        [this](const ev::ForwardRequest& req) {
          std::lock_guard<std::mutex> lock(events_mu_);
          events_.push_back(req.envelope());
          events_cv_.notify_all();
          return absl::OkStatus();
        },
        nullptr);
    TaskServiceOptions o;
    o.ns = "default";
    o.pod_factory = [fake = fake_](sandbox::SandboxConfig config,
                                   sandbox::SandboxEvents events) -> absl::StatusOr<std::unique_ptr<PodBackend>> {
      std::lock_guard<std::mutex> lock(fake->mu);
      fake->sandboxes.push_back(config);
      if (!fake->factory_error.ok()) return fake->factory_error;
      fake->events = std::move(events);
      return std::make_unique<FakePod>(fake);
    };
    o.events = publisher_.get();
    o.request_exit = [this] { exit_requested_++; };
    service_ = std::make_unique<TaskService>(std::move(o));
  }
  void TearDown() override {
    service_.reset();
    publisher_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A bundle with config.json (and an empty rootfs directory, as `ctr run --rootfs` leaves it).
  std::string Bundle(const std::string& id, nlohmann::json annotations = nullptr,
                     std::string netns = "") {
    std::string b = dir_ + "/" + id;
    std::filesystem::create_directories(b + "/rootfs");
    nlohmann::json spec = sandbox::DefaultOciSpec({"/bin/true"});
    if (!annotations.is_null()) spec["annotations"] = annotations;
    if (!netns.empty()) spec["linux"]["namespaces"].push_back({{"type", "network"}, {"path", netns}});
    std::ofstream(b + "/config.json") << spec.dump();
    return b;
  }
  absl::StatusOr<task::CreateTaskResponse> Create(const std::string& id, nlohmann::json annotations = nullptr,
                                                  std::string stdout_path = "", bool terminal = false) {
    task::CreateTaskRequest req;
    req.set_id(id);
    req.set_bundle(Bundle(id, std::move(annotations)));
    req.set_stdout(stdout_path);
    req.set_terminal(terminal);
    return service_->Create(req);
  }
  task::StateResponse State(const std::string& id, const std::string& exec_id = "") {
    task::StateRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    absl::StatusOr<task::StateResponse> s = service_->State(req);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : task::StateResponse();
  }
  absl::StatusCode StateCode(const std::string& id, const std::string& exec_id = "") {
    task::StateRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    return service_->State(req).status().code();
  }
  absl::StatusOr<task::StartResponse> Start(const std::string& id, const std::string& exec_id = "") {
    task::StartRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    return service_->Start(req);
  }
  absl::Status Kill(const std::string& id, uint32_t signal, const std::string& exec_id = "", bool all = false) {
    task::KillRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    req.set_signal(signal);
    req.set_all(all);
    return service_->Kill(req).status();
  }
  absl::StatusOr<task::DeleteResponse> Delete(const std::string& id, const std::string& exec_id = "") {
    task::DeleteRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    return service_->Delete(req);
  }
  absl::Status Exec(const std::string& id, const std::string& exec_id, std::string spec_json) {
    task::ExecProcessRequest req;
    req.set_id(id);
    req.set_exec_id(exec_id);
    req.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
    req.mutable_spec()->set_value(std::move(spec_json));
    return service_->Exec(req).status();
  }
  // The topics published so far, after the sender caught up with `n` of them.
  std::vector<std::string> Topics(size_t n) {
    std::unique_lock<std::mutex> lock(events_mu_);
    events_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return events_.size() >= n; });
    std::vector<std::string> t;
    for (const ev::Envelope& e : events_) t.push_back(e.topic());
    return t;
  }
  ev::Envelope EventAt(size_t i) {
    Topics(i + 1);
    std::lock_guard<std::mutex> lock(events_mu_);
    return events_.at(i);
  }

  std::string dir_;
  std::shared_ptr<FakeState> fake_;
  std::unique_ptr<EventPublisher> publisher_;
  std::unique_ptr<TaskService> service_;
  std::atomic<int> exit_requested_{0};
  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::vector<ev::Envelope> events_;
};

TEST_F(TaskServiceTest, LifecycleStatesWaitAndEventsInOrder) {
  absl::StatusOr<task::CreateTaskResponse> created = Create("c1");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->pid(), 100u);
  ASSERT_EQ(fake_->sandboxes.size(), 1u);
  EXPECT_EQ(fake_->sandboxes[0].id, "c1");  // a standalone container is its own sandbox
  EXPECT_EQ(fake_->containers["c1"].rootfs_dir, dir_ + "/c1/rootfs");
  EXPECT_EQ(service_->sandbox_id(), "c1");

  task::StateResponse s = State("c1");
  EXPECT_EQ(s.status(), types::CREATED);
  EXPECT_EQ(s.pid(), 100u);
  EXPECT_EQ(s.bundle(), dir_ + "/c1");
  EXPECT_EQ(s.id(), "c1");
  EXPECT_FALSE(s.has_exited_at());

  // containerd waits before it starts.
  std::optional<absl::StatusOr<task::WaitResponse>> waited;
  task::WaitRequest wr;
  wr.set_id("c1");
  service_->Wait(wr, [&](const absl::StatusOr<task::WaitResponse>& r) { waited = r; });
  EXPECT_FALSE(waited.has_value());

  absl::StatusOr<task::StartResponse> started = Start("c1");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->pid(), 100u);
  EXPECT_EQ(State("c1").status(), types::RUNNING);
  EXPECT_FALSE(waited.has_value());

  fake_->Exit("c1", "", 7u);
  ASSERT_TRUE(waited.has_value());
  ASSERT_TRUE(waited->ok());
  EXPECT_EQ((*waited)->exit_status(), 7u);
  EXPECT_GT((*waited)->exited_at().seconds(), 0);
  s = State("c1");
  EXPECT_EQ(s.status(), types::STOPPED);
  EXPECT_EQ(s.exit_status(), 7u);
  EXPECT_TRUE(s.has_exited_at());

  // A later Wait answers at once.
  std::optional<absl::StatusOr<task::WaitResponse>> again;
  service_->Wait(wr, [&](const absl::StatusOr<task::WaitResponse>& r) { again = r; });
  ASSERT_TRUE(again.has_value() && again->ok());
  EXPECT_EQ((*again)->exit_status(), 7u);

  absl::StatusOr<task::DeleteResponse> deleted = Delete("c1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->exit_status(), 7u);
  EXPECT_EQ(deleted->pid(), 100u);
  EXPECT_EQ(StateCode("c1"), absl::StatusCode::kNotFound);

  EXPECT_EQ(Topics(4), (std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}));
  ev::Envelope exit = EventAt(2);
  EXPECT_EQ(exit.event().type_url(), "containerd.events.TaskExit");
  containerd::events::TaskExit te;
  ASSERT_TRUE(te.ParseFromString(exit.event().value()));
  EXPECT_EQ(te.container_id(), "c1");
  EXPECT_EQ(te.id(), "c1");  // the init's exec id is the container id in TaskExit
  EXPECT_EQ(te.pid(), 100u);
  EXPECT_EQ(te.exit_status(), 7u);
  containerd::events::TaskDelete td;
  ASSERT_TRUE(td.ParseFromString(EventAt(3).event().value()));
  EXPECT_EQ(td.exit_status(), 7u);

  task::ShutdownRequest sr;
  ASSERT_TRUE(service_->Shutdown(sr).ok());
  EXPECT_EQ(exit_requested_.load(), 1);
}

TEST_F(TaskServiceTest, ErrorCodesContainerdUnderstands) {
  EXPECT_EQ(StateCode("nope"), absl::StatusCode::kNotFound);
  EXPECT_EQ(Start("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Kill("nope", 9).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Delete("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Create("bad/id").status().code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(Create("c1").ok());
  EXPECT_EQ(Create("c1").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(StateCode("c1", "nope"), absl::StatusCode::kNotFound);
  EXPECT_EQ(Kill("c1", 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Kill("c1", 65).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(Start("c1").ok());
  EXPECT_EQ(Start("c1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Delete("c1").status().code(), absl::StatusCode::kFailedPrecondition);  // still running
  EXPECT_EQ(Exec("c1", "e1", "not json").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Exec("c1", "bad id", "{}").code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(Kill("c1", SIGKILL).ok());
  EXPECT_EQ(State("c1").status(), types::STOPPED);
  EXPECT_EQ(State("c1").exit_status(), 137u);
  EXPECT_EQ(Kill("c1", SIGKILL).code(), absl::StatusCode::kNotFound);  // "process already finished"
  EXPECT_EQ(Start("c1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Exec("c1", "e1", "{}").code(), absl::StatusCode::kFailedPrecondition);

  task::PauseRequest pause;
  pause.set_id("c1");
  EXPECT_EQ(service_->Pause(pause).status().code(), absl::StatusCode::kFailedPrecondition);  // exited
  pause.set_id("nope");
  EXPECT_EQ(service_->Pause(pause).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(service_->Update(task::UpdateTaskRequest()).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(service_->Checkpoint(task::CheckpointTaskRequest()).status().code(), absl::StatusCode::kUnimplemented);
  task::StatsRequest st;
  st.set_id("c1");
  EXPECT_EQ(service_->Stats(st).status().code(), absl::StatusCode::kNotFound);  // exited
  st.set_id("nope");
  EXPECT_EQ(service_->Stats(st).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TaskServiceTest, BadConfigJsonIsInvalidArgument) {
  std::string b = Bundle("c1");
  std::ofstream(b + "/config.json") << "{not json";
  task::CreateTaskRequest req;
  req.set_id("c1");
  req.set_bundle(b);
  absl::StatusOr<task::CreateTaskResponse> r = service_->Create(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_EQ(StateCode("c1"), absl::StatusCode::kNotFound);
  req.set_bundle("relative/bundle");
  EXPECT_EQ(service_->Create(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TaskServiceTest, ExecLifecycle) {
  ASSERT_TRUE(Create("c1").ok());
  ASSERT_TRUE(Start("c1").ok());
  ASSERT_TRUE(Exec("c1", "e1", R"({"args":["sh"],"cwd":"/"})").ok());
  EXPECT_EQ(Exec("c1", "e1", "{}").code(), absl::StatusCode::kAlreadyExists);
  task::StateResponse s = State("c1", "e1");
  EXPECT_EQ(s.status(), types::CREATED);
  EXPECT_EQ(s.exec_id(), "e1");
  EXPECT_EQ(s.id(), "e1");
  EXPECT_EQ(Kill("c1", 9, "e1").code(), absl::StatusCode::kFailedPrecondition);  // not started

  std::optional<absl::StatusOr<task::WaitResponse>> waited;
  task::WaitRequest wr;
  wr.set_id("c1");
  wr.set_exec_id("e1");
  service_->Wait(wr, [&](const absl::StatusOr<task::WaitResponse>& r) { waited = r; });

  absl::StatusOr<task::StartResponse> exec_started = Start("c1", "e1");
  ASSERT_TRUE(exec_started.ok());
  EXPECT_EQ(exec_started->pid(), 101u);
  EXPECT_EQ(State("c1", "e1").status(), types::RUNNING);
  EXPECT_EQ(State("c1", "e1").pid(), 101u);
  task::PidsRequest pr;
  pr.set_id("c1");
  EXPECT_EQ(service_->Pids(pr)->processes_size(), 2);
  EXPECT_EQ(Delete("c1", "e1").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Kill("c1", SIGTERM, "e1").ok());
  ASSERT_TRUE(waited.has_value() && waited->ok());
  EXPECT_EQ((*waited)->exit_status(), 143u);
  EXPECT_EQ(State("c1").status(), types::RUNNING);  // the init runs on
  absl::StatusOr<task::DeleteResponse> d = Delete("c1", "e1");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->exit_status(), 143u);
  EXPECT_EQ(StateCode("c1", "e1"), absl::StatusCode::kNotFound);

  EXPECT_EQ(Topics(5), (std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exec-added",
                                                 "/tasks/exec-started", "/tasks/exit"}));
  containerd::events::TaskExit te;
  ASSERT_TRUE(te.ParseFromString(EventAt(4).event().value()));
  EXPECT_EQ(te.id(), "e1");
  EXPECT_EQ(te.exit_status(), 143u);
  bool exec_seen = false;
  for (const std::string& c : fake_->calls) exec_seen |= c.rfind("exec c1 e1 ", 0) == 0 && c.find("\"sh\"") != std::string::npos;
  EXPECT_TRUE(exec_seen);
}

TEST_F(TaskServiceTest, PauseResume) {
  ASSERT_TRUE(Create("c1").ok());
  task::PauseRequest pause;
  pause.set_id("c1");
  task::ResumeRequest resume;
  resume.set_id("c1");
  EXPECT_EQ(service_->Pause(pause).status().code(), absl::StatusCode::kFailedPrecondition);  // not started
  ASSERT_TRUE(Start("c1").ok());
  EXPECT_EQ(service_->Resume(resume).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(service_->Pause(pause).ok());
  EXPECT_EQ(fake_->calls.back(), "signal c1  19 all");  // SIGSTOP to every process
  EXPECT_EQ(State("c1").status(), types::PAUSED);
  EXPECT_EQ(service_->Pause(pause).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(service_->Resume(resume).ok());
  EXPECT_EQ(fake_->calls.back(), "signal c1  18 all");  // SIGCONT
  EXPECT_EQ(State("c1").status(), types::RUNNING);
  EXPECT_EQ(Topics(4), (std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/paused", "/tasks/resumed"}));
  EXPECT_EQ(EventAt(2).event().type_url(), "containerd.events.TaskPaused");
}

TEST_F(TaskServiceTest, ExitDuringStartComesAfterTheStartEvent) {
  fake_->exit_during_start = true;
  ASSERT_TRUE(Create("c1").ok());
  ASSERT_TRUE(Start("c1").ok());
  EXPECT_EQ(State("c1").status(), types::STOPPED);
  EXPECT_EQ(State("c1").exit_status(), 3u);
  EXPECT_EQ(Topics(3), (std::vector<std::string>{"/tasks/create", "/tasks/start", "/tasks/exit"}));
}

TEST_F(TaskServiceTest, DeleteACreatedTaskKillsIt) {
  ASSERT_TRUE(Create("c1").ok());
  absl::StatusOr<task::DeleteResponse> d = Delete("c1");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->exit_status(), 137u);
  EXPECT_EQ(Topics(3), (std::vector<std::string>{"/tasks/create", "/tasks/exit", "/tasks/delete"}));
}

TEST_F(TaskServiceTest, PodGroupingOneSandbox) {
  nlohmann::json sandbox = {{"io.kubernetes.cri.container-type", "sandbox"}, {"io.kubernetes.cri.sandbox-id", "pod1"}};
  nlohmann::json app = {{"io.kubernetes.cri.container-type", "container"}, {"io.kubernetes.cri.sandbox-id", "pod1"}};
  nlohmann::json other = {{"io.kubernetes.cri.container-type", "container"}, {"io.kubernetes.cri.sandbox-id", "pod2"}};
  ASSERT_TRUE(Create("pod1", sandbox).ok());
  ASSERT_TRUE(Create("app", app).ok());
  EXPECT_EQ(fake_->sandboxes.size(), 1u);  // one VM for both
  EXPECT_EQ(fake_->sandboxes[0].id, "pod1");
  EXPECT_EQ(fake_->containers.size(), 2u);
  EXPECT_EQ(Create("stranger", other).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(service_->task_count(), 2u);

  // Shutdown only exits once the last task is gone.
  ASSERT_TRUE(Kill("app", SIGKILL).ok());
  ASSERT_TRUE(Delete("app").ok());
  ASSERT_TRUE(service_->Shutdown(task::ShutdownRequest()).ok());
  EXPECT_EQ(exit_requested_.load(), 0);
  ASSERT_TRUE(Delete("pod1").ok());
  ASSERT_TRUE(service_->Shutdown(task::ShutdownRequest()).ok());
  EXPECT_EQ(exit_requested_.load(), 1);
}

TEST_F(TaskServiceTest, AppContainerFirstNamesThePod) {
  nlohmann::json app = {{"io.kubernetes.cri.container-type", "container"}, {"io.kubernetes.cri.sandbox-id", "pod9"}};
  ASSERT_TRUE(Create("app", app).ok());
  ASSERT_EQ(fake_->sandboxes.size(), 1u);
  EXPECT_EQ(fake_->sandboxes[0].id, "pod9");
}

TEST_F(TaskServiceTest, NetworkNamespaceFromTheSpec) {
  task::CreateTaskRequest req;
  req.set_id("c1");
  req.set_bundle(Bundle("c1", nullptr, "/var/run/netns/cni-1234"));
  ASSERT_TRUE(service_->Create(req).ok());
  EXPECT_EQ(fake_->sandboxes.at(0).netns_path, "/var/run/netns/cni-1234");
}

TEST_F(TaskServiceTest, SandboxFailureLeavesNoTask) {
  fake_->factory_error = absl::DeadlineExceededError("the agent did not answer within 300 s");
  absl::StatusOr<task::CreateTaskResponse> r = Create("c1");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("create sandbox c1"), std::string::npos) << r.status();
  EXPECT_EQ(StateCode("c1"), absl::StatusCode::kNotFound);
  fake_->factory_error = absl::OkStatus();
  EXPECT_TRUE(Create("c1").ok());  // a retry boots it
}

TEST_F(TaskServiceTest, StdioFifoOpensWithoutAReaderAndDelivers) {
  std::string fifo = dir_ + "/stdout.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Nobody reads yet: the open must not block (containerd opens its end on its own schedule).
  ASSERT_TRUE(Create("c1", nullptr, fifo, /*terminal=*/true).ok());
  EXPECT_GE(fake_->stdout_fd_seen, 0);
  EXPECT_TRUE(fake_->terminal_seen);
  EXPECT_TRUE(State("c1").terminal());
  EXPECT_EQ(State("c1").stdout(), fifo);
  // What the sandbox wrote through its copy sits in the FIFO for containerd's reader.
  int r = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(r, 0);
  char buf[16] = {};
  EXPECT_EQ(::read(r, buf, sizeof(buf)), 6);
  EXPECT_EQ(std::string(buf, 6), "hello\n");
  ::close(r);
  nlohmann::json pod = {{"io.kubernetes.cri.container-type", "container"}, {"io.kubernetes.cri.sandbox-id", "c1"}};
  EXPECT_EQ(Create("c2", pod, "binary:///usr/bin/logger").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Create("c3", pod, "relative.fifo").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TaskServiceTest, VmDeathEndsEveryProcess) {
  ASSERT_TRUE(Create("c1").ok());
  ASSERT_TRUE(Start("c1").ok());
  fake_->Exit("c1", "", absl::UnavailableError("agent connection closed"));  // WatchExit only
  task::StateResponse s = State("c1");
  EXPECT_EQ(s.status(), types::STOPPED);
  EXPECT_EQ(s.exit_status(), 137u);
  EXPECT_EQ(Topics(3).back(), "/tasks/exit");
}

TEST_F(TaskServiceTest, PidsCloseIoResizeConnect) {
  ASSERT_TRUE(Create("c1", nullptr, "", /*terminal=*/false).ok());
  task::PidsRequest pr;
  pr.set_id("c1");
  absl::StatusOr<task::PidsResponse> pids = service_->Pids(pr);
  ASSERT_TRUE(pids.ok());
  ASSERT_EQ(pids->processes_size(), 1);
  EXPECT_EQ(pids->processes(0).pid(), 100u);

  task::CloseIORequest cr;
  cr.set_id("c1");
  cr.set_stdin(true);
  ASSERT_TRUE(service_->CloseIO(cr).ok());
  EXPECT_EQ(fake_->calls.back(), "closestdin c1 ");

  task::ResizePtyRequest rr;
  rr.set_id("c1");
  rr.set_width(80);
  rr.set_height(24);
  EXPECT_EQ(service_->ResizePty(rr).status().code(), absl::StatusCode::kFailedPrecondition);  // no terminal

  task::ConnectRequest conn;
  conn.set_id("c1");
  absl::StatusOr<task::ConnectResponse> c = service_->Connect(conn);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->shim_pid(), static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(c->task_pid(), 100u);
}

TEST_F(TaskServiceTest, ResizeWithATerminal) {
  ASSERT_TRUE(Create("c1", nullptr, "", /*terminal=*/true).ok());
  task::ResizePtyRequest rr;
  rr.set_id("c1");
  rr.set_width(132);
  rr.set_height(43);
  ASSERT_TRUE(service_->ResizePty(rr).ok());
  EXPECT_EQ(fake_->calls.back(), "resize c1  43x132");
}

TEST_F(TaskServiceTest, TeardownStopsTheSandboxAndFailsWaiters) {
  ASSERT_TRUE(Create("c1").ok());
  std::optional<absl::StatusOr<task::WaitResponse>> waited;
  task::WaitRequest wr;
  wr.set_id("c1");
  service_->Wait(wr, [&](const absl::StatusOr<task::WaitResponse>& r) { waited = r; });
  service_->Teardown();
  ASSERT_TRUE(waited.has_value());
  EXPECT_EQ(waited->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_->calls.back(), "stop");
  EXPECT_EQ(Create("c2").status().code(), absl::StatusCode::kUnavailable);
}

TEST(ForContainerdTest, Mapping) {
  EXPECT_TRUE(ForContainerd(absl::OkStatus(), "x").ok());
  absl::Status s = ForContainerd(absl::FailedPreconditionError("process c1 has already exited"), "kill task c1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("process already finished"), std::string::npos);
  s = ForContainerd(absl::FailedPreconditionError("no terminal"), "resize");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "resize: no terminal");
  EXPECT_EQ(ForContainerd(absl::InvalidArgumentError("x"), "y").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ForContainerd(absl::UnavailableError("x"), "y").code(), absl::StatusCode::kUnavailable);
}

TEST_F(TaskServiceTest, StatsAsCgroupV2Metrics) {
  ASSERT_TRUE(Create("c1").ok());
  task::StatsRequest st;
  st.set_id("c1");
  absl::StatusOr<task::StatsResponse> r = service_->Stats(st);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stats().type_url(), "io.containerd.cgroups.v2.Metrics");
  io::containerd::cgroups::v2::Metrics m;
  ASSERT_TRUE(m.ParseFromString(r->stats().value()));
  EXPECT_EQ(m.cpu().usage_usec(), 1234u);
  EXPECT_EQ(m.memory().usage(), 4096u);
  EXPECT_EQ(m.memory().usage_limit(), std::numeric_limits<uint64_t>::max());  // no limit = "max"
  EXPECT_EQ(m.pids().current(), 3u);
}

TEST(MetricsTest, FromAgent) {
  agent::v1::StatsContainerResponse s;
  s.mutable_memory()->set_limit_bytes(256 << 20);
  s.mutable_memory()->set_anon_bytes(10);
  s.mutable_memory()->set_oom_kill_events(2);
  s.mutable_pids()->set_limit(100);
  auto* io = s.add_io();
  io->set_dev_major(254);
  io->set_dev_minor(1);
  io->set_read_bytes(512);
  io->set_write_ios(7);
  io::containerd::cgroups::v2::Metrics m = MetricsFromAgent(s);
  EXPECT_EQ(m.memory().usage_limit(), 256u << 20);
  EXPECT_EQ(m.memory().anon(), 10u);
  EXPECT_EQ(m.memory_events().oom_kill(), 2u);
  EXPECT_EQ(m.pids().limit(), 100u);
  ASSERT_EQ(m.io().usage_size(), 1);
  EXPECT_EQ(m.io().usage(0).dev_major(), 254u);
  EXPECT_EQ(m.io().usage(0).rbytes(), 512u);
  EXPECT_EQ(m.io().usage(0).wios(), 7u);
}

TEST(RootPathTest, FromSpec) {
  EXPECT_EQ(*RootPathFromSpec(nlohmann::json::object(), "/b"), "/b/rootfs");
  EXPECT_EQ(*RootPathFromSpec({{"root", {{"path", "rootfs"}}}}, "/b"), "/b/rootfs");
  EXPECT_EQ(*RootPathFromSpec({{"root", {{"path", "/srv/busybox"}}}}, "/b"), "/srv/busybox");
  EXPECT_EQ(RootPathFromSpec({{"root", {{"path", 3}}}}, "/b").status().code(), absl::StatusCode::kInvalidArgument);
}

// `ctr run --rootfs DIR`: no mounts, root.path = DIR; the container runs on DIR itself.
TEST_F(TaskServiceTest, RootfsDirWithoutMounts) {
  std::string b = Bundle("c1");
  std::string own = dir_ + "/own-rootfs";
  std::filesystem::create_directories(own);
  nlohmann::json spec = sandbox::DefaultOciSpec({"/bin/true"});
  spec["root"]["path"] = own;
  std::ofstream(b + "/config.json") << spec.dump();
  task::CreateTaskRequest req;
  req.set_id("c1");
  req.set_bundle(b);
  ASSERT_TRUE(service_->Create(req).ok());
  EXPECT_EQ(fake_->containers["c1"].rootfs_dir, own);
}

TEST(NetnsPathTest, FromSpec) {
  EXPECT_EQ(*NetnsPathFromSpec(nlohmann::json::object()), "");
  nlohmann::json spec = {{"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "network"}}}}}}};
  EXPECT_EQ(*NetnsPathFromSpec(spec), "");  // a new, empty namespace: no pod network
  spec["linux"]["namespaces"][1]["path"] = "/proc/42/ns/net";
  EXPECT_EQ(*NetnsPathFromSpec(spec), "/proc/42/ns/net");
  spec["linux"]["namespaces"][1]["path"] = "netns";
  EXPECT_EQ(NetnsPathFromSpec(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

// The registered methods over a real ttrpc connection: codes cross the wire as containerd reads
// them, and many Waits block no thread.
TEST_F(TaskServiceTest, OverTtrpc) {
  std::string path = dir_ + "/shim.sock";
  ttrpc::IoThread io;
  ttrpc::Server server(io.io());
  boost::asio::thread_pool pool(4);
  ASSERT_TRUE(RegisterTaskService(server, pool, *service_).ok());
  ASSERT_TRUE(server.ListenUnix(path).ok());
  absl::StatusOr<std::shared_ptr<ttrpc::Client>> client = ttrpc::Client::ConnectUnix(io.io(), path);
  ASSERT_TRUE(client.ok());

  task::StateRequest sr;
  sr.set_id("nope");
  EXPECT_EQ(ttrpc::CallTyped<task::StateResponse>(**client, kTaskService, "State", sr).status().code(),
            absl::StatusCode::kNotFound);

  task::CreateTaskRequest cr;
  cr.set_id("c1");
  cr.set_bundle(Bundle("c1"));
  absl::StatusOr<task::CreateTaskResponse> created =
      ttrpc::CallTyped<task::CreateTaskResponse>(**client, kTaskService, "Create", cr);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(ttrpc::CallTyped<task::CreateTaskResponse>(**client, kTaskService, "Create", cr).status().code(),
            absl::StatusCode::kAlreadyExists);

  // 50 concurrent Waits on a 4-thread pool.
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  task::WaitRequest wr;
  wr.set_id("c1");
  for (int i = 0; i < 50; ++i) {
    ttrpc::StartTypedCall<task::WaitResponse>(**client, kTaskService, "Wait", wr, {},
                                              [&](absl::StatusOr<task::WaitResponse> r) {
                                                EXPECT_TRUE(r.ok()) << r.status();
                                                if (r.ok()) {
                                                  EXPECT_EQ(r->exit_status(), 137u);
                                                }
                                                std::lock_guard<std::mutex> lock(mu);
                                                ++done;
                                                cv.notify_all();
                                              });
  }
  task::StartRequest start;
  start.set_id("c1");
  ASSERT_TRUE(ttrpc::CallTyped<task::StartResponse>(**client, kTaskService, "Start", start).ok());
  task::KillRequest kill;
  kill.set_id("c1");
  kill.set_signal(SIGKILL);
  ASSERT_TRUE(ttrpc::CallTyped<google::protobuf::Empty>(**client, kTaskService, "Kill", kill).ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done == 50; }));
  }
  task::UpdateTaskRequest update;
  update.set_id("c1");
  EXPECT_EQ(ttrpc::CallTyped<google::protobuf::Empty>(**client, kTaskService, "Update", update).status().code(),
            absl::StatusCode::kUnimplemented);
  (*client)->Close();
  server.Shutdown();
  pool.join();
}

}  // namespace
}  // namespace vessel::shim
