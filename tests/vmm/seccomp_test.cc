// vmm/seccomp: a forbidden syscall on a filtered thread kills the whole process with SIGSYS
// (proved in forked children), allowed ones work, only the calling thread is filtered, and a
// Machine puts the filters on exactly its own threads when MachineConfig::seccomp is on.
#include "vmm/seccomp/seccomp.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/tiny_guest.h"
#include "vmm/machine.h"

namespace vessel {
namespace {

using seccomp::ThreadKind;
using ::testing::Contains;
using ::testing::Not;

// Runs `body` on a thread of a forked child after installing `kind`'s filter on that thread only;
// the child exits 0 when `body` returns. Returns the child's wait status.
int RunFilteredInChild(ThreadKind kind, const std::function<void()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    std::atomic<pid_t> tid{0};
    std::atomic<bool> checked{false};
    std::thread t([&] {
      if (!seccomp::InstallFilter(kind).ok()) _exit(3);
      // The main thread reads this thread's Seccomp: line (opening /proc is not allowed here).
      tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
      while (!checked.load()) sched_yield();
      body();
    });
    while (tid.load() == 0) sched_yield();
    std::ifstream status(absl::StrCat("/proc/self/task/", tid.load(), "/status"));
    bool filtered = false;
    for (std::string line; std::getline(status, line);) filtered |= line == "Seccomp:\t2";
    if (!filtered) _exit(4);
    checked.store(true);
    t.join();
    // The child's main thread stays unfiltered.
    _exit(seccomp::CurrentThreadMode() == 0 ? 0 : 5);
  }
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

bool KilledBySigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }
bool ExitedZero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

TEST(SeccompTest, SupportedOnThisHost) { EXPECT_TRUE(seccomp::CheckSupported().ok()); }

TEST(SeccompTest, InetSocketFromTheVsockThreadKillsTheProcess) {
  int status = RunFilteredInChild(ThreadKind::kVsock, [] { syscall(SYS_socket, AF_INET, SOCK_STREAM, 0); });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
}

TEST(SeccompTest, UnixSocketFromTheVsockThreadIsAllowed) {
  int status = RunFilteredInChild(ThreadKind::kVsock, [] {
    long fd = syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) _exit(6);
    close(static_cast<int>(fd));
  });
  EXPECT_TRUE(ExitedZero(status)) << status;
}

TEST(SeccompTest, ExecveFromTheFsThreadKillsTheProcess) {
  int status = RunFilteredInChild(ThreadKind::kFs, [] {
    const char* argv[] = {"/bin/true", nullptr};
    syscall(SYS_execve, "/bin/true", argv, environ);
  });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
}

TEST(SeccompTest, FsThreadMayOpenFilesUnderItsDirectory) {
  int status = RunFilteredInChild(ThreadKind::kFs, [] {
    int dir = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) _exit(6);
    struct stat st;
    if (fstatat(dir, "", &st, AT_EMPTY_PATH) != 0) _exit(7);
    close(dir);
  });
  EXPECT_TRUE(ExitedZero(status)) << status;
}

TEST(SeccompTest, OpeningAFileFromTheBlockNetAndEventLoopThreadsKillsTheProcess) {
  for (ThreadKind kind : {ThreadKind::kBlock, ThreadKind::kNet, ThreadKind::kEventLoop, ThreadKind::kVcpu}) {
    int status = RunFilteredInChild(kind, [] { syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY); });
    EXPECT_TRUE(KilledBySigsys(status)) << seccomp::ThreadKindName(kind) << " " << status;
  }
}

TEST(SeccompTest, ThreadCreationFromAFilteredThreadKillsTheProcess) {
  int status = RunFilteredInChild(ThreadKind::kNet, [] { std::thread([] {}).join(); });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
}

TEST(SeccompTest, ExecutableMappingsKillTheProcess) {
  int status = RunFilteredInChild(ThreadKind::kVcpu, [] {
    syscall(SYS_mmap, nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
  // Plain allocations are fine.
  status = RunFilteredInChild(ThreadKind::kVcpu, [] {
    void* p = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) _exit(6);
    munmap(p, 1 << 20);
    std::string big(10 << 20, 'x');  // malloc -> mmap
    (void)!write(STDERR_FILENO, big.data(), 0);
  });
  EXPECT_TRUE(ExitedZero(status)) << status;
}

TEST(SeccompTest, VcpuIoctlsAreLimitedToKvmRequests) {
  // TIOCSTI (push bytes into a terminal's input) is not a KVM request: killed.
  int status = RunFilteredInChild(ThreadKind::kVcpu, [] {
    char c = 'x';
    syscall(SYS_ioctl, 0, TIOCSTI, &c);
  });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
}

TEST(SeccompTest, SignalsOnlyToThisProcess) {
  int status = RunFilteredInChild(ThreadKind::kVcpu, [] {
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), 0);  // signal 0 to itself: allowed
  });
  EXPECT_TRUE(ExitedZero(status)) << status;
  status = RunFilteredInChild(ThreadKind::kVcpu, [] { syscall(SYS_tgkill, 1, 1, 0); });
  EXPECT_TRUE(KilledBySigsys(status)) << status;
}

