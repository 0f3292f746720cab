// vessel-agent in host mode, end to end through our ttrpc client: a child agent process serving
// on a Unix socket, guest paths under a scratch --root holding a busybox-static rootfs, stdio
// connected to Unix listeners in --stdio-dir. Needs root (namespaces, mounts, cgroups).
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/empty.pb.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Empty;
using ::testing::HasSubstr;

constexpr char kService[] = "vessel.agent.v1.Agent";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int CountFds(pid_t pid) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(absl::StrCat("/proc/", pid, "/fd")))
    ++n;
  return n;
}

// Accepts one connection on <dir>/<port> and collects what arrives until EOF.
class StdioListener {
 public:
  StdioListener(const std::string& dir, uint32_t port) {
    absl::StatusOr<ScopedFd> fd = ttrpc::ListenUnix(absl::StrCat(dir, "/", port));
    EXPECT_TRUE(fd.ok()) << fd.status();
    if (!fd.ok()) return;
    listener_ = std::move(*fd);
    thread_ = std::thread([this] {
      int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        conn_.reset(c);
      }
      char buf[4096];
      for (;;) {
        ssize_t n = ::read(c, buf, sizeof(buf));
        if (n <= 0) break;
        std::lock_guard<std::mutex> lock(mu_);
        data_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  ~StdioListener() {
    ::shutdown(listener_.get(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  // Everything up to EOF (the process and every copy of the socket are gone).
  std::string Wait() {
    if (thread_.joinable()) thread_.join();
    return data_;
  }
  void Write(const std::string& s) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (conn_.valid()) {
          ASSERT_EQ(::write(conn_.get(), s.data(), s.size()), static_cast<ssize_t>(s.size()));
          return;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "no stdio connection";
  }

 private:
  ScopedFd listener_;
  std::mutex mu_;
  ScopedFd conn_;
  std::string data_;
  std::thread thread_;
};

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the agent needs root (namespaces, mounts, cgroups)";
    char tmpl[] = "/tmp/vessel-agent-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/root";
    stdio_dir_ = dir_ + "/stdio";
    fs::create_directories(root_ + "/rootfs/bin");
    fs::create_directories(root_ + "/rootfs/proc");
    fs::create_directories(root_ + "/rootfs/tmp");
    fs::create_directories(stdio_dir_);
    fs::copy_file(VESSEL_BUSYBOX_PATH, root_ + "/rootfs/bin/busybox");
    for (const char* tool :
         {"sh", "echo", "cat", "sleep", "hostname", "id", "stty", "test", "ls", "kill", "true"}) {
      fs::create_symlink("busybox", root_ + "/rootfs/bin/" + tool);
    }
    mounts_before_ = CountMountsUnder(dir_);

    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (!netns_path_.empty()) {
        int ns = ::open(netns_path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(126);
      }
      std::string listen = "unix:" + dir_ + "/agent.sock";
      ::execl(VESSEL_AGENT_PATH, VESSEL_AGENT_PATH, "--listen", listen.c_str(), "--root",
              root_.c_str(), "--stdio-dir", stdio_dir_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    agent_pid_ = pid;
    for (int i = 0; i < 500; ++i) {
      absl::StatusOr<std::shared_ptr<ttrpc::Client>> client =
          ttrpc::Client::ConnectUnix(io_.io(), dir_ + "/agent.sock");
      if (client.ok()) {
        client_ = *client;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(client_, nullptr) << "the agent did not start serving";
    if (!create_sandbox_) return;
    v1::CreateSandboxRequest sandbox;
    sandbox.set_sandbox_id("sb");
    sandbox.set_hostname("sandbox-host");
    ASSERT_TRUE(Call<Empty>("CreateSandbox", sandbox).ok());
  }

  void TearDown() override {
    if (agent_pid_ > 0) {
      client_.reset();
      ::kill(agent_pid_, SIGTERM);
      int status = 0;
      ::waitpid(agent_pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "agent status " << status;
      EXPECT_EQ(CountMountsUnder(dir_), mounts_before_) << "mounts left under " << dir_;
      std::string cg = CgroupDir();
      if (!cg.empty()) {
        EXPECT_FALSE(fs::exists(cg)) << cg << " was not removed";
      }
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  static int CountMountsUnder(const std::string& prefix) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      if (line.find(" " + prefix) != std::string::npos) ++n;
    }
    return n;
  }

  // The agent's default host-mode sandbox cgroup, if it has one.
  std::string CgroupDir() const {
    for (const char* base : {"/sys/fs/cgroup/", "/sys/fs/cgroup/unified/"}) {
      std::string path = absl::StrCat(base, "vessel-agent-test-", agent_pid_);
      if (fs::exists(path) || fs::exists(std::string(base) + "cgroup.procs")) return path;
    }
    return "";
  }

  template <typename Resp, typename Req>
  absl::StatusOr<Resp> Call(const char* method, const Req& req) {
    ttrpc::CallOptions options;
    options.timeout = absl::Seconds(20);
    return ttrpc::CallTyped<Resp>(*client_, kService, method, req, options);
  }

  v1::CreateContainerRequest Spec(const std::string& id, std::vector<std::string> args,
                                  uint32_t stdout_port = 0) {
    v1::CreateContainerRequest req;
    req.set_container_id(id);
    req.set_rootfs("/rootfs");
    for (v1::NamespaceType t : {v1::NAMESPACE_TYPE_MOUNT, v1::NAMESPACE_TYPE_PID,
                                v1::NAMESPACE_TYPE_UTS, v1::NAMESPACE_TYPE_IPC}) {
      req.add_namespaces()->set_type(t);
    }
    v1::Mount* proc = req.add_mounts();
    proc->set_destination("/proc");
    proc->set_type("proc");
    v1::Mount* tmp = req.add_mounts();
    tmp->set_destination("/tmp");
    tmp->set_type("tmpfs");
    tmp->add_options("size=1m");
    for (std::string& a : args) req.mutable_process()->add_args(std::move(a));
    req.mutable_process()->add_env("PATH=/bin");
    req.mutable_process()->set_cwd("/");
    req.mutable_stdio()->set_stdout_port(stdout_port);
    req.mutable_stdio()->set_stderr_port(stdout_port == 0 ? 0 : stdout_port + 1);
    return req;
  }

  absl::StatusOr<uint32_t> Wait(const std::string& id, const std::string& exec_id = "") {
    v1::WaitProcessRequest req;
    req.set_container_id(id);
    req.set_exec_id(exec_id);
    absl::StatusOr<v1::WaitProcessResponse> resp =
        Call<v1::WaitProcessResponse>("WaitProcess", req);
    if (!resp.ok()) return resp.status();
    EXPECT_GT(resp->exited_at().seconds(), 0);
    return resp->exit_status();
  }

  absl::Status Start(const std::string& id) {
    v1::StartContainerRequest req;
    req.set_container_id(id);
    return Call<Empty>("StartContainer", req).status();
  }

  absl::Status Remove(const std::string& id) {
    v1::RemoveContainerRequest req;
    req.set_container_id(id);
    return Call<Empty>("RemoveContainer", req).status();
  }

  absl::Status Signal(const std::string& id, int sig, bool all = false) {
    v1::SignalProcessRequest req;
    req.set_container_id(id);
    req.set_signal(sig);
    req.set_all(all);
    return Call<Empty>("SignalProcess", req).status();
  }

  // create -> start -> wait -> remove; returns the exit status and the stdout.
  std::pair<uint32_t, std::string> RunToExit(const v1::CreateContainerRequest& spec,
                                             uint32_t port) {
    StdioListener out(stdio_dir_, port), err(stdio_dir_, port + 1);
    absl::StatusOr<v1::CreateContainerResponse> created =
        Call<v1::CreateContainerResponse>("CreateContainer", spec);
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) return {~0u, ""};
    EXPECT_GT(created->pid(), 0u);
    EXPECT_TRUE(Start(spec.container_id()).ok());
    std::string output = out.Wait();
    absl::StatusOr<uint32_t> status = Wait(spec.container_id());
    EXPECT_TRUE(status.ok()) << status.status();
    EXPECT_TRUE(Remove(spec.container_id()).ok());
    return {status.value_or(~0u), output};
  }

  ttrpc::IoThread io_;
  std::shared_ptr<ttrpc::Client> client_;
  // Set before SetUp: the agent runs in this network namespace; the test calls CreateSandbox.
  std::string netns_path_;
  bool create_sandbox_ = true;
  std::string dir_, root_, stdio_dir_;
  pid_t agent_pid_ = -1;
  int mounts_before_ = 0;
};

TEST_F(AgentTest, VersionAndHealth) {
  absl::StatusOr<v1::VersionResponse> version =
      Call<v1::VersionResponse>("Version", v1::VersionRequest());
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->protocol_version(), static_cast<uint32_t>(v1::PROTOCOL_VERSION_CURRENT));
  EXPECT_FALSE(version->agent_version().empty());
  absl::StatusOr<v1::HealthResponse> health =
      Call<v1::HealthResponse>("Health", v1::HealthRequest());
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status(), v1::HealthResponse::SERVING_STATUS_SERVING);
  // The agent's own resident set: more than its binary's first pages, far less than 64 MiB.
  EXPECT_GT(health->agent_rss_bytes(), 100u * 1024);
  EXPECT_LT(health->agent_rss_bytes(), 64u << 20);
  v1::CreateSandboxRequest again;
  again.set_sandbox_id("sb");
  EXPECT_EQ(Call<Empty>("CreateSandbox", again).status().code(), absl::StatusCode::kAlreadyExists);
}

// Host mode: the bytes go into the host's pool uncredited (entropy_count 0), then RNDRESEEDCRNG.
TEST_F(AgentTest, ReseedRandomDev) {
  v1::ReseedRandomDevRequest req;
  absl::StatusOr<v1::ReseedRandomDevResponse> empty =
      Call<v1::ReseedRandomDevResponse>("ReseedRandomDev", req);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty"));
  std::string random(4097, '\0');
  {
    std::ifstream urandom("/dev/urandom", std::ios::binary);
    ASSERT_TRUE(urandom.read(random.data(), static_cast<std::streamsize>(random.size())));
  }
  req.set_data(random);
  absl::StatusOr<v1::ReseedRandomDevResponse> too_big =
      Call<v1::ReseedRandomDevResponse>("ReseedRandomDev", req);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("4097 bytes: at most 4096"));
  for (size_t size : {size_t{4096}, size_t{1}}) {
    req.set_data(random.substr(0, size));
    absl::StatusOr<v1::ReseedRandomDevResponse> resp =
        Call<v1::ReseedRandomDevResponse>("ReseedRandomDev", req);
    ASSERT_TRUE(resp.ok()) << resp.status();
    EXPECT_EQ(resp->entropy_bits_credited(), 0u) << "host mode never credits the host's pool";
    EXPECT_TRUE(resp->crng_reseeded()) << "the host's CRNG is initialized";
    EXPECT_GT(resp->entropy_avail_after(), 0u);
    EXPECT_GE(resp->entropy_avail_after(), resp->entropy_avail_before());
  }
}

// Host mode: validated, then not applied: the host's clock stays where it is.
TEST_F(AgentTest, SetGuestDateTimeValidatesAndLeavesTheHostClock) {
  auto set = [&](int64_t sec, int64_t usec) {
    v1::SetGuestDateTimeRequest req;
    req.set_sec(sec);
    req.set_usec(usec);
    return Call<Empty>("SetGuestDateTime", req).status();
  };
  for (auto [sec, usec, what] : std::vector<std::tuple<int64_t, int64_t, const char*>>{
           {-1, 0, "sec is -1"},
           {8277292036, 0, "sec is 8277292036: must be 0..8277292035"},
           {0, 1000000, "usec is 1000000: must be 0..999999"},
           {0, -1, "usec is -1"}}) {
    absl::Status status = set(sec, usec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << sec << "." << usec;
    EXPECT_THAT(status.message(), HasSubstr(what));
  }
  const int64_t before = static_cast<int64_t>(::time(nullptr));
  EXPECT_TRUE(set(before + 1000000, 999999).ok());
  EXPECT_TRUE(set(8277292035, 0).ok());
  EXPECT_TRUE(set(0, 0).ok());
  const int64_t after = static_cast<int64_t>(::time(nullptr));
  EXPECT_GE(after, before);
  EXPECT_LT(after - before, 10) << "the host's clock moved";
}

TEST_F(AgentTest, LifecycleStdoutAndExitCodes) {
  auto [status, out] = RunToExit(Spec("c1", {"echo", "hello from the container"}, 100), 100);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "hello from the container\n");

  auto [status3, out3] = RunToExit(Spec("c2", {"sh", "-c", "echo out; exit 3"}, 110), 110);
  EXPECT_EQ(status3, 3u);
  EXPECT_EQ(out3, "out\n");

  // The container's own hostname, pid 1 in its pid namespace, the sandbox hostname by default.
  auto [status0, ns] = RunToExit(Spec("c3", {"sh", "-c", "echo $$; hostname"}, 120), 120);
  EXPECT_EQ(status0, 0u);
  EXPECT_EQ(ns, "1\nsandbox-host\n");
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_STRNE(host, "sandbox-host") << "host mode must not change the host's hostname";
}

TEST_F(AgentTest, ExitBeforeWaitIsKept) {
  StdioListener out(stdio_dir_, 200), err(stdio_dir_, 201);
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("c", {"sh", "-c", "exit 7"}, 200))
          .ok());
  ASSERT_TRUE(Start("c").ok());
  out.Wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // reaped long before the wait
  EXPECT_EQ(Wait("c").value_or(0), 7u);
  EXPECT_EQ(Wait("c").value_or(0), 7u);  // and again
  EXPECT_EQ(Start("c").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Remove("c").ok());
  EXPECT_EQ(Wait("c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Wait("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Start("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Remove("a/b").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AgentTest, KilledBySignalIs128PlusSignal) {
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("k", {"sleep", "100"})).ok());
  ASSERT_TRUE(Start("k").ok());
  EXPECT_EQ(Remove("k").code(), absl::StatusCode::kFailedPrecondition);  // still running
  // A waiter parked before the exit gets it too.
  std::thread waiter([this] { EXPECT_EQ(Wait("k").value_or(0), 137u); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(Signal("k", SIGKILL).ok());
  waiter.join();
  EXPECT_EQ(Wait("k").value_or(0), 137u);
  EXPECT_EQ(Signal("k", SIGKILL).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Signal("k", 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Remove("k").ok());
}

TEST_F(AgentTest, ExecIntoRunningContainer) {
  v1::CreateContainerRequest spec = Spec("e", {"sleep", "100"});
  spec.set_hostname("exec-host");
  ASSERT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", spec).ok());
  v1::ExecProcessRequest exec;
  exec.set_container_id("e");
  exec.set_exec_id("x1");
  exec.mutable_process()->add_args("sh");
  exec.mutable_process()->add_args("-c");
  exec.mutable_process()->add_args("hostname; cat /proc/1/cmdline; echo; exit 5");
  exec.mutable_process()->add_env("PATH=/bin");
  exec.mutable_stdio()->set_stdout_port(300);
  EXPECT_EQ(Call<v1::ExecProcessResponse>("ExecProcess", exec).status().code(),
            absl::StatusCode::kFailedPrecondition);  // not started yet
  ASSERT_TRUE(Start("e").ok());
  {
    StdioListener out(stdio_dir_, 300);
    absl::StatusOr<v1::ExecProcessResponse> resp =
        Call<v1::ExecProcessResponse>("ExecProcess", exec);
    ASSERT_TRUE(resp.ok()) << resp.status();
    EXPECT_GT(resp->pid(), 0u);
    EXPECT_EQ(out.Wait(), std::string("exec-host\nsleep\0"
                                      "100\0\n",
                                      21));
    EXPECT_EQ(Wait("e", "x1").value_or(0), 5u);
  }
  EXPECT_EQ(Call<v1::ExecProcessResponse>("ExecProcess", exec).status().code(),
            absl::StatusCode::kAlreadyExists);
  exec.set_exec_id("x2");
  exec.mutable_process()->set_args(0, "/bin/missing");
  exec.mutable_stdio()->set_stdout_port(0);
  absl::StatusOr<v1::ExecProcessResponse> missing =
      Call<v1::ExecProcessResponse>("ExecProcess", exec);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("/bin/missing"));
  // SIGTERM to all: the exec'ed sleep and the init go.
  exec.set_exec_id("x3");
  exec.mutable_process()->set_args(0, "sleep");
  exec.mutable_process()->set_args(1, "100");
  exec.mutable_process()->mutable_args()->RemoveLast();
  ASSERT_TRUE(Call<v1::ExecProcessResponse>("ExecProcess", exec).ok());
  EXPECT_EQ(Signal("e", SIGKILL, true).code(), absl::StatusCode::kOk);
  EXPECT_EQ(Wait("e").value_or(0), 137u);
  EXPECT_EQ(Wait("e", "x3").value_or(0), 137u);
  EXPECT_TRUE(Remove("e").ok());
}

TEST_F(AgentTest, CloseStdinGivesEof) {
  v1::CreateContainerRequest spec = Spec("in", {"cat"}, 400);
  spec.mutable_stdio()->set_stdin_port(402);
  StdioListener in(stdio_dir_, 402), out(stdio_dir_, 400), err(stdio_dir_, 401);
  ASSERT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", spec).ok());
  ASSERT_TRUE(Start("in").ok());
  in.Write("through stdin\n");
  v1::CloseStdinRequest close;
  close.set_container_id("in");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(Call<Empty>("CloseStdin", close).ok());
  EXPECT_EQ(out.Wait(), "through stdin\n");
  EXPECT_EQ(Wait("in").value_or(1), 0u);
  EXPECT_TRUE(Remove("in").ok());
}

TEST_F(AgentTest, Terminal) {
  v1::CreateContainerRequest spec = Spec("t", {"sh", "-c", "test -t 0 && echo isatty; stty size"});
  spec.mutable_process()->set_terminal(true);
  spec.mutable_stdio()->set_terminal_port(500);
  StdioListener term(stdio_dir_, 500);
  ASSERT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", spec).ok());
  v1::ResizeTtyRequest resize;
  resize.set_container_id("t");
  resize.set_width(123);
  resize.set_height(45);
  ASSERT_TRUE(Call<Empty>("ResizeTty", resize).ok());
  ASSERT_TRUE(Start("t").ok());
  EXPECT_EQ(Wait("t").value_or(1), 0u);
  EXPECT_EQ(term.Wait(), "isatty\r\n45 123\r\n");
  EXPECT_TRUE(Remove("t").ok());
  resize.set_container_id("t");
  EXPECT_EQ(Call<Empty>("ResizeTty", resize).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AgentTest, CgroupPerContainer) {
  std::string cg = CgroupDir();
  if (cg.empty() || !fs::exists(cg)) GTEST_SKIP() << "no cgroup2 hierarchy on this host";
  absl::StatusOr<v1::CreateContainerResponse> created =
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("g", {"sleep", "100"}));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_THAT(ReadFile(cg + "/g/cgroup.procs"), HasSubstr(absl::StrCat(created->pid(), "\n")));
  ASSERT_TRUE(Start("g").ok());
  v1::StatsContainerRequest stats_req;
  stats_req.set_container_id("g");
  EXPECT_TRUE(Call<v1::StatsContainerResponse>("StatsContainer", stats_req).ok());
  ASSERT_TRUE(Signal("g", SIGKILL, true).ok());
  EXPECT_EQ(Wait("g").value_or(0), 137u);
  EXPECT_TRUE(Remove("g").ok());
  EXPECT_FALSE(fs::exists(cg + "/g"));

  // memory.max, seen from inside through a cgroup namespace and a cgroup2 mount.
  bool has_memory = absl::StrContains(ReadFile(cg + "/cgroup.subtree_control"), "memory");
  v1::CreateContainerRequest spec = Spec("m", {"cat", "/sys/fs/cgroup/memory.max"}, 600);
  spec.mutable_resources()->set_memory_limit(64 << 20);
  spec.add_namespaces()->set_type(v1::NAMESPACE_TYPE_CGROUP);
  v1::Mount* m = spec.add_mounts();
  m->set_destination("/sys/fs/cgroup");
  m->set_type("cgroup2");
  if (!has_memory) {
    absl::StatusOr<v1::CreateContainerResponse> r =
        Call<v1::CreateContainerResponse>("CreateContainer", spec);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(r.status().message(), HasSubstr("memory"));
    EXPECT_FALSE(fs::exists(cg + "/m"));
    GTEST_SKIP() << "the memory controller is not available to " << cg << " (cgroup v1 host)";
  }
  auto [status, out] = RunToExit(spec, 600);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "67108864\n");

  // An OOM kill: the process dies of SIGKILL and GetOOMEvent names the container.
  auto oom = std::make_shared<std::promise<absl::StatusOr<v1::OOMEvent>>>();
  std::future<absl::StatusOr<v1::OOMEvent>> oom_event = oom->get_future();
  ttrpc::StartTypedCall<v1::OOMEvent>(
      *client_, kService, "GetOOMEvent", v1::GetOOMEventRequest(), {},
      [oom](absl::StatusOr<v1::OOMEvent> e) { oom->set_value(std::move(e)); });
  v1::CreateContainerRequest hog =
      Spec("o", {"sh", "-c", "s=aaaaaaaaaaaaaaaa; while true; do s=$s$s; done"});
  hog.mutable_resources()->set_memory_limit(16 << 20);
  ASSERT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", hog).ok());
  ASSERT_TRUE(Start("o").ok());
  EXPECT_EQ(Wait("o").value_or(0), 137u);
  ASSERT_EQ(oom_event.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  absl::StatusOr<v1::OOMEvent> event = oom_event.get();
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->container_id(), "o");
  v1::StatsContainerRequest stats_o;
  stats_o.set_container_id("o");
  absl::StatusOr<v1::StatsContainerResponse> stats =
      Call<v1::StatsContainerResponse>("StatsContainer", stats_o);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->memory().limit_bytes(), 16u << 20);
  EXPECT_GE(stats->memory().oom_kill_events(), 1u);
  EXPECT_TRUE(Remove("o").ok());
}

TEST_F(AgentTest, MissingBinaryAndBadCwdFailCreate) {
  absl::StatusOr<v1::CreateContainerResponse> r =
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("m1", {"/bin/no-such-program"}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("/bin/no-such-program"));
  r = Call<v1::CreateContainerResponse>("CreateContainer", Spec("m1", {"no-such-program"}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("'no-such-program' not found in $PATH"));
  v1::CreateContainerRequest cwd = Spec("m1", {"true"});
  cwd.mutable_process()->set_cwd("/no/such/dir");
  r = Call<v1::CreateContainerResponse>("CreateContainer", cwd);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("cwd '/no/such/dir'"));
  // Nothing left behind: the id is free again.
  auto [status, out] = RunToExit(Spec("m1", {"echo", "ok"}, 700), 700);
  EXPECT_EQ(out, "ok\n");
}

TEST_F(AgentTest, InvalidSpecs) {
  auto expect_invalid = [this](v1::CreateContainerRequest spec, const std::string& needle) {
    absl::StatusOr<v1::CreateContainerResponse> r =
        Call<v1::CreateContainerResponse>("CreateContainer", spec);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << needle << ": " << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(needle));
  };
  expect_invalid(Spec("bad", {}), "args are empty");
  expect_invalid(Spec("../x", {"true"}), "container_id");
  v1::CreateContainerRequest s = Spec("bad", {"true"});
  s.mutable_mounts(0)->set_type("nfs");
  expect_invalid(s, "mount type 'nfs'");
  s = Spec("bad", {"true"});
  s.mutable_mounts(0)->set_destination("/a/../../etc");
  expect_invalid(s, "'..'");
  s = Spec("bad", {"true"});
  s.clear_namespaces();
  expect_invalid(s, "mount namespace");
  s = Spec("bad", {"true"});
  s.mutable_process()->mutable_capabilities()->add_bounding("CAP_MAKE_COFFEE");
  expect_invalid(s, "CAP_MAKE_COFFEE");
  s = Spec("bad", {"true"});
  s.mutable_process()->add_rlimits()->set_type("RLIMIT_WISHES");
  expect_invalid(s, "RLIMIT_WISHES");
  s = Spec("bad", {"true"});
  s.mutable_process()->set_cwd("relative");
  expect_invalid(s, "cwd 'relative'");
  s = Spec("bad", {"true"});
  s.add_namespaces()->set_type(v1::NAMESPACE_TYPE_USER);
  expect_invalid(s, "user namespaces");
  s = Spec("bad", {"true"});
  s.set_rootfs("/missing");
  expect_invalid(s, "rootfs /missing");
  s = Spec("bad", {"true"});
  s.add_storages()->set_driver("floppy");
  s.mutable_storages(0)->set_mount_point("/mnt");
  expect_invalid(s, "storage driver 'floppy'");
  v1::CreateContainerRequest no_uts = Spec("bad", {"true"});
  no_uts.clear_namespaces();
  no_uts.add_namespaces()->set_type(v1::NAMESPACE_TYPE_MOUNT);
  no_uts.set_hostname("h");
  expect_invalid(no_uts, "UTS");
}

TEST_F(AgentTest, StoragesAndReadonlyRootfs) {
  fs::create_directories(root_ + "/data");
  std::ofstream(root_ + "/data/file") << "from a bind storage\n";
  v1::CreateContainerRequest spec =
      Spec("s", {"sh", "-c", "cat /data/file; touch /x 2>/dev/null || echo ro"}, 800);
  v1::Storage* st = spec.add_storages();
  st->set_driver("bind");
  st->set_source("/data");
  st->set_mount_point("/storage/data");
  v1::Mount* m = spec.add_mounts();
  m->set_destination("/data");
  m->set_type("bind");
  m->set_source("/storage/data");
  m->add_options("rbind");
  m->add_options("ro");
  spec.set_rootfs_readonly(true);
  auto [status, out] = RunToExit(spec, 800);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "from a bind storage\nro\n");
}

TEST_F(AgentTest, TwentyContainersLeaveNothingBehind) {
  int fds_before = CountFds(agent_pid_);
  int mounts_before = CountMountsUnder(dir_);
  for (int i = 0; i < 20; ++i) {
    uint32_t port = 1000 + 2 * i;
    auto [status, out] =
        RunToExit(Spec(absl::StrCat("n", i), {"sh", "-c", absl::StrCat("echo ", i)}, port), port);
    ASSERT_EQ(status, 0u);
    ASSERT_EQ(out, absl::StrCat(i, "\n"));
  }
  EXPECT_EQ(CountFds(agent_pid_), fds_before);
  EXPECT_EQ(CountMountsUnder(dir_), mounts_before);
  std::string cg = CgroupDir();
  if (!cg.empty() && fs::exists(cg)) {
    int children = 0;
    for (const auto& e : fs::directory_iterator(cg)) children += e.is_directory() ? 1 : 0;
    EXPECT_EQ(children, 0);
  }
}

TEST_F(AgentTest, SharedSandboxPidNamespace) {
  ASSERT_TRUE(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).ok());
  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("shared");
  sandbox.set_sandbox_pidns(true);
  ASSERT_TRUE(Call<Empty>("CreateSandbox", sandbox).ok());
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("a", {"sleep", "100"})).ok());
  ASSERT_TRUE(Start("a").ok());
  // The second container sees the first one's process, and is not pid 1 itself.
  auto [status, out] = RunToExit(
      Spec("b", {"sh", "-c", "echo $$; cat /proc/*/cmdline | grep -c 'sleep100'"}, 900), 900);
  EXPECT_EQ(status, 0u);
  EXPECT_THAT(out, ::testing::MatchesRegex("[0-9]+\n1\n"));
  EXPECT_NE(out.substr(0, 2), "1\n");
  ASSERT_TRUE(Signal("a", SIGKILL).ok());
  EXPECT_EQ(Wait("a").value_or(0), 137u);
  EXPECT_TRUE(Remove("a").ok());
}

