// Machine::Pause / Resume / SaveSnapshot / Restore with a tiny guest that counts in memory
// forever: the restored VM resumes the count where the snapshot left it (registers, memory and
// the instruction stream came back), restores share the memory file privately, and a restore
// whose snapshot or configuration does not fit fails before any vCPU runs.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/vmm/tiny_guest.h"
#include "vmm/machine.h"
#include "vmm/snapshot/state_file.h"

namespace vessel {
namespace {

using ::testing::HasSubstr;
using testing::Concat;
using testing::TinyElfKernel;
using testing::WriteTempFile;

constexpr uint64_t kCounter = 0x200000;

// mov rbx, kCounter; loop: inc qword [rbx]; jmp loop
std::vector<uint8_t> CountForeverCode() {
  return {0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,  // mov rbx, 0x200000
          0x48, 0xff, 0x03,                          // inc qword [rbx]
          0xeb, 0xfb};                               // jmp -5
}

uint64_t Counter(const Machine& m) { return m.memory().ReadObj<uint64_t>(kCounter).value_or(0); }

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done();
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
    char tmpl[] = "/tmp/vessel-snapshot-XXXXXX";
    dir_ = mkdtemp(tmpl);
    kernel_ = WriteTempFile("kernel", TinyElfKernel(CountForeverCode()));
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
    if (!kernel_.empty()) unlink(kernel_.c_str());
  }

  MachineConfig Config() {
    MachineConfig c;
    c.mem_mib = 16;
    c.kernel_path = kernel_;
    return c;
  }

  // Boots the counter, pauses it mid-count and snapshots it into dir_/snap; returns the count.
  uint64_t TakeSnapshot() {
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(Config());
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return 0;
    EXPECT_TRUE((*m)->Start().ok());
    EXPECT_TRUE(WaitFor([&] { return Counter(**m) > 1000; })) << "the guest never counted";
    EXPECT_TRUE((*m)->Pause().ok());
    const uint64_t at_pause = Counter(**m);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(Counter(**m), at_pause) << "a paused guest does not run";
    absl::StatusOr<SnapshotInfo> info = (*m)->SaveSnapshot(snap());
    EXPECT_TRUE(info.ok()) << info.status();
    if (info.ok()) {
      EXPECT_EQ(info->memory_file_bytes, 16u << 20);
      EXPECT_LT(info->memory_data_bytes, 16u << 20) << "untouched pages are holes";
    }
    // The original resumes and counts on.
    EXPECT_TRUE((*m)->Resume().ok());
    EXPECT_TRUE(WaitFor([&] { return Counter(**m) > at_pause; })) << "resume did not run the guest";
    (*m)->Stop();
    (*m)->Wait();
    return at_pause;
  }

  std::string snap() const { return dir_ + "/snap"; }

  std::string dir_;
  std::string kernel_;
};

TEST_F(SnapshotTest, RestoredMachineContinuesFromTheSnapshot) {
  const uint64_t at_snapshot = TakeSnapshot();
  ASSERT_GT(at_snapshot, 0u);
  MachineConfig c = Config();
  c.kernel_path.clear();  // a restore needs no kernel
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(c, snap());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Counter(**r), at_snapshot) << "guest memory comes from the snapshot";
  ASSERT_TRUE((*r)->Start().ok());
  EXPECT_TRUE(WaitFor([&] { return Counter(**r) > at_snapshot + 1000; }))
      << "the restored vCPU resumed the loop (RIP, RBX and paging came back)";
  (*r)->Stop();
  EXPECT_EQ((*r)->Wait().reason, ExitReason::kHostStop);
}

TEST_F(SnapshotTest, TwoRestoresShareTheFileAndWritePrivately) {
  const uint64_t at_snapshot = TakeSnapshot();
  MachineConfig c = Config();
  absl::StatusOr<std::unique_ptr<Machine>> a = Machine::Restore(c, snap());
  absl::StatusOr<std::unique_ptr<Machine>> b = Machine::Restore(c, snap());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return Counter(**a) > at_snapshot + 1000; }));
  EXPECT_EQ(Counter(**b), at_snapshot) << "a's writes are private to a";
  (*a)->Stop();
  (*a)->Wait();
  absl::StatusOr<std::unique_ptr<Machine>> c2 = Machine::Restore(c, snap());
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(Counter(**c2), at_snapshot) << "the memory file itself is unchanged";
}

