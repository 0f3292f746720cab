// The sandbox SDK end to end: ONE sandbox VM booted in this test process (the real guest kernel
// and the default initramfs with the agent as /init), then every container check runs in it, in
// order; the last test stops the sandbox with a container still running and checks that nothing
// of it is left in this process. ~2-3 minutes on kvm_pvm, most of it the boot.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sandbox/host_mounts.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"

namespace vessel::sandbox {
namespace {

size_t CountEntries(const char* dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir);
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - (std::string(dir) == "/proc/self/fd" ? 1 : 0);  // opendir's own fd
}

// Reads a pipe to EOF on a thread.
class PipeReader {
 public:
  PipeReader() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) == 0) {
      read_fd_ = fds[0];
      write_fd_ = fds[1];
      thread_ = std::thread([this] {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(read_fd_, buf, sizeof(buf))) > 0) {
          std::lock_guard<std::mutex> lock(mu_);
          text_.append(buf, static_cast<size_t>(n));
        }
      });
    }
  }
  ~PipeReader() {
    CloseWriteEnd();
    if (thread_.joinable()) thread_.join();
    if (read_fd_ >= 0) ::close(read_fd_);
  }
  int fd() const { return write_fd_; }
  // The sandbox dup()s what it needs: close ours so EOF comes when the guest side closes.
  void CloseWriteEnd() {
    if (write_fd_ >= 0) ::close(write_fd_);
    write_fd_ = -1;
  }
  std::string Text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  // Waits until the text contains `needle` or `timeout` passes.
  bool WaitFor(const std::string& needle, std::chrono::seconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (absl::StrContains(Text(), needle)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::string Drain() {
    CloseWriteEnd();
    if (thread_.joinable()) thread_.join();
    return Text();
  }

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::string text_;
};

struct Exit {
  std::string container, exec;
  uint32_t status;
};

class SandboxE2e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access("/dev/kvm", R_OK | W_OK) != 0 || ::geteuid() != 0) {
      skip_reason_ = new std::string("needs /dev/kvm and root (mounts, namespaces)");
      return;
    }
    baseline_threads_ = CountEntries("/proc/self/task");
    baseline_fds_ = CountEntries("/proc/self/fd");
    char tmpl[] = "/tmp/vessel-sandbox-e2e-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      skip_reason_ = new std::string("mkdtemp failed");
      return;
    }
    dir_ = new std::string(tmpl);
    for (const char* r : {"r1", "r2"}) {
      std::string cmd = absl::StrCat("cp -a ", VESSEL_BUSYBOX_ROOTFS, " ", *dir_, "/", r);
      if (std::system(cmd.c_str()) != 0) {
        skip_reason_ = new std::string("cannot copy the busybox rootfs (run the build first)");
        return;
      }
    }
    exits_ = new std::vector<Exit>();
    exits_mu_ = new std::mutex();
    SandboxConfig config;
    config.id = "e2e";
    config.runtime.state_dir = *dir_ + "/state";
    config.shared_pid_namespace = true;
    config.dns = {"nameserver 10.0.0.53"};
    SandboxEvents events;
    events.on_exit = [](const std::string& c, const std::string& e, uint32_t s) {
      std::lock_guard<std::mutex> lock(*exits_mu_);
      exits_->push_back({c, e, s});
    };
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Sandbox>> sandbox = Sandbox::Create(config, events);
    if (!sandbox.ok()) {
      create_error_ = new std::string(std::string(sandbox.status().message()));
      return;
    }
    sandbox_ = sandbox->release();
    SandboxTimeline t = sandbox_->timeline();
    std::printf("# bench: platform=%s sandbox create %lld ms (vm setup %lld ms, agent ready %lld ms, "
                "sandbox ready %lld ms)\n",
                sandbox_->platform().c_str(),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - t0)
                                           .count()),
                static_cast<long long>(t.vm_setup.count() / 1000000),
                static_cast<long long>(t.agent_ready.count() / 1000000),
                static_cast<long long>(t.sandbox_ready.count() / 1000000));
  }

  static void TearDownTestSuite() {
    if (sandbox_ != nullptr) {
      (void)sandbox_->Stop();
      delete sandbox_;
      sandbox_ = nullptr;
    }
    if (dir_ != nullptr && !HasMountsUnder(*dir_)) std::filesystem::remove_all(*dir_);
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_EQ(create_error_, nullptr) << "Sandbox::Create failed: " << *create_error_;
    ASSERT_NE(sandbox_, nullptr) << "the sandbox is gone (an earlier test stopped it)";
  }

  static std::string Rootfs(const char* name) { return absl::StrCat(*dir_, "/", name); }

  // Creates, starts and waits for a container; returns {status, stdout, stderr}.
  std::tuple<uint32_t, std::string, std::string> RunContainer(const std::string& id,
                                                              nlohmann::json spec,
                                                              const std::string& stdin_text = "",
                                                              bool with_stdin = false) {
    PipeReader out, err;
    int in[2] = {-1, -1};
    if (with_stdin) {
      EXPECT_EQ(::pipe2(in, O_CLOEXEC), 0);
    }
    ContainerConfig cc;
    cc.id = id;
    cc.spec = std::move(spec);
    cc.rootfs_dir = Rootfs("r1");
    cc.stdio.stdout_fd = out.fd();
    cc.stdio.stderr_fd = err.fd();
    cc.stdio.stdin_fd = in[0];
    absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
    if (in[0] >= 0) ::close(in[0]);
    out.CloseWriteEnd();
    err.CloseWriteEnd();
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) {
      if (in[1] >= 0) ::close(in[1]);
      return {9999, "", ""};
    }
    if (with_stdin) {
      EXPECT_EQ(::write(in[1], stdin_text.data(), stdin_text.size()),
                static_cast<ssize_t>(stdin_text.size()));
      ::close(in[1]);
    }
    EXPECT_TRUE((*c)->Start().ok());
    absl::StatusOr<uint32_t> status = (*c)->Wait();
    EXPECT_TRUE(status.ok()) << status.status();
    std::string o = out.Drain(), e = err.Drain();
    EXPECT_TRUE(sandbox_->RemoveContainer(id).ok());
    return {status.ok() ? *status : 9999, o, e};
  }

  static inline Sandbox* sandbox_ = nullptr;
  static inline std::string* dir_ = nullptr;
  static inline std::string* skip_reason_ = nullptr;
  static inline std::string* create_error_ = nullptr;
  static inline std::vector<Exit>* exits_ = nullptr;
  static inline std::mutex* exits_mu_ = nullptr;
  static inline size_t baseline_threads_ = 0;
  static inline size_t baseline_fds_ = 0;
};