// What Sandbox::Stop does with a container still running: a WaitProcess in flight, a shared PID
// namespace, then DestroySandbox answers promptly and the waiter gets the exit.
TEST_F(AgentTest, DestroySandboxWithRunningContainerAndWaiter) {
  ASSERT_TRUE(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).ok());
  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("stopme");
  sandbox.set_sandbox_pidns(true);
  ASSERT_TRUE(Call<Empty>("CreateSandbox", sandbox).ok());
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("run", {"sleep", "600"})).ok());
  ASSERT_TRUE(Start("run").ok());
  absl::StatusOr<uint32_t> waited;
  std::thread waiter([&] { waited = Wait("run"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
  waiter.join();
  EXPECT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ(waited.value_or(0), 137u);
}

TEST_F(AgentTest, DestroySandboxKillsAndUnmounts) {
  fs::create_directories(root_ + "/data");
  ASSERT_TRUE(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).ok());
  EXPECT_EQ(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::CreateContainerRequest spec = Spec("x", {"true"});
  EXPECT_EQ(Call<v1::CreateContainerResponse>("CreateContainer", spec).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("again");
  v1::Storage* st = sandbox.add_storages();
  st->set_driver("tmpfs");
  st->set_mount_point("/shared");
  st->add_options("size=1m");
  ASSERT_TRUE(Call<Empty>("CreateSandbox", sandbox).ok());
  EXPECT_EQ(CountMountsUnder(root_ + "/shared"), 1);
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("r", {"sleep", "100"})).ok());
  ASSERT_TRUE(Start("r").ok());
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("c", {"sleep", "100"})).ok());
  ASSERT_TRUE(Call<Empty>("DestroySandbox", v1::DestroySandboxRequest()).ok());
  EXPECT_EQ(CountMountsUnder(root_ + "/shared"), 0);
  EXPECT_EQ(Wait("r").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AgentTest, ExecWithTerminal) {
  ASSERT_TRUE(
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("et", {"sleep", "100"})).ok());
  ASSERT_TRUE(Start("et").ok());
  v1::ExecProcessRequest exec;
  exec.set_container_id("et");
  exec.set_exec_id("sh");
  exec.mutable_process()->add_args("sh");
  exec.mutable_process()->add_env("PATH=/bin");
  exec.mutable_process()->set_terminal(true);
  exec.mutable_stdio()->set_terminal_port(950);
  StdioListener term(stdio_dir_, 950);
  ASSERT_TRUE(Call<v1::ExecProcessResponse>("ExecProcess", exec).ok());
  term.Write("echo $((6*7)); exit 4\n");
  EXPECT_EQ(Wait("et", "sh").value_or(0), 4u);
  EXPECT_THAT(term.Wait(), HasSubstr("42\r\n"));
  EXPECT_TRUE(Signal("et", SIGKILL).ok());
  EXPECT_EQ(Wait("et").value_or(0), 137u);
  EXPECT_TRUE(Remove("et").ok());
}

