// End to end: vessel-vmm boots the project's Linux guest (kernel + test initramfs), whose /init
// runs in-guest checks and prints TAP on the console, reads a line the test types into the console,
// and powers off. The test asserts every TAP line, the values the guest reports, and the exit status.
// On this build host (kvm_pvm) one boot takes ~45 s; labelled e2e.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace vessel {
namespace {

constexpr auto kBootTimeout = std::chrono::seconds(600);

struct RunResult {
  int exit_status = -1;  // -1: killed by the timeout
  std::string output;    // console + VMM log
};

// Runs vessel-vmm with `args`; once the output contains `prompt`, types `input` on its stdin.
RunResult RunVmm(const std::vector<std::string>& args, const std::string& prompt,
                 const std::string& input) {
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(out_pipe[1], STDERR_FILENO);
    std::vector<char*> argv;
    std::string binary = VESSEL_VMM_BINARY;
    argv.push_back(binary.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  RunResult result;
  bool sent = false;
  auto deadline = std::chrono::steady_clock::now() + kBootTimeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      result.output += "\n[e2e] timed out\n";
      break;
    }
    pollfd pfd = {out_pipe[0], POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000))) <= 0) continue;
    char buf[4096];
    ssize_t n = read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
    if (!sent && !prompt.empty() && result.output.find(prompt) != std::string::npos) {
      std::string line = input + "\n";
      EXPECT_EQ(write(in_pipe[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
      sent = true;
    }
  }
  close(in_pipe[1]);
  close(out_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
  return result;
}

std::string RandomToken() {
  std::random_device rd;
  return absl::StrCat(absl::Hex(rd()), absl::Hex(rd()));
}

// Value of "# key=value" from the TAP diagnostics, or "" when absent.
std::string Diagnostic(const std::string& output, const std::string& key) {
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    std::string prefix = absl::StrCat("# ", key, "=");
    if (absl::StartsWith(line, prefix)) {
      std::string v(line.substr(prefix.size()));
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      return v;
    }
  }
  return "";
}

class BootE2eTest : public ::testing::TestWithParam<int> {};

TEST_P(BootE2eTest, GuestBootsRunsChecksReadsConsoleAndPowersOff) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  const int vcpus = GetParam();
  const std::string token = RandomToken();
  const std::string input = absl::StrCat("hello-from-host-", RandomToken());
  const std::string guest = VESSEL_GUEST_DIR;
  RunResult r = RunVmm({"--kernel=" + guest + "/vmlinux", "--initrd=" + guest + "/test-initramfs.cpio",
                        absl::StrCat("--vcpus=", vcpus), "--mem-mib=128", "--boot-timing",
                        absl::StrCat("--append=vessel_test_cpus=", vcpus,
                                     " vessel_test_mem_mib=128 vessel_test_input=1 vessel.token=", token)},
                       "vessel-test: waiting for console input", input);
  SCOPED_TRACE("console log:\n" + r.output);
  EXPECT_EQ(r.exit_status, 0) << "vessel-vmm should exit 0 on guest poweroff";

  // TAP: the plan, then ok 1..4 and no failure.
  EXPECT_NE(r.output.find("\n1..4"), std::string::npos);
  for (int i = 1; i <= 4; ++i) {
    std::regex ok(absl::StrCat("(^|\\n)ok ", i, " - "));
    EXPECT_TRUE(std::regex_search(r.output, ok)) << "TAP test " << i << " did not pass";
  }
  EXPECT_EQ(r.output.find("not ok"), std::string::npos);
  EXPECT_EQ(r.output.find("# SKIP"), std::string::npos) << "console input check was skipped";
  // The values behind the TAP lines, checked here too.
  EXPECT_EQ(Diagnostic(r.output, "nproc"), absl::StrCat(vcpus));
  EXPECT_EQ(Diagnostic(r.output, "token"), token);
  EXPECT_EQ(Diagnostic(r.output, "input"), input);
  int memtotal_kb = atoi(Diagnostic(r.output, "memtotal_kb").c_str());
  EXPECT_GT(memtotal_kb, 128 * 1024 * 6 / 10);
  EXPECT_LE(memtotal_kb, 128 * 1024);
  // The VMM's own report: platform named, poweroff recorded, userspace boot-timing mark seen.
  EXPECT_NE(r.output.find("boot-timing: platform="), std::string::npos);
  EXPECT_NE(r.output.find("boot-timing: exit_reason=poweroff"), std::string::npos);
  EXPECT_NE(r.output.find("boot-timing: code_0x60_userspace_ms="), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Vcpus, BootE2eTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat(info.param, "vcpu");
                         });

