#include "shim/state.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace vessel::shim {
namespace {

TEST(StateDirTest, Layout) {
  EXPECT_EQ(ShimStateDir("/run/vessel", "k8s.io"), "/run/vessel/k8s.io");
  EXPECT_EQ(SandboxStateDir("/run/vessel/k8s.io", "pod1"), "/run/vessel/k8s.io/sandboxes/pod1");
}

TEST(FindSandboxOfTest, ByTheContainersShare) {
  char tmpl[] = "/tmp/vessel-shim-find-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::filesystem::create_directories(dir + "/sandboxes/pod1/shared/pod1");
  std::filesystem::create_directories(dir + "/sandboxes/pod1/shared/app");
  std::filesystem::create_directories(dir + "/sandboxes/solo/shared/solo");
  EXPECT_EQ(FindSandboxOf(dir, "app"), "pod1");
  EXPECT_EQ(FindSandboxOf(dir, "solo"), "solo");
  EXPECT_EQ(FindSandboxOf(dir, "nobody"), "");
  EXPECT_EQ(FindSandboxOf(dir + "/missing", "app"), "");
  std::filesystem::remove_all(dir);
}

TEST(MountsUnderTest, DeepestFirstWithEscapes) {
  std::string info =
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "40 22 0:40 / /run/vessel/sandboxes/p1/shared/c1/rootfs rw - overlay overlay rw\n"
      "41 40 0:41 / /run/vessel/sandboxes/p1/shared/c1/mounts/0 rw - bind x rw\n"
      "42 22 0:42 / /run/vessel/sandboxes/p1/shared/my\\040dir rw - tmpfs t rw\n"
      "44 22 0:44 / /run/vessel/sandboxes/p1/shared/c1/rootfs rw - overlay overlay rw\n"
      "43 22 0:43 / /run/vessel/sandboxes/p10 rw - tmpfs t rw\n";
  std::vector<std::string> m = MountsUnder("/run/vessel/sandboxes/p1", info);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0], "/run/vessel/sandboxes/p1/shared/c1/mounts/0");
  EXPECT_EQ(m[1], "/run/vessel/sandboxes/p1/shared/c1/rootfs");
  EXPECT_EQ(m[2], "/run/vessel/sandboxes/p1/shared/my dir");
}

// What a SIGKILLed shim leaves: bind mounts of the containers' rootfs in the share. The cleanup
// unmounts them and never deletes through them into the user's files.
TEST(RemoveSandboxStateTest, UnmountsAndNeverDeletesThroughAMount) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  char tmpl[] = "/tmp/vessel-shim-state-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string user = dir + "/user-rootfs";
  std::filesystem::create_directories(user);
  std::ofstream(user + "/precious") << "keep me";
  std::string sb = dir + "/sandboxes/p1";
  for (const char* c : {"c1", "c2"}) {
    std::string target = sb + "/shared/" + c + "/rootfs";
    std::filesystem::create_directories(target);
    ASSERT_EQ(::mount(user.c_str(), target.c_str(), nullptr, MS_BIND, nullptr), 0);
  }
  std::ofstream(sb + "/console.log") << "boot";

  ASSERT_TRUE(RemoveSandboxState(sb, "c1").ok());
  EXPECT_FALSE(std::filesystem::exists(sb + "/shared/c1"));
  EXPECT_TRUE(std::filesystem::exists(sb + "/shared/c2/rootfs/precious"));  // c2 is not ours
  EXPECT_TRUE(std::filesystem::exists(sb + "/console.log"));

  ASSERT_TRUE(RemoveSandboxState(sb, "c2").ok());  // the last one takes the sandbox with it
  EXPECT_FALSE(std::filesystem::exists(sb));
  EXPECT_TRUE(std::filesystem::exists(user + "/precious"));
  EXPECT_TRUE(RemoveSandboxState(sb, "c2").ok());  // nothing left is fine
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vessel::shim
