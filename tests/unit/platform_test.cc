#include "vmm/kvm/platform.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace vessel {
namespace {

class PlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "vessel_platform_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    ASSERT_EQ(::mkdir((root_ + "/module").c_str(), 0755), 0);
  }
  void TearDown() override {
    ::rmdir((root_ + "/module/kvm_pvm").c_str());
    ::unlink((root_ + "/module/kvm_pvm").c_str());
    ::rmdir((root_ + "/module/kvm").c_str());
    ::rmdir((root_ + "/module").c_str());
    ::rmdir(root_.c_str());
  }

  std::string root_;
};

TEST_F(PlatformTest, HardwareWithoutKvmPvmModule) {
  ASSERT_EQ(::mkdir((root_ + "/module/kvm").c_str(), 0755), 0);
  const Platform p = DetectPlatform(root_);
  EXPECT_EQ(p.flavor, KvmFlavor::kHardware);
  EXPECT_EQ(p.Name(), "hardware KVM");
}

TEST_F(PlatformTest, PvmWithKvmPvmModuleDirectory) {
  ASSERT_EQ(::mkdir((root_ + "/module/kvm_pvm").c_str(), 0755), 0);
  const Platform p = DetectPlatform(root_);
  EXPECT_EQ(p.flavor, KvmFlavor::kPvm);
  EXPECT_EQ(p.Name(), "kvm_pvm (software nested KVM)");
}

TEST_F(PlatformTest, PlainFileIsNotAModule) {
  std::ofstream(root_ + "/module/kvm_pvm") << "x";
  EXPECT_EQ(DetectPlatform(root_).flavor, KvmFlavor::kHardware);
}

TEST(PlatformNoRootTest, MissingRootIsHardware) {
  EXPECT_EQ(DetectPlatform("/nonexistent/vessel/sysfs").flavor, KvmFlavor::kHardware);
}

TEST(PlatformNoRootTest, DefaultPlatformIsHardware) {
  EXPECT_EQ(Platform{}.flavor, KvmFlavor::kHardware);
}

}  // namespace
}  // namespace vessel
