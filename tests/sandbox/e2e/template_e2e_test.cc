// Sandbox templates end to end: ONE cold boot builds a template (vessel/sandbox/template.h), then
// two sandboxes are restored from it at the same time and must be distinct, working machines:
// a container command runs in each, their kernel RNGs differ (/proc/sys/kernel/random/uuid), their
// clocks are the host's (date +%s within 2 s), each has its own hostname, and the agent answers
// again over vsock after the transport reset. ~1 minute on kvm_pvm, most of it the one boot.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "sandbox/host_mounts.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"
#include "vessel/sandbox/template.h"

namespace vessel::sandbox {
namespace {

using Clock = std::chrono::steady_clock;

long long Ms(Clock::duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

// Collects everything written to a pipe.
class Output {
 public:
  Output() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) == 0) {
      read_ = fds[0];
      write_ = fds[1];
      thread_ = std::thread([this] {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(read_, buf, sizeof(buf))) > 0) {
          std::lock_guard<std::mutex> lock(mu_);
          text_.append(buf, static_cast<size_t>(n));
        }
      });
    }
  }
  ~Output() { Drain(); if (read_ >= 0) ::close(read_); }
  int fd() const { return write_; }
  void CloseWriteEnd() {
    if (write_ >= 0) ::close(write_);
    write_ = -1;
  }
  std::string Drain() {
    CloseWriteEnd();
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  int read_ = -1, write_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::string text_;
};

class TemplateE2e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access("/dev/kvm", R_OK | W_OK) != 0 || ::geteuid() != 0) {
      skip_reason_ = new std::string("needs /dev/kvm and root (mounts, namespaces)");
      return;
    }
    char tmpl[] = "/tmp/vessel-template-e2e-XXXXXX";
    dir_ = new std::string(::mkdtemp(tmpl));
    if (std::system(absl::StrCat("cp -a ", VESSEL_BUSYBOX_ROOTFS, " ", *dir_, "/rootfs").c_str()) != 0) {
      skip_reason_ = new std::string("cannot copy the busybox rootfs (run the build first)");
      return;
    }
    runtime_ = new RuntimeConfig(DefaultRuntimeConfig());
    runtime_->state_dir = *dir_ + "/state";
    runtime_->template_dir = *dir_ + "/templates";
    const auto t0 = Clock::now();
    absl::StatusOr<TemplateInfo> built = BuildTemplate(*runtime_);
    build_ms_ = Ms(Clock::now() - t0);
    if (!built.ok()) {
      build_error_ = new std::string(built.status().message());
      return;
    }
    info_ = new TemplateInfo(*built);
    std::printf("# bench: template build (cold boot to a ready agent + pause + save) %lld ms, "
                "%llu MiB on disk for %llu MiB of guest memory\n",
                build_ms_, static_cast<unsigned long long>(built->disk_bytes >> 20),
                static_cast<unsigned long long>(built->memory_file_bytes >> 20));
  }

  static void TearDownTestSuite() {
    if (dir_ != nullptr && !HasMountsUnder(*dir_)) std::filesystem::remove_all(*dir_);
  }

  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_EQ(build_error_, nullptr) << "BuildTemplate failed: " << *build_error_;
  }

  // Runs `sh -c script` in a new container of `sandbox`; returns its stdout.
  static std::string Run(Sandbox& sandbox, const std::string& id, const std::string& script) {
    Output out, err;
    ContainerConfig cc;
    cc.id = id;
    cc.spec = DefaultOciSpec({"sh", "-c", script});
    cc.rootfs_dir = *dir_ + "/rootfs";
    cc.stdio.stdout_fd = out.fd();
    cc.stdio.stderr_fd = err.fd();
    absl::StatusOr<Container*> c = sandbox.CreateContainer(std::move(cc));
    out.CloseWriteEnd();
    err.CloseWriteEnd();
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return "";
    EXPECT_TRUE((*c)->Start().ok());
    absl::StatusOr<uint32_t> status = (*c)->Wait();
    EXPECT_TRUE(status.ok() && *status == 0) << "exit " << (status.ok() ? *status : 999) << ", stderr: " << err.Drain();
    std::string text = out.Drain();
    EXPECT_TRUE(sandbox.RemoveContainer(id).ok());
    return text;
  }

  static inline std::string* dir_ = nullptr;
  static inline std::string* skip_reason_ = nullptr;
  static inline std::string* build_error_ = nullptr;
  static inline RuntimeConfig* runtime_ = nullptr;
  static inline TemplateInfo* info_ = nullptr;
  static inline long long build_ms_ = 0;
};

TEST_F(TemplateE2e, TheBuiltTemplateIsListedAsCurrent) {
  absl::StatusOr<std::vector<TemplateInfo>> all = ListTemplates(*runtime_);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_TRUE((*all)[0].current);
  EXPECT_EQ((*all)[0].key, info_->key);
  EXPECT_LT((*all)[0].disk_bytes, (*all)[0].memory_file_bytes) << "the memory file is sparse";
}

