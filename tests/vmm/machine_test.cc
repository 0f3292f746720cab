// Machine lifecycle tests with tiny guests on the real /dev/kvm (skipped where there is none).
#include "vmm/machine.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/tiny_guest.h"

namespace vessel {
namespace {

using ::testing::HasSubstr;
using testing::Concat;
using testing::OutByte;
using testing::PowerOffCode;
using testing::SpinCode;
using testing::TinyElfKernel;
using testing::WriteTempFile;

std::set<std::string> ListDir(const char* path) {
  std::set<std::string> names;
  DIR* d = opendir(path);
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  closedir(d);
  return names;
}

// Open fds, excluding the one opendir itself uses.
size_t CountFds() { return ListDir("/proc/self/fd").size(); }
size_t CountThreads() { return ListDir("/proc/self/task").size(); }

// Lines of /proc/self/maps.
std::vector<std::string> Mappings() {
  std::vector<std::string> lines;
  FILE* f = fopen("/proc/self/maps", "r");
  char buf[512];
  while (f != nullptr && fgets(buf, sizeof(buf), f) != nullptr) lines.push_back(buf);
  if (f != nullptr) fclose(f);
  return lines;
}

// Mappings of KVM objects (kvm_run pages show as anon_inode:kvm-vcpu) or starting at `guest_ram`.
size_t VmMappings(uintptr_t guest_ram) {
  size_t n = 0;
  const std::string start = absl::StrFormat("%x-", guest_ram);
  for (const std::string& line : Mappings()) {
    if (line.find("kvm") != std::string::npos || line.rfind(start, 0) == 0) ++n;
  }
  return n;
}

class MachineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  }
  void TearDown() override {
    for (const std::string& p : files_) unlink(p.c_str());
  }

  MachineConfig Config(const std::vector<uint8_t>& code) {
    MachineConfig c;
    c.mem_mib = 16;
    c.kernel_path = WriteTempFile("kernel", TinyElfKernel(code));
    files_.push_back(c.kernel_path);
    c.console_sink = [this](absl::string_view s) {
      std::lock_guard lock(mu_);
      console_.append(s.data(), s.size());
    };
    return c;
  }

  MachineExit Run(MachineConfig config) {
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(config));
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return {ExitReason::kCrash, "create failed"};
    EXPECT_TRUE((*m)->Start().ok());
    return (*m)->Wait();
  }

  std::string console() {
    std::lock_guard lock(mu_);
    return console_;
  }

  std::vector<std::string> files_;
  std::mutex mu_;
  std::string console_;
};

TEST_F(MachineTest, PowerOffThroughPowerPortEndsWithPoweroff) {
  MachineExit exit = Run(Config(PowerOffCode()));
  EXPECT_EQ(exit.reason, ExitReason::kPoweroff) << exit.detail;
}

TEST_F(MachineTest, I8042ResetEndsWithReboot) {
  MachineExit exit = Run(Config(Concat({OutByte(0x64, 0xfe), SpinCode()})));
  EXPECT_EQ(exit.reason, ExitReason::kReboot) << exit.detail;
  EXPECT_THAT(exit.detail, HasSubstr("i8042"));
}

TEST_F(MachineTest, PowerPortResetEndsWithReboot) {
  MachineExit exit = Run(Config(Concat({OutByte(0x600, 0x01), SpinCode()})));
  EXPECT_EQ(exit.reason, ExitReason::kReboot) << exit.detail;
}

TEST_F(MachineTest, SerialOutputReachesTheConsoleSink) {
  MachineExit exit = Run(Config(Concat({OutByte(0x3f8, 'o'), OutByte(0x3f8, 'k'),
                                        OutByte(0x3f8, '\n'), PowerOffCode()})));
  EXPECT_EQ(exit.reason, ExitReason::kPoweroff) << exit.detail;
  EXPECT_EQ(console(), "ok\n");
}

TEST_F(MachineTest, BootTimingPortAndTimelineAreRecorded) {
  MachineConfig c = Config(Concat({OutByte(0x80, 0x41), OutByte(0x3f8, 'x'), PowerOffCode()}));
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  EXPECT_EQ((*m)->Wait().reason, ExitReason::kPoweroff);
  BootTimeline t = (*m)->timeline();
  ASSERT_EQ(t.marks.size(), 1u);
  EXPECT_EQ(t.marks[0].code, 0x41);
  ASSERT_TRUE(t.first_run.has_value());
  ASSERT_TRUE(t.first_console.has_value());
  ASSERT_TRUE(t.ended.has_value());
  EXPECT_LE(*t.first_run, *t.first_console);
  EXPECT_LE(*t.first_console, *t.ended);
  EXPECT_GE((*m)->exit_counts()["io"], 3u);
}

TEST_F(MachineTest, TripleFaultEndsWithCrashNamingTheReason) {
  // ud2 with an empty IDT: #UD -> #GP -> #DF -> triple fault.
  MachineExit exit = Run(Config({0x0f, 0x0b}));
  EXPECT_EQ(exit.reason, ExitReason::kCrash);
  EXPECT_THAT(exit.detail, HasSubstr("RIP"));
}