TEST_F(SandboxE2e, OutputAndExitCode) {
  auto [status, out, err] = RunContainer("exit3", DefaultOciSpec({"sh", "-c", "echo hi; echo oops >&2; exit 3"}));
  EXPECT_EQ(status, 3u);
  EXPECT_EQ(out, "hi\n");
  EXPECT_EQ(err, "oops\n");
  std::lock_guard<std::mutex> lock(*exits_mu_);
  bool seen = false;
  for (const Exit& e : *exits_) seen = seen || (e.container == "exit3" && e.exec.empty() && e.status == 3);
  EXPECT_TRUE(seen) << "no exit event for exit3";
}

TEST_F(SandboxE2e, StdinIsPipedThrough) {
  auto [status, out, err] =
      RunContainer("cat", DefaultOciSpec({"cat"}), "line one\nline two\n", /*with_stdin=*/true);
  EXPECT_EQ(status, 0u) << err;
  EXPECT_EQ(out, "line one\nline two\n");
}

TEST_F(SandboxE2e, EnvCwdAndDns) {
  auto [status, out, err] = RunContainer(
      "env", DefaultOciSpec({"sh", "-c",
                             "echo $FOO; pwd; id -u; echo x > /dev/null && test -c /dev/urandom && "
                             "test -L /dev/fd && echo devices-ok; cat /etc/resolv.conf"},
                            {"FOO=bar baz"}, "/tmp"));
  EXPECT_EQ(status, 0u) << err;
  EXPECT_EQ(out, "bar baz\n/tmp\n0\ndevices-ok\nnameserver 10.0.0.53\n");
}

