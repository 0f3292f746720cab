// host_mounts: real bind mounts in a scratch directory (root with mount permission; skipped
// otherwise). The critical property: removing a sandbox directory never deletes through a bind
// mount into the user's files.
#include "sandbox/host_mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel::sandbox {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// errno of creating (O_CREAT) and writing `path`; 0 on success.
int WriteErrno(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  int err = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return err;
}

class HostMountsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Our own mount namespace: nothing we mount (or forget to unmount on a failure) leaks into
    // the host's, and propagation from it cannot reach us.
    if (::geteuid() != 0) {
      skip_reason_ = "needs root (bind mounts)";
      return;
    }
    // unshare fails (EINVAL) once the process has threads; then the scratch directory in the
    // host namespace is all we touch, and TearDown unmounts what a failed test left.
    if (::unshare(CLONE_NEWNS) == 0) {
      ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
    }
    std::string probe_dir = ::testing::TempDir() + "vessel_mount_probe_XXXXXX";
    if (::mkdtemp(probe_dir.data()) == nullptr) {
      skip_reason_ = "mkdtemp failed";
      return;
    }
    if (::mount("tmpfs", probe_dir.c_str(), "tmpfs", 0, "size=4k") != 0) {
      skip_reason_ = std::string("no mount permission: ") + std::strerror(errno);
    } else {
      ::umount2(probe_dir.c_str(), MNT_DETACH);
    }
    ::rmdir(probe_dir.c_str());
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    std::string tmpl = ::testing::TempDir() + "vessel host mounts_XXXXXX";  // a space: \040
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = std::filesystem::canonical(tmpl).string();
    source_ = dir_ + "/source";
    share_ = dir_ + "/share";
    ASSERT_EQ(::mkdir(source_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((source_ + "/sub").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(share_.c_str(), 0755), 0);
    WriteFile(source_ + "/file.txt", "hello");
    WriteFile(source_ + "/sub/deep.txt", "deep");
  }

  void TearDown() override {
    if (dir_.empty()) return;
    // Best effort; detach anything a failed test left mounted, then remove.
    for (int i = 0; i < 8 && HasMountsUnder(dir_); ++i) {
      std::ifstream in("/proc/self/mountinfo");
      std::string line, last;
      while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string f[5];
        for (std::string& x : f) fields >> x;
        if (f[4].find("vessel\\040host") != std::string::npos) last = f[4];
      }
      if (last.empty()) break;
      std::string unescaped;
      for (size_t k = 0; k < last.size(); ++k) {
        if (last.compare(k, 4, "\\040") == 0) {
          unescaped.push_back(' ');
          k += 3;
        } else {
          unescaped.push_back(last[k]);
        }
      }
      ::umount2(unescaped.c_str(), MNT_DETACH);
    }
    if (!HasMountsUnder(dir_)) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  static std::string skip_reason_;
  std::string dir_;
  std::string source_;
  std::string share_;
};

std::string HostMountsTest::skip_reason_;

TEST_F(HostMountsTest, BindMountDirectory) {
  std::string target = share_ + "/rootfs";
  ASSERT_TRUE(BindMount(source_, target, /*readonly=*/false).ok());
  EXPECT_EQ(ReadFile(target + "/file.txt"), "hello");
  EXPECT_EQ(ReadFile(target + "/sub/deep.txt"), "deep");
  // Writable both ways.
  WriteFile(target + "/new.txt", "via bind");
  EXPECT_EQ(ReadFile(source_ + "/new.txt"), "via bind");
  EXPECT_TRUE(HasMountsUnder(share_));
  EXPECT_TRUE(HasMountsUnder(target));

  ASSERT_TRUE(UnmountAndRemove(target).ok());
  EXPECT_FALSE(Exists(target));
  EXPECT_FALSE(HasMountsUnder(share_));
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
}

TEST_F(HostMountsTest, BindMountFile) {
  std::string target = share_ + "/hosts";
  ASSERT_TRUE(BindMount(source_ + "/file.txt", target, /*readonly=*/false).ok());
  struct stat st;
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(ReadFile(target), "hello");
  WriteFile(target, "changed");
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "changed");
  EXPECT_TRUE(HasMountsUnder(target));

  ASSERT_TRUE(UnmountAndRemove(target).ok());
  EXPECT_FALSE(Exists(target));
  EXPECT_TRUE(Exists(source_ + "/file.txt"));
}