TEST_F(TemplateE2e, TwoSandboxesRestoredAtOnceAreDistinctWorkingMachines) {
  struct Clone {
    std::string id;
    std::unique_ptr<Sandbox> sandbox;
    std::string error;
    long long create_ms = 0;
  };
  std::vector<Clone> clones(2);
  clones[0].id = "clone-a";
  clones[1].id = "clone-b";
  std::vector<std::thread> threads;
  for (Clone& c : clones) {
    threads.emplace_back([&c] {
      SandboxConfig config;
      config.id = c.id;
      config.runtime = *runtime_;
      const auto t0 = Clock::now();
      absl::StatusOr<std::unique_ptr<Sandbox>> s = Sandbox::Create(config);
      c.create_ms = Ms(Clock::now() - t0);
      if (s.ok()) {
        c.sandbox = std::move(*s);
      } else {
        c.error = std::string(s.status().message());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> uuids;
  for (Clone& c : clones) {
    ASSERT_NE(c.sandbox, nullptr) << c.id << ": " << c.error;
    const SandboxTimeline t = c.sandbox->timeline();
    EXPECT_TRUE(t.from_template) << c.id << ": " << t.start_path;
    EXPECT_EQ(t.template_key, info_->key);
    std::printf("# bench: %s restored, Sandbox::Create %lld ms (VM restore %lld ms, agent answered %lld "
                "ms later, sandbox ready %lld ms later); the template's cold boot took %lld ms\n",
                c.id.c_str(), c.create_ms, Ms(t.vm_setup), Ms(t.agent_ready), Ms(t.sandbox_ready), build_ms_);
  }
  for (Clone& c : clones) {
    const auto before = std::chrono::system_clock::now();
    const std::string out = Run(*c.sandbox, "probe", "cat /proc/sys/kernel/random/uuid; date +%s; hostname");
    const auto after = std::chrono::system_clock::now();
    std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
    ASSERT_EQ(lines.size(), 3u) << c.id << " printed: " << out;
    uuids.push_back(lines[0]);
    int64_t guest_now = 0;
    ASSERT_TRUE(absl::SimpleAtoi(lines[1], &guest_now)) << lines[1];
    const int64_t lo = std::chrono::duration_cast<std::chrono::seconds>(before.time_since_epoch()).count();
    const int64_t hi = std::chrono::duration_cast<std::chrono::seconds>(after.time_since_epoch()).count();
    EXPECT_GE(guest_now, lo - 2) << c.id << ": the guest clock is behind the host's";
    EXPECT_LE(guest_now, hi + 2) << c.id << ": the guest clock is ahead of the host's";
    EXPECT_EQ(lines[2], c.id) << "each clone gets its own hostname";
  }
  EXPECT_NE(uuids[0], uuids[1]) << "two clones of one template produced the same random numbers";
  // A second command in each: the agent connection (re-established after the vsock transport
  // reset) keeps working.
  for (Clone& c : clones) {
    EXPECT_EQ(Run(*c.sandbox, "again", "echo again-" + c.id), "again-" + c.id + "\n");
  }
  for (Clone& c : clones) EXPECT_TRUE(c.sandbox->Stop().ok());
}

TEST_F(TemplateE2e, KeyFollowsEveryInput) {
  absl::StatusOr<std::string> key = TemplateKey(*runtime_);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, info_->key);
  RuntimeConfig other = *runtime_;
  other.memory_mib += 64;
  EXPECT_NE(*TemplateKey(other), *key) << "memory";
  other = *runtime_;
  other.vcpus += 1;
  EXPECT_NE(*TemplateKey(other), *key) << "vCPUs";
  other = *runtime_;
  other.kernel_cmdline = "quiet";
  EXPECT_NE(*TemplateKey(other), *key) << "kernel command line";
  // Same path, other bytes: a rebuilt initramfs (a new agent) must not match.
  const std::string copy = *dir_ + "/initramfs.cpio";
  std::filesystem::copy_file(runtime_->initramfs, copy);
  other = *runtime_;
  other.initramfs = copy;
  EXPECT_EQ(*TemplateKey(other), *key) << "the key hashes contents, not paths";
  { std::ofstream(copy, std::ios::app) << "x"; }
  EXPECT_NE(*TemplateKey(other), *key) << "initramfs contents";
}

TEST_F(TemplateE2e, RemoveDeletesTheTemplate) {
  EXPECT_FALSE(RemoveTemplate(*runtime_, "abc").ok()) << "too short a prefix";
  EXPECT_EQ(RemoveTemplate(*runtime_, "0000000000").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(RemoveTemplate(*runtime_, info_->key.substr(0, 12)).ok());
  absl::StatusOr<std::vector<TemplateInfo>> all = ListTemplates(*runtime_);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
  EXPECT_FALSE(std::filesystem::exists(info_->dir));
}

}  // namespace
}  // namespace vessel::sandbox