TEST(SeccompTest, LogOnlyModeLetsForbiddenCallsThrough) {
  // VESSEL_SECCOMP_LOG_ONLY=1 (debugging, deriving lists): the kernel logs what would have been
  // killed and the call runs.
  pid_t pid = fork();
  if (pid == 0) {
    setenv("VESSEL_SECCOMP_LOG_ONLY", "1", 1);
    int status = RunFilteredInChild(ThreadKind::kNet, [] {
      long fd = syscall(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) _exit(6);
      close(static_cast<int>(fd));
    });
    _exit(ExitedZero(status) ? 0 : 7);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(ExitedZero(status)) << status;
}

TEST(SeccompTest, ThreadFiltersAreCapturedOnlyInsideTheScope) {
  EXPECT_FALSE(seccomp::ForNewThread(ThreadKind::kBlock).enabled());
  {
    seccomp::ScopedThreadFilters on(true);
    EXPECT_TRUE(seccomp::ForNewThread(ThreadKind::kBlock).enabled());
    {
      seccomp::ScopedThreadFilters off(false);
      EXPECT_FALSE(seccomp::ForNewThread(ThreadKind::kBlock).enabled());
    }
    EXPECT_TRUE(seccomp::ForNewThread(ThreadKind::kBlock).enabled());
  }
  EXPECT_FALSE(seccomp::ForNewThread(ThreadKind::kBlock).enabled());
  seccomp::ThreadFilter().Install();  // nothing captured: a no-op
  EXPECT_EQ(seccomp::CurrentThreadMode(), 0);
}

TEST(SeccompTest, ListsAreSmallAndNeverHoldProcessOrExecCalls) {
  for (ThreadKind kind : seccomp::kAllThreadKinds) {
    std::vector<std::string> names = seccomp::AllowedSyscalls(kind);
    EXPECT_LT(names.size(), 70u) << seccomp::ThreadKindName(kind);
    for (const char* forbidden : {"execve", "execveat", "clone", "clone3", "fork", "vfork", "ptrace",
                                  "setns", "unshare", "mount", "bpf", "process_vm_writev", "kill"}) {
      EXPECT_THAT(names, Not(Contains(forbidden))) << seccomp::ThreadKindName(kind);
    }
  }
  EXPECT_THAT(seccomp::AllowedSyscalls(ThreadKind::kVcpu), Not(Contains("openat")));
  EXPECT_THAT(seccomp::AllowedSyscalls(ThreadKind::kFs), Contains("openat2"));
}

// The Seccomp: mode of each of this process's threads, by thread name.
std::multimap<std::string, int> ThreadModes() {
  std::multimap<std::string, int> modes;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return modes;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = absl::StrCat("/proc/self/task/", e->d_name);
    std::string comm;
    std::getline(std::ifstream(dir + "/comm"), comm);
    std::ifstream status(dir + "/status");
    int mode = -1;
    for (std::string line; std::getline(status, line);) {
      absl::string_view v(line);
      if (absl::ConsumePrefix(&v, "Seccomp:")) (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(v), &mode);
    }
    modes.emplace(comm, mode);
  }
  closedir(d);
  return modes;
}

class MachineSeccompTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
    dir_ = absl::StrCat(::testing::TempDir(), "/seccomp-", getpid());
    mkdir(dir_.c_str(), 0700);
    mkdir((dir_ + "/share").c_str(), 0700);
    int fd = open((dir_ + "/disk").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
  }
  void TearDown() override {
    if (dir_.empty()) return;
    unlink((dir_ + "/disk").c_str());
    unlink(kernel_.c_str());
    rmdir((dir_ + "/share").c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
  std::string kernel_;
};

// A spinning tiny guest with a disk, vsock and a share: every VMM thread has the filter with the
// option on and none with it off; the caller's thread never does. The devices' threads start,
// idle and exit under their filters (the machine is destroyed with them filtered).
TEST_P(MachineSeccompTest, FiltersExactlyTheVmmThreads) {
  const bool on = GetParam();
  MachineConfig c;
  c.mem_mib = 16;
  c.kernel_path = kernel_ = testing::WriteTempFile("kernel", testing::TinyElfKernel(testing::SpinCode()));
  c.seccomp = on;
  block::BlockConfig disk;
  disk.path = dir_ + "/disk";
  c.disks.push_back(disk);
  vsock::VsockConfig vc;
  vc.guest_cid = 3;
  vc.uds_path = dir_ + "/vsock";
  c.vsock = vc;
  fs::FsConfig share;
  share.tag = "share";
  share.shared_dir = dir_ + "/share";
  c.shares.push_back(share);
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  const int want = on ? 2 : 0;
  const char* names[] = {"vcpu0", "vessel-events", "blk-io", "vsock-io", "fs-io"};
  auto settled = [&](const std::multimap<std::string, int>& modes) {
    for (const char* name : names) {
      auto [b, e] = modes.equal_range(name);
      if (b == e) return false;
      for (auto it = b; it != e; ++it) {
        if (it->second != want) return false;
      }
    }
    return true;
  };
  std::multimap<std::string, int> modes = ThreadModes();
  for (int i = 0; i < 500 && !settled(modes); ++i) {  // threads name and filter themselves first
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    modes = ThreadModes();
  }
  for (const char* name : names) {
    ASSERT_GE(modes.count(name), 1u) << name;
    auto [b, e] = modes.equal_range(name);
    for (auto it = b; it != e; ++it) EXPECT_EQ(it->second, want) << name;
  }
  EXPECT_EQ(seccomp::CurrentThreadMode(), 0);  // the caller's thread
  (*m)->Stop();
  EXPECT_EQ((*m)->Wait().reason, ExitReason::kHostStop);
  m->reset();  // device and event-loop threads exit under their filters
  EXPECT_EQ(seccomp::CurrentThreadMode(), 0);
}

INSTANTIATE_TEST_SUITE_P(Seccomp, MachineSeccompTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "On" : "Off"; });

}  // namespace
}  // namespace vessel