TEST_F(SandboxE2e, TerminalWithSize) {
  PipeReader out;
  int in[2];
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  ContainerConfig cc;
  cc.id = "tty";
  cc.spec = DefaultOciSpec({"sh", "-c", "stty size; tty; read x; echo got-$x"}, {}, "/", true);
  cc.rootfs_dir = Rootfs("r1");
  cc.stdio.terminal = true;
  cc.stdio.stdin_fd = in[0];
  cc.stdio.stdout_fd = out.fd();
  absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
  ::close(in[0]);
  out.CloseWriteEnd();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->ResizeTty(33, 101).ok());
  ASSERT_TRUE((*c)->Start().ok());
  // tty(1) resolves the name through the container's own /dev/pts (ttyname).
  EXPECT_TRUE(out.WaitFor("/dev/pts/", std::chrono::seconds(60))) << out.Text();
  ASSERT_EQ(::write(in[1], "abc\n", 4), 4);
  absl::StatusOr<uint32_t> status = (*c)->Wait();
  ::close(in[1]);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, 0u);
  std::string text = out.Drain();
  EXPECT_TRUE(absl::StrContains(text, "33 101")) << text;
  EXPECT_TRUE(absl::StrContains(text, "got-abc")) << text;
  EXPECT_TRUE(sandbox_->RemoveContainer("tty").ok());
}

TEST_F(SandboxE2e, MissingCommandFailsFastAndLeavesNothing) {
  ContainerConfig cc;
  cc.id = "missing";
  cc.spec = DefaultOciSpec({"/no/such/program"});
  cc.rootfs_dir = Rootfs("r1");
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "/no/such/program")) << c.status();
  EXPECT_LT(took, std::chrono::seconds(30));
  EXPECT_EQ(sandbox_->GetContainer("missing"), nullptr);
  EXPECT_FALSE(std::filesystem::exists(sandbox_->dir() + "/shared/missing"));
  EXPECT_FALSE(HasMountsUnder(sandbox_->dir() + "/shared/missing"));
}

TEST_F(SandboxE2e, InvalidSpecIsRejected) {
  ContainerConfig cc;
  cc.id = "bad";
  cc.spec = DefaultOciSpec({"true"});
  cc.spec["process"]["cwd"] = "relative/dir";
  cc.rootfs_dir = Rootfs("r1");
  absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "process.cwd")) << c.status();
}