TEST_F(HostMountsTest, ReadOnlyBindIsReadOnlyButSourceStaysWritable) {
  std::string target = share_ + "/ro";
  ASSERT_TRUE(BindMount(source_, target, /*readonly=*/true).ok());
  EXPECT_EQ(ReadFile(target + "/file.txt"), "hello");
  EXPECT_EQ(WriteErrno(target + "/file.txt"), EROFS);
  EXPECT_EQ(WriteErrno(target + "/created.txt"), EROFS);
  EXPECT_EQ(WriteErrno(target + "/sub/deep.txt"), EROFS);
  EXPECT_EQ(::mkdir((target + "/d").c_str(), 0755), -1);
  EXPECT_EQ(errno, EROFS);
  // The source itself is untouched and writable; the change shows through the bind.
  EXPECT_EQ(WriteErrno(source_ + "/file.txt"), 0);
  EXPECT_EQ(ReadFile(target + "/file.txt"), "x");
  ASSERT_TRUE(UnmountAndRemove(target).ok());
}

TEST_F(HostMountsTest, ReadOnlyBindFile) {
  std::string target = share_ + "/ro-file";
  ASSERT_TRUE(BindMount(source_ + "/file.txt", target, /*readonly=*/true).ok());
  EXPECT_EQ(WriteErrno(target), EROFS);
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
  EXPECT_EQ(WriteErrno(source_ + "/file.txt"), 0);
  ASSERT_TRUE(UnmountAndRemove(target).ok());
}

TEST_F(HostMountsTest, ReadOnlyBindCoversSubmounts) {
  // The source has a mount of its own below it (a volume, a tmpfs): the recursive bind takes it
  // along, and it must be read-only through the bind too.
  std::string sub = source_ + "/sub";
  ASSERT_EQ(::mount("tmpfs", sub.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  WriteFile(sub + "/on-tmpfs.txt", "tmpfs");
  std::string target = share_ + "/ro";
  ASSERT_TRUE(BindMount(source_, target, /*readonly=*/true).ok());
  EXPECT_EQ(ReadFile(target + "/sub/on-tmpfs.txt"), "tmpfs");
  EXPECT_EQ(WriteErrno(target + "/sub/on-tmpfs.txt"), EROFS);
  EXPECT_EQ(WriteErrno(target + "/sub/new.txt"), EROFS);
  EXPECT_EQ(WriteErrno(sub + "/on-tmpfs.txt"), 0);  // still writable at the source
  ASSERT_TRUE(UnmountAndRemove(target).ok());
  EXPECT_FALSE(Exists(target));
  ASSERT_EQ(::umount2(sub.c_str(), 0), 0);
}

TEST_F(HostMountsTest, BindMountErrors) {
  absl::Status status = BindMount(dir_ + "/no-such-source", share_ + "/x", false);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("no-such-source"));
  EXPECT_FALSE(Exists(share_ + "/x"));

  // The target's parent must exist.
  status = BindMount(source_, share_ + "/missing/rootfs", false);
  EXPECT_FALSE(status.ok());
  EXPECT_FALSE(HasMountsUnder(share_));
}

TEST_F(HostMountsTest, BindMountDoesNotFollowASymlinkAtTheTarget) {
  // A symlink planted where the mount point goes must not redirect the bind mount.
  std::string elsewhere = dir_ + "/elsewhere";
  ASSERT_EQ(::mkdir(elsewhere.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), (share_ + "/rootfs").c_str()), 0);
  EXPECT_FALSE(BindMount(source_, share_ + "/rootfs", false).ok());
  EXPECT_FALSE(HasMountsUnder(elsewhere));

  ASSERT_EQ(::symlink((elsewhere + "/f").c_str(), (share_ + "/hosts").c_str()), 0);
  EXPECT_FALSE(BindMount(source_ + "/file.txt", share_ + "/hosts", false).ok());
  EXPECT_FALSE(Exists(elsewhere + "/f"));
  EXPECT_FALSE(HasMountsUnder(share_));
}

TEST_F(HostMountsTest, UnmountAndRemoveOfAPlainPathIsFine) {
  std::string empty = share_ + "/empty";
  ASSERT_EQ(::mkdir(empty.c_str(), 0755), 0);
  EXPECT_TRUE(UnmountAndRemove(empty).ok());
  EXPECT_FALSE(Exists(empty));
  EXPECT_TRUE(UnmountAndRemove(share_ + "/never-existed").ok());
}

