#include "shim/mounts.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace vessel::shim {
namespace {

containerd::types::Mount M(std::string type, std::string source, std::vector<std::string> options) {
  containerd::types::Mount m;
  m.set_type(std::move(type));
  m.set_source(std::move(source));
  for (std::string& o : options) m.add_options(std::move(o));
  return m;
}

TEST(PlanMountTest, OverlayFromTheSnapshotter) {
  absl::StatusOr<MountPlan> p =
      PlanMount(M("overlay", "overlay",
                  {"index=off", "workdir=/s/2/work", "upperdir=/s/2/fs", "lowerdir=/s/1/fs", "nosuid"}));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->type, "overlay");
  EXPECT_EQ(p->source, "overlay");
  EXPECT_EQ(p->flags, static_cast<unsigned long>(MS_NOSUID));
  EXPECT_EQ(p->data, "index=off,workdir=/s/2/work,upperdir=/s/2/fs,lowerdir=/s/1/fs");
  EXPECT_FALSE(p->remount_readonly);
}

TEST(PlanMountTest, ReadOnlyOverlayHasNoUpper) {
  absl::StatusOr<MountPlan> p = PlanMount(M("overlay", "overlay", {"lowerdir=/s/2/fs:/s/1/fs", "ro"}));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->flags, static_cast<unsigned long>(MS_RDONLY));
  EXPECT_EQ(p->data, "lowerdir=/s/2/fs:/s/1/fs");
}

TEST(PlanMountTest, BindFromTheNativeSnapshotter) {
  absl::StatusOr<MountPlan> p = PlanMount(M("bind", "/s/3/fs", {"rbind", "ro"}));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->flags, static_cast<unsigned long>(MS_BIND | MS_REC | MS_RDONLY));
  EXPECT_TRUE(p->remount_readonly);
  EXPECT_EQ(p->data, "");
  p = PlanMount(M("bind", "/s/3/fs", {"rbind", "rw", "rprivate"}));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->flags, static_cast<unsigned long>(MS_BIND | MS_REC));
  EXPECT_EQ(p->propagation, static_cast<unsigned long>(MS_PRIVATE | MS_REC));
  EXPECT_FALSE(p->remount_readonly);
}

TEST(PlanMountTest, ClearingWords) {
  absl::StatusOr<MountPlan> p = PlanMount(M("ext4", "/dev/vdb", {"ro", "nodev", "rw", "dev", "noatime"}));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->flags, static_cast<unsigned long>(MS_NOATIME));
}

TEST(PlanMountTest, Rejects) {
  EXPECT_EQ(PlanMount(M("", "x", {})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanMount(M("overlay", "overlay", {"upperdir=/a", "workdir=/b"})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanMount(M("overlay", "overlay", {"lowerdir=/a,upperdir=/b"})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanMount(M("bind", "relative/dir", {"rbind"})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanMount(M("overlay", "overlay", {"lowerdir=" + std::string(5000, 'a')})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Real mounts (root only): an overlay and a read-only bind on a target, then UnmountAll.
class MountAllTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    char tmpl[] = "/tmp/vessel-shim-mounts-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    for (const char* d : {"lower", "upper", "work", "target"}) std::filesystem::create_directory(dir_ + "/" + d);
    std::ofstream(dir_ + "/lower/hello") << "hi";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    (void)UnmountAll(dir_ + "/target");
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(MountAllTest, OverlayThenUnmount) {
  std::vector<containerd::types::Mount> mounts = {
      M("overlay", "overlay",
        {"workdir=" + dir_ + "/work", "upperdir=" + dir_ + "/upper", "lowerdir=" + dir_ + "/lower"})};
  ASSERT_TRUE(MountAll(mounts, dir_ + "/target").ok());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/target/hello"));
  std::ofstream(dir_ + "/target/new") << "x";
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/upper/new"));
  ASSERT_TRUE(UnmountAll(dir_ + "/target").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/target/hello"));
  EXPECT_TRUE(UnmountAll(dir_ + "/target").ok());  // nothing mounted is fine
}

TEST_F(MountAllTest, ReadOnlyBind) {
  ASSERT_TRUE(MountAll({M("bind", dir_ + "/lower", {"rbind", "ro"})}, dir_ + "/target").ok());
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/target/hello"));
  std::ofstream out(dir_ + "/target/nope");
  EXPECT_FALSE(out.good());
  ASSERT_TRUE(UnmountAll(dir_ + "/target").ok());
}

TEST_F(MountAllTest, FailureNamesTheMount) {
  absl::Status s = MountAll({M("overlay", "overlay", {"lowerdir=" + dir_ + "/missing"})}, dir_ + "/target");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mount overlay"), std::string::npos) << s;
}

}  // namespace
}  // namespace vessel::shim
