#include "guest/agent/mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

constexpr const char* kMaskedPaths[] = {
    "/proc/acpi",          "/proc/asound",     "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",          "/sys/firmware"};
constexpr const char* kDefaultDevices[] = {"null", "zero", "full", "random", "urandom", "tty"};
constexpr std::pair<const char*, const char*> kDefaultDevLinks[] = {
    {"fd", "/proc/self/fd"},          {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"},    {"ptmx", "pts/ptmx"},         {"core", "/proc/kcore"}};
constexpr const char* kReadonlyPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                          "/proc/sysrq-trigger"};

struct ParsedOptions {
  unsigned long flags = 0;
  unsigned long propagation = 0;
  std::vector<std::string> data;
};

ParsedOptions ParseOptions(const google::protobuf::RepeatedPtrField<std::string>& options) {
  struct Flag {
    const char* name;
    bool clear;
    unsigned long flag;
  };
  static constexpr Flag kFlags[] = {
      {"ro", false, MS_RDONLY},         {"rw", true, MS_RDONLY},
      {"nosuid", false, MS_NOSUID},     {"suid", true, MS_NOSUID},
      {"nodev", false, MS_NODEV},       {"dev", true, MS_NODEV},
      {"noexec", false, MS_NOEXEC},     {"exec", true, MS_NOEXEC},
      {"sync", false, MS_SYNCHRONOUS},  {"async", true, MS_SYNCHRONOUS},
      {"dirsync", false, MS_DIRSYNC},   {"noatime", false, MS_NOATIME},
      {"atime", true, MS_NOATIME},      {"nodiratime", false, MS_NODIRATIME},
      {"relatime", false, MS_RELATIME}, {"strictatime", false, MS_STRICTATIME},
      {"bind", false, MS_BIND},         {"rbind", false, MS_BIND | MS_REC},
  };
  static constexpr Flag kPropagation[] = {
      {"private", false, MS_PRIVATE}, {"rprivate", false, MS_PRIVATE | MS_REC},
      {"shared", false, MS_SHARED},   {"rshared", false, MS_SHARED | MS_REC},
      {"slave", false, MS_SLAVE},     {"rslave", false, MS_SLAVE | MS_REC},
  };
  ParsedOptions out;
  for (const std::string& option : options) {
    bool known = false;
    for (const Flag& f : kFlags) {
      if (option == f.name) {
        known = true;
        if (f.clear) {
          out.flags &= ~f.flag;
        } else {
          out.flags |= f.flag;
        }
      }
    }
    for (const Flag& f : kPropagation) {
      if (option == f.name) {
        known = true;
        out.propagation = f.flag;
      }
    }
    if (!known) out.data.push_back(option);
  }
  return out;
}

void AddParents(const std::string& rootfs, absl::string_view dest, bool last_is_file,
                std::vector<MountStep>& steps) {
  std::vector<absl::string_view> parts = absl::StrSplit(dest, '/', absl::SkipEmpty());
  std::string path = rootfs;
  for (size_t i = 0; i < parts.size(); ++i) {
    absl::StrAppend(&path, "/", parts[i]);
    MountStep step;
    step.kind =
        (i + 1 == parts.size() && last_is_file) ? MountStep::Kind::kTouch : MountStep::Kind::kMkdir;
    step.target = path;
    step.what = absl::StrCat(step.kind == MountStep::Kind::kTouch ? "create " : "mkdir ",
                             path.substr(rootfs.size()));
    steps.push_back(std::move(step));
  }
}

}  // namespace