// Runs a host command, returns its exit status and stdout.
int Host(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
    if (out != nullptr) out->append(buf, n);
  }
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// virtio-blk end to end: the guest finds /dev/vda (an ext4 image made here with mkfs.ext4) and
// /dev/vdb (16 MiB of random data, read-only), copies vdb into a file on the ext4, stores its
// sha256, syncs, unmounts, checks vdb refuses writes, and powers off. The host then checks the
// image with e2fsck -fn and reads the file back with debugfs: bytes and checksum must match.
TEST(BlockE2eTest, GuestWritesExt4ThatTheHostReadsBack) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  const std::string dir = ::testing::TempDir() + "/vessel-blk-e2e-" + RandomToken();
  const std::string vda = dir + "/vda.ext4", vdb = dir + "/vdb.raw";
  ASSERT_EQ(Host("mkdir -p " + dir + " && truncate -s 64M " + vda +
                 " && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 " + vda +
                 " && head -c 16M /dev/urandom > " + vdb),
            0);
  std::string host_sum;
  ASSERT_EQ(Host("sha256sum " + vdb + " | cut -d' ' -f1", &host_sum), 0);
  while (!host_sum.empty() && host_sum.back() == '\n') host_sum.pop_back();
  const std::string guest = VESSEL_GUEST_DIR;
  RunResult r = RunVmm({"--kernel=" + guest + "/vmlinux", "--initrd=" + guest + "/test-initramfs.cpio",
                        "--mem-mib=128", "--disk", vda, "--disk=" + vdb + ",ro,serial=random",
                        "--append=vessel_test_cpus=1 vessel_test_mem_mib=128 vessel.token=blk "
                        "vessel_test_disk=1 vessel_test_vda_kb=65536"},
                       "", "");
  SCOPED_TRACE("console log:\n" + r.output);
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_NE(r.output.find("\n1..8"), std::string::npos);
  for (int i = 1; i <= 8; ++i) {
    EXPECT_TRUE(std::regex_search(r.output, std::regex(absl::StrCat("(^|\\n)ok ", i, " - "))))
        << "TAP test " << i << " did not pass";
  }
  EXPECT_EQ(r.output.find("not ok"), std::string::npos);
  EXPECT_EQ(Diagnostic(r.output, "vda_kb"), "65536");
  EXPECT_EQ(Diagnostic(r.output, "vdb_kb"), "16384");
  EXPECT_EQ(Diagnostic(r.output, "sha256"), host_sum);

  std::string fsck;
  EXPECT_EQ(Host("e2fsck -fn " + vda + " 2>&1", &fsck), 0) << fsck;
  EXPECT_EQ(Host("debugfs -R 'dump /data " + dir + "/data.out' " + vda + " 2>/dev/null && cmp " +
                 dir + "/data.out " + vdb),
            0)
      << "the file the guest wrote differs from /dev/vdb";
  std::string stored_sum;
  EXPECT_EQ(Host("debugfs -R 'cat /data.sha256' " + vda + " 2>/dev/null", &stored_sum), 0);
  EXPECT_EQ(stored_sum, host_sum + "\n");
  Host("rm -rf " + dir);
}

TEST(VmmCliE2eTest, BadKernelFileExitsNonZeroWithAMessage) {
  RunResult r = RunVmm({"--kernel=/nonexistent/vmlinux"}, "", "");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.output.find("/nonexistent/vmlinux"), std::string::npos) << r.output;
}

TEST(VmmCliE2eTest, BadDiskOptionIsRefused) {
  RunResult r = RunVmm({"--disk=/tmp/x.img,fast"}, "", "");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.output.find("unknown option 'fast'"), std::string::npos) << r.output;
}

TEST(VmmCliE2eTest, UnknownConsoleIsRefused) {
  RunResult r = RunVmm({"--console=serial9"}, "", "");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.output.find("--console"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace vessel