TEST_F(SnapshotTest, StateSurvivesARestoreUnchanged) {
  TakeSnapshot();
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(Config(), snap());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Pause().ok()) << "a machine that never started pauses trivially";
  const std::string again = dir_ + "/again";
  ASSERT_TRUE((*r)->SaveSnapshot(again).ok());
  absl::StatusOr<snapshot::v1::SnapshotState> first = snapshot::ReadStateFile(snap() + "/state");
  absl::StatusOr<snapshot::v1::SnapshotState> second = snapshot::ReadStateFile(again + "/state");
  ASSERT_TRUE(first.ok() && second.ok());
  // The clock and TSC advance by themselves; every other field reads back as it was restored.
  for (auto* s : {&*first, &*second}) {
    s->clear_taken_unix_ns();
    s->mutable_x86_vm()->clear_clock();
    s->mutable_x86_vm()->clear_pit2();  // its counters run with time
    for (auto& v : *s->mutable_x86_vcpus()) {
      auto* msrs = v.mutable_msrs();
      for (int i = msrs->size() - 1; i >= 0; --i) {
        const uint32_t index = msrs->Get(i).index();
        // TSC, TSC adjust/deadline, kvmclock/steal-time MSRs and the APIC timer count move with time.
        if (index == 0x10 || index == 0x3b || index == 0x6e0 || (index >= 0x4b564d00 && index <= 0x4b564dff)) {
          msrs->DeleteSubrange(i, 1);
        }
      }
      v.clear_lapic();  // the timer's current count
    }
  }
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(*first, *second)) << diff;
}

TEST_F(SnapshotTest, MismatchedShapeIsRefusedBeforeAnythingRuns) {
  TakeSnapshot();
  MachineConfig c = Config();
  c.mem_mib = 32;
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(c, snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("16 MiB"));
  c = Config();
  c.vcpus = 2;
  r = Machine::Restore(c, snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("1-vCPU"));
  c = Config();
  c.vsock = vsock::VsockConfig{3, dir_ + "/v.sock"};
  r = Machine::Restore(c, snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("virtio devices"));
  EXPECT_NE(access((dir_ + "/v.sock").c_str(), F_OK), 0) << "a failed restore leaves nothing behind";
}

TEST_F(SnapshotTest, ShortMemoryFileIsRefused) {
  TakeSnapshot();
  ASSERT_EQ(truncate((snap() + "/memory").c_str(), 4096), 0);
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(Config(), snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("truncated"));
}

TEST_F(SnapshotTest, CorruptStateFileIsRefused) {
  TakeSnapshot();
  {
    std::fstream f(snap() + "/state", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x5a');
  }
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(Config(), snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("checksum"));
}

TEST_F(SnapshotTest, OtherCpuVendorIsRefused) {
  TakeSnapshot();
  absl::StatusOr<snapshot::v1::SnapshotState> st = snapshot::ReadStateFile(snap() + "/state");
  ASSERT_TRUE(st.ok());
  st->mutable_host()->set_cpu_vendor("GenuineIntelX");
  ASSERT_TRUE(snapshot::WriteStateFile(snap() + "/state", *st).ok());
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(Config(), snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("GenuineIntelX"));
  st->mutable_host()->set_cpu_vendor(st->host().cpu_vendor());
}

TEST_F(SnapshotTest, OtherPlatformIsRefused) {
  TakeSnapshot();
  absl::StatusOr<snapshot::v1::SnapshotState> st = snapshot::ReadStateFile(snap() + "/state");
  ASSERT_TRUE(st.ok());
  st->mutable_host()->set_kvm_flavor("some other kvm");
  ASSERT_TRUE(snapshot::WriteStateFile(snap() + "/state", *st).ok());
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(Config(), snap());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("some other kvm"));
}

TEST_F(SnapshotTest, SnapshotNeedsAPausedMachineAndAFreshDirectory) {
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(Config());
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)->Start().ok());
  absl::StatusOr<SnapshotInfo> info = (*m)->SaveSnapshot(snap());
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("pause"));
  ASSERT_TRUE((*m)->Pause().ok());
  ASSERT_TRUE((*m)->SaveSnapshot(snap()).ok());
  info = (*m)->SaveSnapshot(snap());
  ASSERT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("already holds"));
  (*m)->Stop();
  (*m)->Wait();
}

}  // namespace
}  // namespace vessel
