#include "guest/agent/namespaces.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

struct NsInfo {
  v1::NamespaceType type;
  int flag;
  const char* proc_name;
};

constexpr NsInfo kNamespaces[] = {
    {v1::NAMESPACE_TYPE_PID, CLONE_NEWPID, "pid"},
    {v1::NAMESPACE_TYPE_NETWORK, CLONE_NEWNET, "net"},
    {v1::NAMESPACE_TYPE_MOUNT, CLONE_NEWNS, "mnt"},
    {v1::NAMESPACE_TYPE_IPC, CLONE_NEWIPC, "ipc"},
    {v1::NAMESPACE_TYPE_UTS, CLONE_NEWUTS, "uts"},
    {v1::NAMESPACE_TYPE_CGROUP, CLONE_NEWCGROUP, "cgroup"},
};

absl::StatusOr<ScopedFd> OpenNs(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open namespace ", path));
  return fd;
}

}  // namespace

absl::StatusOr<NamespacePlan> PlanNamespaces(
    const google::protobuf::RepeatedPtrField<v1::Namespace>& namespaces, const std::string& root) {
  NamespacePlan plan;
  std::set<int> seen;
  bool has_mount = false;
  for (const v1::Namespace& ns : namespaces) {
    if (ns.type() == v1::NAMESPACE_TYPE_USER) {
      return absl::InvalidArgumentError("user namespaces are not supported");
    }
    const NsInfo* info = nullptr;
    for (const NsInfo& candidate : kNamespaces) {
      if (candidate.type == ns.type()) info = &candidate;
    }
    if (info == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown namespace type ", static_cast<int>(ns.type())));
    }
    if (!seen.insert(info->flag).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("namespace ", info->proc_name, " is listed twice"));
    }
    if (info->flag == CLONE_NEWNS) {
      has_mount = true;
      if (!ns.path().empty()) {
        return absl::InvalidArgumentError("joining an existing mount namespace is not supported");
      }
    }
    if (ns.path().empty()) {
      if (info->flag == CLONE_NEWCGROUP) {
        plan.new_cgroup_ns = true;
      } else {
        plan.clone_flags |= info->flag;
      }
      continue;
    }
    VESSEL_RETURN_IF_ERROR(
        ValidateAbsolutePath(absl::StrCat(info->proc_name, " namespace path"), ns.path()));
    VESSEL_ASSIGN_OR_RETURN(ScopedFd fd, OpenNs(UnderRoot(root, ns.path())));
    if (info->flag == CLONE_NEWPID) {
      plan.join_pid = std::move(fd);
    } else {
      plan.join.push_back(
          {std::move(fd), info->flag, absl::StrCat("setns ", info->proc_name, " ", ns.path())});
    }
  }
  if (!has_mount) {
    return absl::InvalidArgumentError(
        "a container needs a new mount namespace (NAMESPACE_TYPE_MOUNT)");
  }
  return plan;
}

absl::StatusOr<NamespacePlan> PlanJoinProcess(pid_t pid) {
  NamespacePlan plan;
  for (const NsInfo& info : kNamespaces) {
    std::string self = absl::StrCat("/proc/self/ns/", info.proc_name);
    std::string theirs = absl::StrCat("/proc/", pid, "/ns/", info.proc_name);
    struct stat a, b;
    if (::stat(self.c_str(), &a) != 0) continue;  // kernel without this namespace type
    if (::stat(theirs.c_str(), &b) != 0) return ErrnoStatus(absl::StrCat("stat ", theirs));
    if (a.st_ino == b.st_ino && a.st_dev == b.st_dev) continue;
    VESSEL_ASSIGN_OR_RETURN(ScopedFd fd, OpenNs(theirs));
    if (info.flag == CLONE_NEWPID) {
      plan.join_pid = std::move(fd);
    } else {
      plan.join.push_back({std::move(fd), info.flag, absl::StrCat("setns ", info.proc_name)});
    }
  }
  // The mount namespace last: after it, /proc paths of the agent are gone.
  std::stable_partition(plan.join.begin(), plan.join.end(),
                        [](const NamespaceJoin& j) { return j.nstype != CLONE_NEWNS; });
  return plan;
}

}  // namespace vessel::agent