TEST_F(AgentTest, ShutdownCancelsOomPollAndKillsContainers) {
  auto oom = std::make_shared<std::promise<absl::StatusOr<v1::OOMEvent>>>();
  std::future<absl::StatusOr<v1::OOMEvent>> oom_event = oom->get_future();
  ttrpc::StartTypedCall<v1::OOMEvent>(
      *client_, kService, "GetOOMEvent", v1::GetOOMEventRequest(), {},
      [oom](absl::StatusOr<v1::OOMEvent> e) { oom->set_value(std::move(e)); });
  absl::StatusOr<v1::CreateContainerResponse> c =
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("z", {"sleep", "100"}));
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(Start("z").ok());
  ASSERT_EQ(::kill(agent_pid_, SIGTERM), 0);
  ASSERT_EQ(oom_event.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(oom_event.get().status().code(), absl::StatusCode::kCancelled);
  int status = 0;
  ASSERT_EQ(::waitpid(agent_pid_, &status, 0), agent_pid_);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  agent_pid_ = -1;
  EXPECT_NE(::kill(static_cast<pid_t>(c->pid()), 0), 0) << "the container outlived the agent";
  EXPECT_EQ(CountMountsUnder(dir_), mounts_before_);
}

TEST_F(AgentTest, UserRlimitsCapabilitiesNoNewPrivs) {
  v1::CreateContainerRequest spec =
      Spec("u",
           {"sh", "-c",
            "id; ulimit -n; grep -E '^(NoNewPrivs|CapEff|CapBnd|CapAmb)' /proc/self/status; echo "
            "$X; pwd"},
           1100);
  v1::Process* p = spec.mutable_process();
  p->mutable_user()->set_uid(1000);
  p->mutable_user()->set_gid(1001);
  p->mutable_user()->add_additional_gids(10);
  p->mutable_user()->add_additional_gids(20);
  v1::Rlimit* nofile = p->add_rlimits();
  nofile->set_type("RLIMIT_NOFILE");
  nofile->set_soft(123);
  nofile->set_hard(456);
  for (auto* set : {p->mutable_capabilities()->mutable_bounding(),
                    p->mutable_capabilities()->mutable_effective(),
                    p->mutable_capabilities()->mutable_permitted(),
                    p->mutable_capabilities()->mutable_inheritable(),
                    p->mutable_capabilities()->mutable_ambient()}) {
    set->Add("CAP_KILL");
  }
  p->set_no_new_privileges(true);
  p->add_env("X=from-env");
  p->set_cwd("/tmp");
  auto [status, out] = RunToExit(spec, 1100);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out,
            "uid=1000 gid=1001 groups=10,20\n123\n"
            "CapEff:\t0000000000000020\nCapBnd:\t0000000000000020\nCapAmb:\t0000000000000020\n"
            "NoNewPrivs:\t1\n"
            "from-env\n/tmp\n");
}