TEST_F(SandboxE2e, TwoContainersShareThePidNamespaceNotTheFilesystem) {
  PipeReader out1;
  ContainerConfig c1;
  c1.id = "c1";
  c1.spec = DefaultOciSpec({"sh", "-c", "touch /tmp/only-c1; echo ready; exec sleep 600"});
  c1.spec["linux"]["resources"]["memory"]["limit"] = 64 << 20;
  c1.rootfs_dir = Rootfs("r1");
  c1.stdio.stdout_fd = out1.fd();
  absl::StatusOr<Container*> first = sandbox_->CreateContainer(std::move(c1));
  out1.CloseWriteEnd();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*first)->Start().ok());
  ASSERT_TRUE(out1.WaitFor("ready", std::chrono::seconds(60))) << out1.Text();

  // c2 (its own rootfs copy): sees c1's sleep through the shared PID namespace, not its /tmp file.
  PipeReader out2;
  ContainerConfig c2;
  c2.id = "c2";
  c2.spec = DefaultOciSpec(
      {"sh", "-c", "ps -o args; test -e /tmp/only-c1 && echo SEEN || echo NOT-SEEN"});
  c2.rootfs_dir = Rootfs("r2");
  c2.stdio.stdout_fd = out2.fd();
  absl::StatusOr<Container*> second = sandbox_->CreateContainer(std::move(c2));
  out2.CloseWriteEnd();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->Start().ok());
  absl::StatusOr<uint32_t> s2 = (*second)->Wait();
  ASSERT_TRUE(s2.ok());
  std::string text2 = out2.Drain();
  EXPECT_TRUE(absl::StrContains(text2, "sleep 600")) << text2;
  EXPECT_TRUE(absl::StrContains(text2, "NOT-SEEN")) << text2;
  EXPECT_TRUE(sandbox_->RemoveContainer("c2").ok());

  // exec into c1: its filesystem, its cgroup limit.
  PipeReader exec_out;
  ExecConfig exec;
  exec.exec_id = "e1";
  exec.process = DefaultOciSpec({"sh", "-c", "test -e /tmp/only-c1 && echo exec-sees-file; exit 7"})["process"];
  exec.stdio.stdout_fd = exec_out.fd();
  ASSERT_TRUE((*first)->Exec(std::move(exec)).ok());
  exec_out.CloseWriteEnd();
  absl::StatusOr<uint32_t> es = (*first)->Wait("e1");
  ASSERT_TRUE(es.ok()) << es.status();
  EXPECT_EQ(*es, 7u);
  EXPECT_EQ(exec_out.Drain(), "exec-sees-file\n");

  absl::StatusOr<agent::v1::StatsContainerResponse> stats = (*first)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->memory().usage_bytes(), 0u);
  EXPECT_EQ(stats->memory().limit_bytes(), 64u << 20);

  // SIGTERM ends the sleep: 128 + 15.
  ASSERT_TRUE((*first)->Signal(SIGTERM).ok());
  absl::StatusOr<uint32_t> s1 = (*first)->Wait();
  ASSERT_TRUE(s1.ok());
  EXPECT_EQ(*s1, 143u);
  EXPECT_TRUE(sandbox_->RemoveContainer("c1").ok());
  EXPECT_FALSE(HasMountsUnder(sandbox_->dir() + "/shared/c1"));
}

TEST_F(SandboxE2e, SigkillIs137AndAsyncWaitPosts) {
  ContainerConfig cc;
  cc.id = "killme";
  cc.spec = DefaultOciSpec({"sleep", "600"});
  cc.rootfs_dir = Rootfs("r1");
  absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  boost::asio::io_context io;
  std::optional<absl::StatusOr<uint32_t>> async_result;
  (*c)->AsyncWait("", io.get_executor(), [&](absl::StatusOr<uint32_t> r) { async_result = r; });
  ASSERT_TRUE((*c)->Signal(SIGKILL, "", /*all=*/true).ok());
  absl::StatusOr<uint32_t> s = (*c)->Wait();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, 137u);
  io.run();
  ASSERT_TRUE(async_result.has_value());
  ASSERT_TRUE(async_result->ok());
  EXPECT_EQ(**async_result, 137u);
  EXPECT_TRUE(sandbox_->RemoveContainer("killme").ok());
}

// Last: Stop with a container running, then nothing of the sandbox remains in this process.
TEST_F(SandboxE2e, ZzStopWhileRunningLeavesNothing) {
  ContainerConfig cc;
  cc.id = "running";
  cc.spec = DefaultOciSpec({"sleep", "600"});
  cc.rootfs_dir = Rootfs("r1");
  absl::StatusOr<Container*> c = sandbox_->CreateContainer(std::move(cc));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Start().ok());
  std::string dir = sandbox_->dir();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(sandbox_->Stop(std::chrono::seconds(20)).ok());
  std::printf("# bench: Stop with a running container took %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count()));
  delete sandbox_;
  sandbox_ = nullptr;
  EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
  EXPECT_FALSE(HasMountsUnder(*dir_ + "/state"));
  EXPECT_EQ(CountEntries("/proc/self/task"), baseline_threads_);
  EXPECT_EQ(CountEntries("/proc/self/fd"), baseline_fds_);
}

}  // namespace
}  // namespace vessel::sandbox