TEST_F(HostMountsTest, HasMountsUnder) {
  std::string target = share_ + "/c1/rootfs";
  ASSERT_EQ(::mkdir((share_ + "/c1").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((share_ + "/c2").c_str(), 0755), 0);
  EXPECT_FALSE(HasMountsUnder(share_));
  ASSERT_TRUE(BindMount(source_, target, false).ok());
  // dir_ has a space: mountinfo writes it as \040.
  ASSERT_NE(dir_.find(' '), std::string::npos);
  EXPECT_TRUE(HasMountsUnder(dir_));
  EXPECT_TRUE(HasMountsUnder(share_));
  EXPECT_TRUE(HasMountsUnder(share_ + "/"));
  EXPECT_TRUE(HasMountsUnder(share_ + "//c1/./"));
  EXPECT_TRUE(HasMountsUnder(target));
  EXPECT_FALSE(HasMountsUnder(share_ + "/c2"));
  EXPECT_FALSE(HasMountsUnder(share_ + "/c"));  // a prefix of "c1", not a parent
  EXPECT_FALSE(HasMountsUnder(target + "/sub"));
  EXPECT_FALSE(HasMountsUnder(source_));
  ASSERT_TRUE(UnmountAndRemove(target).ok());
  EXPECT_FALSE(HasMountsUnder(share_));
}

TEST_F(HostMountsTest, HasMountsUnderResolvesSymlinksAndRelativePaths) {
  std::string target = share_ + "/rootfs";
  ASSERT_TRUE(BindMount(source_, target, false).ok());
  // The sandbox's state_dir may be reached through a symlink (/var/run -> /run).
  std::string link = dir_ + "/link-to-share";
  ASSERT_EQ(::symlink(share_.c_str(), link.c_str()), 0);
  EXPECT_TRUE(HasMountsUnder(link));
  EXPECT_TRUE(HasMountsUnder(link + "/rootfs"));

  std::filesystem::path old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_);
  bool relative = HasMountsUnder("share");
  bool relative_dot = HasMountsUnder("./share/rootfs");
  std::filesystem::current_path(old_cwd);
  EXPECT_TRUE(relative);
  EXPECT_TRUE(relative_dot);

  // And so must the removal: through the symlink it must refuse, not delete the source's files.
  EXPECT_EQ(RemoveTreeIfUnmounted(link + "/rootfs").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
  EXPECT_EQ(ReadFile(source_ + "/sub/deep.txt"), "deep");
  ASSERT_TRUE(UnmountAndRemove(target).ok());
}

TEST_F(HostMountsTest, RemoveTreeIfUnmountedNeverDeletesThroughABindMount) {
  std::string sandbox = share_ + "/sandbox";
  ASSERT_EQ(::mkdir(sandbox.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((sandbox + "/c1").c_str(), 0755), 0);
  WriteFile(sandbox + "/console.log", "boot");
  std::string rootfs = sandbox + "/c1/rootfs";
  ASSERT_TRUE(BindMount(source_, rootfs, false).ok());
  ASSERT_TRUE(BindMount(source_ + "/file.txt", sandbox + "/c1/hosts", true).ok());

  absl::Status status = RemoveTreeIfUnmounted(sandbox);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("still mounted"));
  // Nothing was deleted: neither the source's files nor the sandbox's own.
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
  EXPECT_EQ(ReadFile(source_ + "/sub/deep.txt"), "deep");
  EXPECT_EQ(ReadFile(rootfs + "/file.txt"), "hello");
  EXPECT_EQ(ReadFile(sandbox + "/console.log"), "boot");
  EXPECT_EQ(RemoveTreeIfUnmounted(rootfs).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Exists(source_ + "/file.txt"));

  ASSERT_TRUE(UnmountAndRemove(rootfs).ok());
  // One mount is still below.
  EXPECT_EQ(RemoveTreeIfUnmounted(sandbox).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
  ASSERT_TRUE(UnmountAndRemove(sandbox + "/c1/hosts").ok());

  EXPECT_TRUE(RemoveTreeIfUnmounted(sandbox).ok());
  EXPECT_FALSE(Exists(sandbox));
  EXPECT_EQ(ReadFile(source_ + "/file.txt"), "hello");
  EXPECT_EQ(ReadFile(source_ + "/sub/deep.txt"), "deep");
  EXPECT_TRUE(RemoveTreeIfUnmounted(sandbox).ok());  // already gone
}

TEST_F(HostMountsTest, UnmountAndRemoveWithStackedMountsLeavesThePoint) {
  std::string target = share_ + "/stacked";
  ASSERT_TRUE(BindMount(source_, target, false).ok());
  ASSERT_EQ(::mount(source_.c_str(), target.c_str(), nullptr, MS_BIND, nullptr), 0);
  // One detach leaves the lower mount in place: refuse to remove the mount point.
  absl::Status status = UnmountAndRemove(target);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(Exists(target + "/file.txt"));
  EXPECT_TRUE(UnmountAndRemove(target).ok());
  EXPECT_FALSE(Exists(target));
  EXPECT_TRUE(Exists(source_ + "/file.txt"));
}

}  // namespace
}  // namespace vessel::sandbox
