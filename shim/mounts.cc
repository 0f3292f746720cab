#include "shim/mounts.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "vmm/base/errors.h"

namespace vessel::shim {
namespace {

struct FlagWord {
  const char* word;
  bool clear;
  unsigned long flag;
};

// containerd's mount_linux.go table.
constexpr FlagWord kFlags[] = {
    {"async", true, MS_SYNCHRONOUS},  {"atime", true, MS_NOATIME},
    {"bind", false, MS_BIND},         {"defaults", false, 0},
    {"dev", true, MS_NODEV},          {"diratime", true, MS_NODIRATIME},
    {"dirsync", false, MS_DIRSYNC},   {"exec", true, MS_NOEXEC},
    {"mand", false, MS_MANDLOCK},     {"noatime", false, MS_NOATIME},
    {"nodev", false, MS_NODEV},       {"nodiratime", false, MS_NODIRATIME},
    {"noexec", false, MS_NOEXEC},     {"nomand", true, MS_MANDLOCK},
    {"norelatime", true, MS_RELATIME}, {"nostrictatime", true, MS_STRICTATIME},
    {"nosuid", false, MS_NOSUID},     {"rbind", false, MS_BIND | MS_REC},
    {"relatime", false, MS_RELATIME}, {"remount", false, MS_REMOUNT},
    {"ro", false, MS_RDONLY},         {"rw", true, MS_RDONLY},
    {"strictatime", false, MS_STRICTATIME}, {"suid", true, MS_NOSUID},
    {"sync", false, MS_SYNCHRONOUS},
};

struct PropagationWord {
  const char* word;
  unsigned long flag;
};
constexpr PropagationWord kPropagation[] = {
    {"private", MS_PRIVATE},          {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},            {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},              {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE},    {"runbindable", MS_UNBINDABLE | MS_REC},
};

constexpr size_t kMaxData = 4095;  // mount(2) copies one page of data

}  // namespace

absl::StatusOr<MountPlan> PlanMount(const containerd::types::Mount& mount) {
  MountPlan plan;
  plan.type = mount.type();
  plan.source = mount.source();
  if (plan.type.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("rootfs mount of \"", mount.source(),
                                                   "\" has no type (expected e.g. overlay or bind)"));
  }
  std::vector<std::string> data;
  for (const std::string& o : mount.options()) {
    if (o.empty()) continue;
    if (o.find(',') != std::string::npos || o.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("rootfs mount option \"", o,
                                                     "\" contains a comma or NUL: pass one option per entry"));
    }
    bool matched = false;
    for (const FlagWord& f : kFlags) {
      if (o == f.word) {
        if (f.clear) {
          plan.flags &= ~f.flag;
        } else {
          plan.flags |= f.flag;
        }
        matched = true;
        break;
      }
    }
    for (const PropagationWord& p : kPropagation) {
      if (!matched && o == p.word) {
        plan.propagation = p.flag;
        matched = true;
      }
    }
    if (!matched) data.push_back(o);
  }
  plan.data = absl::StrJoin(data, ",");
  if (plan.data.size() > kMaxData) {
    return absl::InvalidArgumentError(absl::StrCat("rootfs mount options of type ", plan.type, " are ",
                                                   plan.data.size(), " bytes; mount(2) takes at most ",
                                                   kMaxData, " (too many layers?)"));
  }
  bool bind = plan.type == "bind" || plan.type == "rbind" || (plan.flags & MS_BIND) != 0;
  if (plan.type == "rbind") plan.flags |= MS_BIND | MS_REC;
  if (plan.type == "bind") plan.flags |= MS_BIND;
  if (bind) {
    if (plan.source.empty() || plan.source.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat("bind rootfs mount source \"", plan.source,
                                                     "\" must be an absolute path"));
    }
    plan.remount_readonly = (plan.flags & MS_RDONLY) != 0 && (plan.flags & MS_REMOUNT) == 0;
  }
  if (plan.type == "overlay") {
    bool has_lower = false;
    for (const std::string& d : data) has_lower |= absl::StartsWith(d, "lowerdir=");
    if (!has_lower) {
      return absl::InvalidArgumentError("overlay rootfs mount has no lowerdir= option");
    }
  }
  return plan;
}

absl::Status MountAll(const std::vector<containerd::types::Mount>& mounts, const std::string& target) {
  std::vector<MountPlan> plans;
  for (const containerd::types::Mount& m : mounts) {
    absl::StatusOr<MountPlan> plan = PlanMount(m);
    if (!plan.ok()) return plan.status();
    plans.push_back(std::move(*plan));
  }
  int mounted = 0;
  auto fail = [&](absl::Status s) {
    for (int i = 0; i < mounted; ++i) ::umount2(target.c_str(), MNT_DETACH);
    return s;
  };
  for (const MountPlan& p : plans) {
    const char* data = p.data.empty() ? nullptr : p.data.c_str();
    if (::mount(p.source.c_str(), target.c_str(), p.type.c_str(), p.flags, data) != 0) {
      return fail(ErrnoStatus(absl::StrCat("mount ", p.type, " ", p.source, " on ", target,
                                           p.data.empty() ? "" : " with ", p.data)));
    }
    ++mounted;
    if (p.remount_readonly &&
        ::mount(nullptr, target.c_str(), nullptr, p.flags | MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      return fail(ErrnoStatus(absl::StrCat("remount ", target, " read-only")));
    }
    if (p.propagation != 0 && ::mount(nullptr, target.c_str(), nullptr, p.propagation, nullptr) != 0) {
      return fail(ErrnoStatus(absl::StrCat("set the propagation of ", target)));
    }
  }
  return absl::OkStatus();
}

absl::Status UnmountAll(const std::string& target) {
  for (int i = 0; i < 64; ++i) {
    if (::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      if (errno == EINVAL || errno == ENOENT) return absl::OkStatus();  // nothing (more) mounted
      return ErrnoStatus(absl::StrCat("unmount ", target));
    }
  }
  return absl::InternalError(absl::StrCat("unmount ", target, ": still mounted after 64 unmounts"));
}

}  // namespace vessel::shim