TEST_F(AgentTest, SymlinksInTheImageStayInTheRootfs) {
  fs::create_directories(dir_ + "/outside");
  fs::create_symlink("../../../../../../../../../.." + dir_ + "/outside", root_ + "/rootfs/rel");
  fs::create_symlink(dir_ + "/outside", root_ + "/rootfs/abs");
  for (const char* link : {"/rel", "/abs"}) {
    v1::CreateContainerRequest spec = Spec("l", {"true"});
    v1::Mount* m = spec.add_mounts();
    m->set_destination(std::string(link) + "/sub");
    m->set_type("tmpfs");
    absl::StatusOr<v1::CreateContainerResponse> r =
        Call<v1::CreateContainerResponse>("CreateContainer", spec);
    EXPECT_FALSE(r.ok()) << link;
    EXPECT_THAT(r.status().message(), HasSubstr(std::string("mkdir ") + link + "/sub")) << link;
    EXPECT_FALSE(fs::exists(dir_ + "/outside/sub"))
        << "a mount point was created outside the rootfs";
  }
  // A symlink that stays inside is followed, within the rootfs.
  fs::create_directories(root_ + "/rootfs/real");
  fs::create_symlink("/real", root_ + "/rootfs/inside");
  v1::CreateContainerRequest spec =
      Spec("l", {"sh", "-c", "grep -c ' /real/sub ' /proc/self/mountinfo"}, 1200);
  v1::Mount* m = spec.add_mounts();
  m->set_destination("/inside/sub");
  m->set_type("tmpfs");
  auto [status, out] = RunToExit(spec, 1200);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "1\n");
}

