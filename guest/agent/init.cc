#include "guest/agent/init.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

struct EarlyMount {
  const char* source;
  const char* target;
  const char* fstype;
  unsigned long flags;
  const char* data;
};

constexpr EarlyMount kEarlyMounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
    {"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
    {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
};

}  // namespace

// The initramfs is the root mount itself, which pivot_root(2) cannot move (EINVAL: no parent).
// Like switch_root, put a bind mount of it on top of "/" and chroot into that: containers can then
// pivot_root away from it.
absl::Status LeaveInitramfsRoot() {
  struct statfs fs;
  if (::statfs("/", &fs) != 0) return ErrnoStatus("statfs /");
  if (fs.f_type != RAMFS_MAGIC && fs.f_type != TMPFS_MAGIC) return absl::OkStatus();
  VESSEL_RETURN_IF_ERROR(MkdirAll("/.agent-root"));
  if (::mount("/", "/.agent-root", nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return ErrnoStatus("bind / on /.agent-root");
  }
  if (::chdir("/.agent-root") != 0) return ErrnoStatus("chdir /.agent-root");
  if (::mount("/.agent-root", "/", nullptr, MS_MOVE, nullptr) != 0) {
    return ErrnoStatus("move /.agent-root onto /");
  }
  if (::chroot(".") != 0) return ErrnoStatus("chroot into the bound root");
  if (::chdir("/") != 0) return ErrnoStatus("chdir /");
  return absl::OkStatus();
}

absl::Status InitGuestFilesystems() {
  VESSEL_RETURN_IF_ERROR(LeaveInitramfsRoot());
  for (const EarlyMount& m : kEarlyMounts) {
    VESSEL_RETURN_IF_ERROR(MkdirAll(m.target));
    if (::mount(m.source, m.target, m.fstype, m.flags, m.data) != 0 && errno != EBUSY) {
      return ErrnoStatus(absl::StrCat("mount ", m.fstype, " on ", m.target));
    }
  }
  // /dev/ptmx of the devpts instance.
  ::unlink("/dev/ptmx");
  if (::symlink("pts/ptmx", "/dev/ptmx") != 0 && errno != EEXIST)
    return ErrnoStatus("symlink /dev/ptmx");
  if (::fcntl(0, F_GETFD) < 0) {
    int fd = ::open("/dev/console", O_RDWR);
    if (fd >= 0) {
      ::dup2(fd, 0);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (fd > 2) ::close(fd);
    }
  }
  return absl::OkStatus();
}

void PowerOff() {
  ::sync();
  int fd = ::open("/dev/port", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    unsigned char value = 0x34;
    ssize_t unused = ::pwrite(fd, &value, 1, 0x600);
    (void)unused;
    ::close(fd);
  }
  ::reboot(RB_POWER_OFF);
  for (;;) ::pause();
}

}  // namespace vessel::agent
