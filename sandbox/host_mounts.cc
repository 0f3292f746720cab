#include "sandbox/host_mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/errors.h"

namespace vessel::sandbox {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      bool octal = true;
      int v = 0;
      for (size_t k = 1; k <= 3 && octal; ++k) {
        octal = i + k < s.size() && s[i + k] >= '0' && s[i + k] <= '7';
        if (octal) v = v * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The mount points of this process at or below `dir` (from /proc/self/mountinfo). mountinfo
// names them by their resolved absolute path, so `dir` is resolved too: a relative path or one
// through a symlink (/var/run -> /run) would otherwise never match and hide its mounts.
std::vector<std::string> MountPointsUnder(const std::string& dir) {
  std::vector<std::string> prefixes;
  auto add = [&prefixes](const std::filesystem::path& p) {
    std::string prefix = p.lexically_normal().string();
    while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
    if (!prefix.empty()) prefixes.push_back(std::move(prefix));
  };
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(dir, ec);
  if (ec) absolute = dir;
  add(absolute);
  std::filesystem::path canonical = std::filesystem::weakly_canonical(absolute, ec);
  if (!ec) add(canonical);
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    std::string mount_point = Unescape(fields[4]);
    for (const std::string& prefix : prefixes) {
      if (mount_point == prefix || prefix == "/" || mount_point.rfind(prefix + "/", 0) == 0) {
        out.push_back(mount_point);
        break;
      }
    }
  }
  return out;
}

// Makes the bind mount at `target` and every mount below it read-only. MS_REMOUNT|MS_RDONLY only
// changes the top mount of a recursive bind: a submount of the source (a volume, a tmpfs) would
// stay writable through it.
absl::Status MakeReadOnly(const std::string& target) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (::mount_setattr(AT_FDCWD, target.c_str(), AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr,
                      sizeof(attr)) == 0) {
    return absl::OkStatus();
  }
  // Before Linux 5.12 (ENOSYS), or filtered by a seccomp profile (EPERM): each mount on its own.
  if (errno != ENOSYS && errno != EPERM) return ErrnoStatus("make " + target + " read-only");
  for (const std::string& m : MountPointsUnder(target)) {
    if (::mount(nullptr, m.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      return ErrnoStatus("remount read-only " + m);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status BindMount(const std::string& source, const std::string& target, bool readonly) {
  struct stat st;
  if (::stat(source.c_str(), &st) != 0) return ErrnoStatus("bind mount source " + source);
  // mount(2) follows a symlink at the target: one planted there (the share is writable by the
  // guest) must not redirect the bind mount elsewhere on the host.
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + target);
    struct stat tst;
    if (::lstat(target.c_str(), &tst) != 0) return ErrnoStatus("bind mount point " + target);
    if (!S_ISDIR(tst.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("bind mount point ", target, " exists and is not a directory"));
    }
  } else {
    int fd = ::open(target.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus("create bind mount point " + target);
    ::close(fd);
  }
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    absl::Status s = ErrnoStatus(absl::StrCat("bind mount ", source, " on ", target));
    (void)UnmountAndRemove(target);
    return s;
  }
  // Our copy must not propagate back into the source's peer group, nor theirs into ours.
  (void)::mount(nullptr, target.c_str(), nullptr, MS_PRIVATE | MS_REC, nullptr);
  if (readonly) {
    absl::Status s = MakeReadOnly(target);
    if (!s.ok()) {
      (void)UnmountAndRemove(target);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status UnmountAndRemove(const std::string& target) {
  // A recursive bind mount is one mount tree: detaching the top takes the submounts with it.
  if (::umount2(target.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return ErrnoStatus("unmount " + target);
  }
  if (HasMountsUnder(target)) {
    return absl::FailedPreconditionError(
        absl::StrCat(target, " is still a mount point after unmounting it: leaving it in place"));
  }
  if (::rmdir(target.c_str()) != 0 && errno == ENOTDIR) ::unlink(target.c_str());
  return absl::OkStatus();
}

bool HasMountsUnder(const std::string& dir) { return !MountPointsUnder(dir).empty(); }

absl::Status RemoveTreeIfUnmounted(const std::string& dir) {
  if (HasMountsUnder(dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "not removing ", dir, ": something is still mounted below it (see /proc/self/mountinfo)"));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace vessel::sandbox