TEST_F(AgentTest, CreatedInitHoldsOnlyItsOwnFds) {
  absl::StatusOr<v1::CreateContainerResponse> c =
      Call<v1::CreateContainerResponse>("CreateContainer", Spec("f", {"sleep", "100"}));
  ASSERT_TRUE(c.ok());
  // stdin, stdout, stderr, the error pipe and the start pipe: none of the agent's sockets.
  EXPECT_EQ(CountFds(static_cast<pid_t>(c->pid())), 5);
  EXPECT_TRUE(Remove("f").ok());  // a created container can be removed (its init is killed)
}

TEST_F(AgentTest, CpuAndPidsLimits) {
  std::string cg = CgroupDir();
  if (cg.empty() || !fs::exists(cg)) GTEST_SKIP() << "no cgroup2 hierarchy on this host";
  std::string controllers = ReadFile(cg + "/cgroup.subtree_control");
  v1::CreateContainerRequest spec = Spec("l", {"sleep", "100"});
  v1::LinuxResources* r = spec.mutable_resources();
  r->set_cpu_quota(50000);
  r->set_cpu_period(100000);
  r->set_cpu_shares(1024);
  r->set_pids_limit(42);
  absl::StatusOr<v1::CreateContainerResponse> c =
      Call<v1::CreateContainerResponse>("CreateContainer", spec);
  if (!absl::StrContains(controllers, "cpu") || !absl::StrContains(controllers, "pids")) {
    EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(c.status().message(), HasSubstr("controller is not available"));
    EXPECT_FALSE(fs::exists(cg + "/l"));
    GTEST_SKIP() << "cpu/pids controllers not available to " << cg << " (cgroup v1 host)";
  }
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ReadFile(cg + "/l/cpu.max"), "50000 100000\n");
  EXPECT_EQ(ReadFile(cg + "/l/cpu.weight"), "39\n");  // runc: 1 + (1024 - 2) * 9999 / 262142
  EXPECT_EQ(ReadFile(cg + "/l/pids.max"), "42\n");
  v1::StatsContainerRequest stats_req;
  stats_req.set_container_id("l");
  absl::StatusOr<v1::StatsContainerResponse> stats =
      Call<v1::StatsContainerResponse>("StatsContainer", stats_req);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pids().limit(), 42u);
  EXPECT_EQ(stats->pids().current(), 1u);
  EXPECT_TRUE(Remove("l").ok());
}

