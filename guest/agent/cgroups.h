// cgroup v2: one sandbox cgroup (the agent's --cgroup-root) with one child per container.
#ifndef VESSEL_GUEST_AGENT_CGROUPS_H_
#define VESSEL_GUEST_AGENT_CGROUPS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

class CgroupRoot {
 public:
  // Creates `path` (must be on a cgroup2 file system) and enables every controller its parent
  // offers for its children. An empty path disables cgroups (limits then fail).
  static absl::StatusOr<CgroupRoot> Create(std::string path);
  CgroupRoot() = default;

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string ContainerPath(const std::string& container_id) const {
    return path_ + "/" + container_id;
  }

  // Removes the root cgroup (after every container's is gone).
  void Remove();

 private:
  std::string path_;
};

// A container's cgroup: created with its limits; removed (rmdir) on destruction.
class ContainerCgroup {
 public:
  static absl::StatusOr<ContainerCgroup> Create(const CgroupRoot& root,
                                                const std::string& container_id,
                                                const v1::LinuxResources& resources);
  ContainerCgroup() = default;
  ContainerCgroup(ContainerCgroup&& other) noexcept : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  ContainerCgroup& operator=(ContainerCgroup&& other) noexcept;
  ~ContainerCgroup();

  bool valid() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  // An O_WRONLY fd of cgroup.procs for a child to write "0" into (joins before exec).
  absl::StatusOr<ScopedFd> OpenProcs() const;
  std::vector<pid_t> Pids() const;
  v1::StatsContainerResponse Stats() const;
  // rmdir, retrying while the kernel still counts exiting tasks. Idempotent.
  absl::Status Remove();

 private:
  std::string path_;
};

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_CGROUPS_H_