TEST_F(MachineTest, StopEndsASpinningGuestPromptly) {
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(Config(SpinCode()));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto start = std::chrono::steady_clock::now();
  (*m)->Stop();
  MachineExit exit = (*m)->Wait();
  EXPECT_EQ(exit.reason, ExitReason::kHostStop);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(MachineTest, MultipleVcpusStopTogether) {
  MachineConfig c = Config(SpinCode());
  c.vcpus = 2;
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->Start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  (*m)->Stop();
  EXPECT_EQ((*m)->Wait().reason, ExitReason::kHostStop);
}

TEST_F(MachineTest, NothingLeaksAfterTheMachineIsGone) {
  MachineConfig c = Config(Concat({OutByte(0x3f8, '.'), PowerOffCode()}));
  c.vcpus = 2;
  const size_t fds = CountFds(), threads = CountThreads();
  uintptr_t guest_ram = 0;
  {
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
    ASSERT_TRUE(m.ok()) << m.status();
    guest_ram = reinterpret_cast<uintptr_t>((*m)->memory().regions()[0].host);
    EXPECT_GT(CountFds(), fds);                 // kvm, vm and vcpu fds are open while it lives
    EXPECT_GE(VmMappings(guest_ram), 3u);       // guest RAM + one kvm_run per vCPU
    ASSERT_TRUE((*m)->Start().ok());
    EXPECT_EQ((*m)->Wait().reason, ExitReason::kPoweroff);
  }
  EXPECT_EQ(CountFds(), fds);
  EXPECT_EQ(CountThreads(), threads);
  // glibc may keep exited threads' stacks and malloc arenas for reuse (the process's, not the
  // VM's); what must be gone is every mapping the VM made.
  EXPECT_EQ(VmMappings(guest_ram), 0u);
}

TEST_F(MachineTest, DestroyingARunningMachineStopsIt) {
  const size_t threads = CountThreads();
  {
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(Config(SpinCode()));
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE((*m)->Start().ok());
  }
  EXPECT_EQ(CountThreads(), threads);
}

TEST_F(MachineTest, MissingKernelFileNamesThePath) {
  MachineConfig c = Config(PowerOffCode());
  c.kernel_path = "/nonexistent/vmlinux";
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("/nonexistent/vmlinux"));
}

TEST_F(MachineTest, GarbageKernelIsRefused) {
  MachineConfig c = Config(PowerOffCode());
  c.kernel_path = WriteTempFile("garbage", std::vector<uint8_t>(4096, 0x5a));
  files_.push_back(c.kernel_path);
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("neither an ELF vmlinux nor a bzImage"));
}

TEST_F(MachineTest, InitrdLargerThanRamIsRefused) {
  MachineConfig c = Config(PowerOffCode());
  c.initrd_path = WriteTempFile("initrd", std::vector<uint8_t>(17 << 20, 0));
  files_.push_back(c.initrd_path);
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("initrd"));
}

TEST_F(MachineTest, InitrdIsPlacedAndAnnounced) {
  MachineConfig c = Config(PowerOffCode());
  c.initrd_path = WriteTempFile("initrd", std::vector<uint8_t>(64 << 10, 0x11));
  files_.push_back(c.initrd_path);
  EXPECT_EQ(Run(std::move(c)).reason, ExitReason::kPoweroff);
}

TEST_F(MachineTest, BadVcpuAndMemoryCountsAreRefused) {
  MachineConfig c = Config(PowerOffCode());
  c.vcpus = 0;
  EXPECT_THAT(Machine::Create(c).status().message(), HasSubstr("--vcpus"));
  c.vcpus = 1;
  c.mem_mib = 1;
  EXPECT_THAT(Machine::Create(c).status().message(), HasSubstr("--mem-mib"));
}

TEST_F(MachineTest, CommandLineCarriesBaseAndExtraArguments) {
  MachineConfig c = Config(PowerOffCode());
  c.extra_cmdline = "vessel.test=1";
  c.platform = Platform{KvmFlavor::kHardware};
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT((*m)->cmdline(), HasSubstr("console=ttyS0"));
  EXPECT_THAT((*m)->cmdline(), HasSubstr("vessel.test=1"));
  // Hardware KVM gets no compatibility profile.
  EXPECT_THAT((*m)->cmdline(), ::testing::Not(HasSubstr("clearcpuid")));
  EXPECT_EQ((*m)->compat_summary(), "");
}

TEST_F(MachineTest, PvmPlatformGetsTheCompatibilityCommandLine) {
  MachineConfig c = Config(PowerOffCode());
  c.platform = Platform{KvmFlavor::kPvm};
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT((*m)->cmdline(), HasSubstr("clearcpuid=308,295,141,154,151"));
  EXPECT_THAT((*m)->compat_summary(), HasSubstr("kvm_pvm compat"));
}

}  // namespace
}  // namespace vessel