absl::StatusOr<RootfsPlan> PlanRootfs(const std::string& root, const std::string& rootfs,
                                      bool readonly,
                                      const google::protobuf::RepeatedPtrField<v1::Mount>& mounts) {
  VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("rootfs", rootfs));
  RootfsPlan plan;
  plan.rootfs = UnderRoot(root, rootfs);
  plan.readonly = readonly;
  struct stat st;
  if (::stat(plan.rootfs.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("rootfs ", rootfs, " is not a directory"));
  }
  // The rootfs becomes a mount of its own (pivot_root needs one).
  plan.steps.push_back({MountStep::Kind::kMount, plan.rootfs, plan.rootfs, "", "", MS_BIND | MS_REC,
                        absl::StrCat("bind rootfs ", rootfs)});
  for (const v1::Mount& m : mounts) {
    VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("mount destination", m.destination()));
    if (m.destination() == "/" || absl::StripTrailingAsciiWhitespace(m.destination()).empty()) {
      return absl::InvalidArgumentError("a mount destination of / is not allowed");
    }
    ParsedOptions opts = ParseOptions(m.options());
    std::string type = m.type();
    if (type == "none" && (opts.flags & MS_BIND)) type = "bind";
    if (type == "bind") opts.flags |= MS_BIND;
    std::string target = absl::StrCat(plan.rootfs, m.destination());
    std::string what = absl::StrCat("mount ", type, " on ", m.destination());
    if (type == "bind") {
      VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("bind mount source", m.source()));
      std::string source = UnderRoot(root, m.source());
      if (::stat(source.c_str(), &st) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("bind mount source ", m.source(), " for ",
                                                       m.destination(), " does not exist"));
      }
      AddParents(plan.rootfs, m.destination(), !S_ISDIR(st.st_mode), plan.steps);
      plan.steps.push_back(
          {MountStep::Kind::kMount, source, target, "", "", MS_BIND | (opts.flags & MS_REC), what});
      unsigned long remount = opts.flags & ~(MS_BIND | MS_REC);
      if (remount != 0) {
        plan.steps.push_back({MountStep::Kind::kMount, "", target, "", "",
                              MS_BIND | MS_REMOUNT | remount,
                              absl::StrCat("remount bind ", m.destination(), " with its options")});
      }
    } else if (type == "proc" || type == "sysfs" || type == "tmpfs" || type == "devpts" ||
               type == "mqueue" || type == "cgroup2" || type == "cgroup") {
      if (type == "cgroup") type = "cgroup2";
      AddParents(plan.rootfs, m.destination(), false, plan.steps);
      std::string source = m.source().empty() ? type : m.source();
      plan.steps.push_back({MountStep::Kind::kMount, source, target, type,
                            absl::StrJoin(opts.data, ","), opts.flags & ~(MS_BIND | MS_REC), what});
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("mount type '", absl::CEscape(type), "' for ", m.destination(),
                       " is not supported (proc, sysfs, tmpfs, devpts, mqueue, "
                       "cgroup2, bind)"));
    }
    if (opts.propagation != 0) {
      plan.steps.push_back({MountStep::Kind::kMount, "", target, "", "", opts.propagation,
                            absl::StrCat("set propagation of ", m.destination())});
    }
  }
  // A tmpfs /dev (every runc-style spec has one) gets the devices and links programs expect, as
  // runc creates them: the device nodes bind-mounted from the agent's /dev (no mknod needed).
  bool dev_tmpfs = false;
  for (const v1::Mount& m : mounts) {
    dev_tmpfs = dev_tmpfs || (m.destination() == "/dev" && m.type() == "tmpfs");
  }
  if (dev_tmpfs) {
    for (const char* name : kDefaultDevices) {
      std::string dest = absl::StrCat("/dev/", name);
      std::string target = absl::StrCat(plan.rootfs, dest);
      plan.steps.push_back({MountStep::Kind::kTouch, "", target, "", "", 0, "create " + dest});
      plan.steps.push_back({MountStep::Kind::kMount, dest, target, "", "", MS_BIND,
                            absl::StrCat("bind device ", dest)});
    }
    for (const auto& [name, link] : kDefaultDevLinks) {
      plan.steps.push_back({MountStep::Kind::kSymlink, link, absl::StrCat(plan.rootfs, "/dev/", name),
                            "", "", 0, absl::StrCat("symlink /dev/", name)});
    }
  }
  for (const char* path : kMaskedPaths) {
    plan.steps.push_back({MountStep::Kind::kMask, "/dev/null", absl::StrCat(plan.rootfs, path),
                          "tmpfs", "", 0, absl::StrCat("mask ", path)});
  }
  for (const char* path : kReadonlyPaths) {
    plan.steps.push_back({MountStep::Kind::kReadonly, "", absl::StrCat(plan.rootfs, path), "", "",
                          0, absl::StrCat("make ", path, " read-only")});
  }
  const std::string prefix = plan.rootfs + "/";
  for (size_t i = 1; i < plan.steps.size(); ++i) {
    MountStep& step = plan.steps[i];
    if (!absl::StartsWith(step.target, prefix)) continue;
    step.rel = step.target.substr(prefix.size());
    size_t slash = step.rel.rfind('/');
    step.rel_parent = slash == std::string::npos ? "" : step.rel.substr(0, slash);
    step.name = slash == std::string::npos ? step.rel : step.rel.substr(slash + 1);
  }
  return plan;
}

