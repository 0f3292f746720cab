// Issue 10's resource-limit audit, the Machine's part: vCPUs, guest memory and the number of
// virtio devices have maxima, and exceeding one is an error from Create, not growth. (The device
// limits are tested with the devices: queue sizes in queue_test, FUSE tables in fs_server_test,
// vsock connections in vsock_device_test, ttrpc frames in tests/rpc.) See docs/security.md.
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vmm/tiny_guest.h"
#include "vmm/machine.h"

namespace vessel {
namespace {

using ::testing::HasSubstr;

class MachineLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_ = testing::WriteTempFile("kernel", testing::TinyElfKernel(testing::PowerOffCode()));
  }
  void TearDown() override { unlink(kernel_.c_str()); }
  MachineConfig Config() {
    MachineConfig c;
    c.mem_mib = 16;
    c.kernel_path = kernel_;
    return c;
  }
  std::string kernel_;
};

TEST_F(MachineLimitsTest, VcpusAboveTheArchitectureMaximumAreRefused) {
  MachineConfig c = Config();
  c.vcpus = 129;  // x86_64: 128 (MP table / APIC ids)
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("--vcpus 129 is out of range 1..128"));
}

TEST_F(MachineLimitsTest, GuestMemoryAboveOneTebibyteIsRefused) {
  MachineConfig c = Config();
  c.mem_mib = (1ull << 20) + 1;
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("out of range 16..1048576"));
}

TEST_F(MachineLimitsTest, MoreVirtioDevicesThanWindowsAreRefused) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  MachineConfig c = Config();
  for (int i = 0; i < 20; ++i) {  // x86_64 has 19 virtio-mmio windows (IOAPIC GSIs 5..23)
    fs::FsConfig share;
    share.tag = absl::StrCat("s", i);
    share.shared_dir = "/nonexistent";  // never opened: the count is checked first
    c.shares.push_back(share);
  }
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("at most 19 virtio devices fit"));
}

}  // namespace
}  // namespace vessel