TEST_F(AgentTest, ConcurrentContainers) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 3; ++i) {
        uint32_t port = 2000 + 10 * t + 2 * i;
        std::string id = absl::StrCat("p", t, "-", i);
        auto [status, out] =
            RunToExit(Spec(id, {"sh", "-c", absl::StrCat("echo ", id, "; exit ", t)}, port), port);
        EXPECT_EQ(status, static_cast<uint32_t>(t));
        EXPECT_EQ(out, id + "\n");
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

// ---- seccomp ----

v1::LinuxSeccomp DenyMkdir(const char* action = "SCMP_ACT_ERRNO") {
  v1::LinuxSeccomp seccomp;
  seccomp.set_default_action("SCMP_ACT_ALLOW");
  seccomp.add_architectures("SCMP_ARCH_X86_64");
  seccomp.add_architectures("SCMP_ARCH_X86");
  v1::LinuxSyscall* deny = seccomp.add_syscalls();
  // An unknown name is skipped (runc does the same), the others still apply.
  for (const char* name : {"mkdir", "mkdirat", "no_such_syscall_in_any_kernel"})
    deny->add_names(name);
  deny->set_action(action);
  return seccomp;
}

TEST_F(AgentTest, SeccompDeniesMkdirInInitAndExecs) {
  // With no_new_privileges the filter goes in last, right before execve.
  v1::CreateContainerRequest spec =
      Spec("s", {"sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?; test -d /tmp/x || echo no dir"}, 1300);
  *spec.mutable_seccomp() = DenyMkdir();
  spec.mutable_process()->set_no_new_privileges(true);
  auto [status, out] = RunToExit(spec, 1300);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "mkdir: can't create directory '/tmp/x': Operation not permitted\nrc=1\nno dir\n");

  // Without no_new_privileges it goes in before the privileges are dropped; a chosen errno; an
  // exec'd process inherits the container's filter.
  v1::CreateContainerRequest running = Spec("s2", {"sleep", "100"});
  *running.mutable_seccomp() = DenyMkdir();
  running.mutable_seccomp()->mutable_syscalls(0)->set_errno_ret(ENOSPC);
  ASSERT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", running).ok());
  ASSERT_TRUE(Start("s2").ok());
  StdioListener out2(stdio_dir_, 1310), err2(stdio_dir_, 1311);
  v1::ExecProcessRequest exec;
  exec.set_container_id("s2");
  exec.set_exec_id("e");
  for (const char* a : {"sh", "-c", "mkdir /tmp/y 2>&1; echo rc=$?; echo still runs"})
    exec.mutable_process()->add_args(a);
  exec.mutable_process()->add_env("PATH=/bin");
  exec.mutable_stdio()->set_stdout_port(1310);
  exec.mutable_stdio()->set_stderr_port(1311);
  ASSERT_TRUE(Call<v1::ExecProcessResponse>("ExecProcess", exec).ok());
  EXPECT_EQ(out2.Wait(),
            "mkdir: can't create directory '/tmp/y': No space left on device\nrc=1\nstill runs\n");
  EXPECT_EQ(Wait("s2", "e").value_or(~0u), 0u);
  EXPECT_TRUE(Signal("s2", SIGKILL).ok());
  EXPECT_EQ(Wait("s2").value_or(0), 137u);
  EXPECT_TRUE(Remove("s2").ok());
}