namespace {

// openat2(root_fd, rel, RESOLVE_IN_ROOT): "/" and ".." (also through symlinks) stay in the rootfs.
int OpenInRoot(int root_fd, const std::string& rel, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(
      ::syscall(SYS_openat2, root_fd, rel.empty() ? "." : rel.c_str(), &how, sizeof(how)));
}

// "/proc/self/fd/<fd>" into buf, without allocating.
const char* FdPath(int fd, char (&buf)[32]) {
  static constexpr char kPrefix[] = "/proc/self/fd/";
  char digits[12];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + fd % 10);
    fd /= 10;
  } while (fd > 0 && n < 11);
  size_t len = sizeof(kPrefix) - 1;
  std::memcpy(buf, kPrefix, len);
  while (n > 0) buf[len++] = digits[--n];
  buf[len] = '\0';
  return buf;
}

int MountOn(const MountStep& step, const char* target) {
  if (::mount(step.source.empty() ? nullptr : step.source.c_str(), target,
              step.fstype.empty() ? nullptr : step.fstype.c_str(), step.flags,
              step.data.empty() ? nullptr : step.data.c_str()) != 0) {
    return errno;
  }
  return 0;
}

int RunStep(const MountStep& step, int root_fd) {
  char path[32];
  switch (step.kind) {
    case MountStep::Kind::kSymlink: {
      int parent = OpenInRoot(root_fd, step.rel_parent, O_PATH | O_DIRECTORY);
      if (parent < 0) return errno;
      int rc = ::symlinkat(step.source.c_str(), parent, step.name.c_str()) != 0 && errno != EEXIST
                   ? errno
                   : 0;
      ::close(parent);
      return rc;
    }
    case MountStep::Kind::kMkdir:
    case MountStep::Kind::kTouch: {
      int parent = OpenInRoot(root_fd, step.rel_parent, O_PATH | O_DIRECTORY);
      if (parent < 0) return errno;
      int rc = 0;
      if (step.kind == MountStep::Kind::kMkdir) {
        if (::mkdirat(parent, step.name.c_str(), 0755) != 0 && errno != EEXIST) rc = errno;
      } else {
        int fd =
            ::openat(parent, step.name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) {
          ::close(fd);
        } else if (errno != EISDIR) {
          rc = errno;
        }
      }
      ::close(parent);
      return rc;
    }
    case MountStep::Kind::kMount: {
      if (step.rel.empty()) return MountOn(step, step.target.c_str());
      int fd = OpenInRoot(root_fd, step.rel, O_PATH);
      if (fd < 0) return errno;
      int rc = MountOn(step, FdPath(fd, path));
      ::close(fd);
      return rc;
    }
    case MountStep::Kind::kMask: {
      int fd = OpenInRoot(root_fd, step.rel, O_PATH);
      if (fd < 0) return errno == ENOENT ? 0 : errno;
      struct stat st;
      int rc = 0;
      if (::fstat(fd, &st) != 0) {
        rc = errno;
      } else if ((S_ISDIR(st.st_mode)
                      ? ::mount("tmpfs", FdPath(fd, path), "tmpfs", MS_RDONLY, nullptr)
                      : ::mount("/dev/null", FdPath(fd, path), nullptr, MS_BIND, nullptr)) != 0) {
        rc = errno;
      }
      ::close(fd);
      return rc;
    }
    case MountStep::Kind::kReadonly: {
      int fd = OpenInRoot(root_fd, step.rel, O_PATH);
      if (fd < 0) return errno == ENOENT ? 0 : errno;
      FdPath(fd, path);
      int rc = ::mount(path, path, nullptr, MS_BIND | MS_REC, nullptr) != 0 ? errno : 0;
      ::close(fd);
      if (rc != 0) return rc;
      // Again: the new bind mount is now on top of that path.
      fd = OpenInRoot(root_fd, step.rel, O_PATH);
      if (fd < 0) return errno;
      rc = ::mount(nullptr, FdPath(fd, path), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC,
                   nullptr) != 0
               ? errno
               : 0;
      ::close(fd);
      return rc;
    }
  }
  return EINVAL;
}

}  // namespace

int RunMountSteps(const RootfsPlan& plan, const MountStep** failed) {
  int root_fd = -1;
  for (const MountStep& step : plan.steps) {
    *failed = &step;
    if (!step.rel.empty() || step.kind != MountStep::Kind::kMount) {
      // Opened after the rootfs bind (the first step), so that it refers to that mount.
      if (root_fd < 0) root_fd = ::open(plan.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (root_fd < 0) return errno;
    }
    int err = RunStep(step, root_fd);
    if (err != 0) return err;
  }
  if (root_fd >= 0) ::close(root_fd);
  *failed = nullptr;
  return 0;
}

absl::StatusOr<std::string> MountStorage(const std::string& root, const v1::Storage& storage) {
  VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("storage mount_point", storage.mount_point()));
  std::string mount_point = UnderRoot(root, storage.mount_point());
  ParsedOptions opts = ParseOptions(storage.options());
  std::string source, fstype;
  unsigned long flags = opts.flags & ~(MS_BIND | MS_REC);
  const std::string& driver = storage.driver();
  if (driver == "bind") {
    VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("bind storage source", storage.source()));
    source = UnderRoot(root, storage.source());
    struct stat st;
    if (::stat(source.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bind storage source ", storage.source(), " is not a directory"));
    }
  } else if (driver == "tmpfs") {
    source = "tmpfs";
    fstype = "tmpfs";
  } else if (driver == "virtio-fs") {
    if (storage.source().empty())
      return absl::InvalidArgumentError("virtio-fs storage needs a tag in source");
    source = storage.source();
    fstype = storage.fstype().empty() ? "virtiofs" : storage.fstype();
  } else if (driver == "virtio-blk") {
    if (storage.fstype().empty())
      return absl::InvalidArgumentError("virtio-blk storage needs an fstype");
    fstype = storage.fstype();
    if (absl::StartsWith(storage.source(), "/dev/")) {
      VESSEL_RETURN_IF_ERROR(ValidateAbsolutePath("virtio-blk source", storage.source()));
      source = storage.source();
    } else {
      // A serial: find the disk whose /sys/block/<vdX>/serial matches.
      DIR* dir = ::opendir("/sys/block");
      if (dir != nullptr) {
        while (dirent* e = ::readdir(dir)) {
          absl::StatusOr<std::string> serial =
              ReadSmallFile(absl::StrCat("/sys/block/", e->d_name, "/serial"));
          if (serial.ok() && absl::StripTrailingAsciiWhitespace(*serial) == storage.source()) {
            source = absl::StrCat("/dev/", e->d_name);
          }
        }
        ::closedir(dir);
      }
      if (source.empty()) {
        return absl::NotFoundError(
            absl::StrCat("no virtio-blk disk has serial '", absl::CEscape(storage.source()), "'"));
      }
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("storage driver '", absl::CEscape(driver),
                     "' is not supported (bind, tmpfs, virtio-fs, virtio-blk)"));
  }
  VESSEL_RETURN_IF_ERROR(MkdirAll(mount_point));
  std::string data = absl::StrJoin(opts.data, ",");
  if (driver == "bind") {
    if (::mount(source.c_str(), mount_point.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      return ErrnoStatus(
          absl::StrCat("bind storage ", storage.source(), " on ", storage.mount_point()));
    }
    if (flags != 0 && ::mount(nullptr, mount_point.c_str(), nullptr, MS_BIND | MS_REMOUNT | flags,
                              nullptr) != 0) {
      absl::Status status = ErrnoStatus(absl::StrCat("remount storage ", storage.mount_point()));
      ::umount2(mount_point.c_str(), MNT_DETACH);
      return status;
    }
  } else if (::mount(source.c_str(), mount_point.c_str(), fstype.c_str(), flags,
                     data.empty() ? nullptr : data.c_str()) != 0) {
    return ErrnoStatus(
        absl::StrCat("mount ", driver, " storage ", source, " on ", storage.mount_point()));
  }
  return mount_point;
}

absl::Status UnmountStorage(const std::string& mount_point) {
  if (::umount2(mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return ErrnoStatus(absl::StrCat("umount ", mount_point));
  }
  return absl::OkStatus();
}

}  // namespace vessel::agent