TEST_F(AgentTest, SeccompKillProcessAction) {
  v1::CreateContainerRequest spec = Spec("k", {"sh", "-c", "echo before; exec mkdir /tmp/z"}, 1320);
  *spec.mutable_seccomp() = DenyMkdir("SCMP_ACT_KILL_PROCESS");
  spec.mutable_process()->set_no_new_privileges(true);
  auto [status, out] = RunToExit(spec, 1320);
  EXPECT_EQ(status, 128u + SIGSYS);
  EXPECT_EQ(out, "before\n");
}

TEST_F(AgentTest, SeccompArgumentConditions) {
  // kill(2) is denied for signal 0 and SIGCONT (two conditions on one argument: either), other
  // signals pass. ash's kill is a builtin: the shell itself makes the call.
  v1::CreateContainerRequest spec =
      Spec("a",
           {"sh", "-c",
            "kill -0 $$ 2>/dev/null; echo zero=$?; kill -s CONT $$ 2>/dev/null; echo cont=$?; "
            "kill -s WINCH $$; echo winch=$?"},
           1330);
  v1::LinuxSeccomp* seccomp = spec.mutable_seccomp();
  seccomp->set_default_action("SCMP_ACT_ALLOW");
  v1::LinuxSyscall* rule = seccomp->add_syscalls();
  rule->add_names("kill");
  rule->set_action("SCMP_ACT_ERRNO");
  for (uint64_t sig : {uint64_t{0}, uint64_t{SIGCONT}}) {
    v1::LinuxSeccompArg* arg = rule->add_args();
    arg->set_index(1);
    arg->set_value(sig);
    arg->set_op("SCMP_CMP_EQ");
  }
  spec.mutable_process()->set_no_new_privileges(true);
  auto [status, out] = RunToExit(spec, 1330);
  EXPECT_EQ(status, 0u);
  EXPECT_EQ(out, "zero=1\ncont=1\nwinch=0\n");
}

TEST_F(AgentTest, InvalidSeccompIsRejectedAtOnce) {
  struct Case {
    std::function<void(v1::LinuxSeccomp&)> edit;
    const char* message;
  };
  std::vector<Case> cases = {
      {[](v1::LinuxSeccomp& s) { s.mutable_syscalls(0)->set_action("SCMP_ACT_BOGUS"); },
       "syscalls[0]: unknown action 'SCMP_ACT_BOGUS'"},
      {[](v1::LinuxSeccomp& s) { s.set_default_action("ALLOW"); },
       "default_action: unknown action 'ALLOW'"},
      {[](v1::LinuxSeccomp& s) { s.clear_default_action(); }, "default_action is empty"},
      {[](v1::LinuxSeccomp& s) { s.add_architectures("SCMP_ARCH_VAX"); },
       "unknown architecture 'SCMP_ARCH_VAX'"},
      {[](v1::LinuxSeccomp& s) { s.add_flags("SECCOMP_FILTER_FLAG_BOGUS"); },
       "unknown flag 'SECCOMP_FILTER_FLAG_BOGUS'"},
      {[](v1::LinuxSeccomp& s) {
         v1::LinuxSeccompArg* a = s.mutable_syscalls(0)->add_args();
         a->set_index(6);
         a->set_op("SCMP_CMP_EQ");
       },
       "argument index 6 is over 5"},
      {[](v1::LinuxSeccomp& s) { s.mutable_syscalls(0)->add_args()->set_op("SCMP_CMP_ALMOST"); },
       "unknown argument operator 'SCMP_CMP_ALMOST'"},
      {[](v1::LinuxSeccomp& s) { s.mutable_syscalls(0)->set_errno_ret(100000); },
       "errno_ret 100000 is over 4095"},
  };
  for (const Case& c : cases) {
    v1::CreateContainerRequest spec = Spec("bad", {"true"});
    *spec.mutable_seccomp() = DenyMkdir();
    c.edit(*spec.mutable_seccomp());
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<v1::CreateContainerResponse> r =
        Call<v1::CreateContainerResponse>("CreateContainer", spec);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
  // Nothing was left behind: the same id works.
  v1::CreateContainerRequest ok = Spec("bad", {"true"});
  *ok.mutable_seccomp() = DenyMkdir();
  EXPECT_TRUE(Call<v1::CreateContainerResponse>("CreateContainer", ok).ok());
  EXPECT_TRUE(Remove("bad").ok());
}

// ---- network and DNS ----

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  EXPECT_EQ(status, 0) << cmd << ": " << out;
  return out;
}

// The agent runs in a scratch network namespace holding one end of a veth pair with a known MAC.
class AgentNetworkTest : public AgentTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    netns_ = absl::StrCat("vessel-agent-net-", ::getpid());
    Shell("ip netns add " + netns_);
    Shell("ip -n " + netns_ + " link add v0 address " + kMac + " type veth peer name peer0");
    Shell("ip -n " + netns_ + " link set peer0 up");
    netns_path_ = "/var/run/netns/" + netns_;
    create_sandbox_ = false;
    AgentTest::SetUp();
  }
  void TearDown() override {
    AgentTest::TearDown();
    if (!netns_.empty()) Shell("ip netns del " + netns_);
  }
  nlohmann::json IpJson(const std::string& args) {
    std::string out = Shell("ip -n " + netns_ + " -j " + args);
    return nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  }

  static constexpr char kMac[] = "02:00:00:aa:bb:cc";
  std::string netns_;
};

// A sandbox restored from a network template: the NIC still has the template's MAC; the agent
// finds it by device_mac and gives it the pod's.
TEST_F(AgentNetworkTest, DeviceMacFindsTheNicAndGivesItThePodsMac) {
  v1::CreateSandboxRequest req;
  req.set_sandbox_id("net-restored");
  v1::Interface* eth = req.add_interfaces();
  eth->set_name("eth0");
  eth->set_mac("02:42:0a:00:04:02");
  eth->set_device_mac("02:00:00:00:00:77");  // no device has it
  absl::Status status = Call<Empty>("CreateSandbox", req).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("02:00:00:00:00:77"));
  eth->set_device_mac("02:00:00:zz:00:77");
  EXPECT_EQ(Call<Empty>("CreateSandbox", req).status().code(), absl::StatusCode::kInvalidArgument);
  eth->set_device_mac(kMac);
  v1::IPAddress* addr = eth->add_addresses();
  addr->set_address("10.0.4.2");
  addr->set_prefix_length(24);
  status = Call<Empty>("CreateSandbox", req).status();
  ASSERT_TRUE(status.ok()) << status;
  nlohmann::json links = IpJson("addr show dev eth0");
  ASSERT_TRUE(links.is_array() && links.size() == 1) << links.dump();
  EXPECT_EQ(links[0].value("address", ""), "02:42:0a:00:04:02");
  auto flags = links[0].value("flags", std::vector<std::string>{});
  EXPECT_NE(std::find(flags.begin(), flags.end(), "UP"), flags.end()) << links.dump();
}

TEST_F(AgentNetworkTest, InterfacesRoutesAndDns) {
  v1::CreateSandboxRequest req;
  req.set_sandbox_id("net");
  // A MAC no device has: NotFound naming it, and nothing applied.
  v1::Interface* missing = req.add_interfaces();
  missing->set_name("eth9");
  missing->set_mac("02:00:00:00:00:99");
  absl::Status status = Call<Empty>("CreateSandbox", req).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("02:00:00:00:00:99"));
  // Malformed input: InvalidArgument before anything changes.
  missing->set_mac("02:00:00:00:00");
  EXPECT_EQ(Call<Empty>("CreateSandbox", req).status().code(), absl::StatusCode::kInvalidArgument);
  req.clear_interfaces();
  req.add_routes()->set_destination("10.0.0.0/33");
  status = Call<Empty>("CreateSandbox", req).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("route 10.0.0.0/33"));
  req.clear_routes();

  for (const char* line :
       {"nameserver 10.96.0.10", "search default.svc.cluster.local", "options ndots:5"})
    req.add_dns(line);
  v1::Interface* eth = req.add_interfaces();
  eth->set_name("eth7");
  eth->set_mac("02:00:00:AA:BB:CC");  // matched case-insensitively
  eth->set_mtu(1400);
  v1::IPAddress* addr = eth->add_addresses();
  addr->set_address("10.88.0.5");
  addr->set_prefix_length(16);
  v1::Route* def = req.add_routes();
  def->set_gateway("10.88.0.1");
  def->set_device("eth7");
  v1::Route* svc = req.add_routes();
  svc->set_destination("10.96.0.0/12");
  svc->set_device("eth7");
  svc->set_scope(253);  // RT_SCOPE_LINK
  svc->set_source("10.88.0.5");
  status = Call<Empty>("CreateSandbox", req).status();
  ASSERT_TRUE(status.ok()) << status;

  EXPECT_EQ(ReadFile(root_ + "/etc/resolv.conf"),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n");
  nlohmann::json links = IpJson("addr show");
  ASSERT_TRUE(links.is_array()) << links.dump();
  bool saw_eth = false, saw_lo = false;
  for (const auto& link : links) {
    std::string name = link.value("ifname", "");
    auto flags = link.value("flags", std::vector<std::string>{});
    bool up = std::find(flags.begin(), flags.end(), "UP") != flags.end();
    if (name == "lo") {
      saw_lo = true;
      EXPECT_TRUE(up) << "lo is not up";
    }
    if (name == "eth7") {
      saw_eth = true;
      EXPECT_EQ(link.value("address", ""), kMac);
      EXPECT_EQ(link.value("mtu", 0), 1400);
      EXPECT_TRUE(up) << link.dump();
      bool has_addr = false;
      for (const auto& a : link.value("addr_info", nlohmann::json::array())) {
        if (a.value("local", "") == "10.88.0.5" && a.value("prefixlen", 0) == 16) has_addr = true;
      }
      EXPECT_TRUE(has_addr) << link.dump();
    }
    EXPECT_NE(name, "v0") << "the interface was not renamed";
  }
  EXPECT_TRUE(saw_eth && saw_lo) << links.dump();

  nlohmann::json routes = IpJson("route show");
  ASSERT_TRUE(routes.is_array()) << routes.dump();
  bool saw_default = false, saw_svc = false;
  for (const auto& r : routes) {
    if (r.value("dst", "") == "default") {
      saw_default = true;
      EXPECT_EQ(r.value("gateway", ""), "10.88.0.1");
      EXPECT_EQ(r.value("dev", ""), "eth7");
    }
    if (r.value("dst", "") == "10.96.0.0/12") {
      saw_svc = true;
      EXPECT_EQ(r.value("dev", ""), "eth7");
      EXPECT_EQ(r.value("scope", ""), "link");
      EXPECT_EQ(r.value("prefsrc", ""), "10.88.0.5");
    }
  }
  EXPECT_TRUE(saw_default && saw_svc) << routes.dump();
  // The host's /etc/resolv.conf is never touched in host mode: the file is under --root only.
  EXPECT_THAT(ReadFile("/etc/resolv.conf"), ::testing::Not(HasSubstr("default.svc.cluster.local")));
}

}  // namespace
}  // namespace vessel::agent
