// Mounts: sandbox/container storages (mounted by the agent in its own mount namespace) and the
// container's rootfs and OCI mounts (planned by the agent, executed by the child in the new mount
// namespace with system calls only: the child of a multithreaded process must not allocate).
#ifndef VESSEL_GUEST_AGENT_MOUNTS_H_
#define VESSEL_GUEST_AGENT_MOUNTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {

// One thing the child does to build the container's file system.
struct MountStep {
  enum class Kind {
    kMkdir,  // mkdir target (EEXIST fine)
    kTouch,  // create an empty file at target (a bind mount of a file)
    kMount,  // mount(source, target, fstype, flags, data)
    kMask,   // masked path: /dev/null over a file, read-only tmpfs over a directory; absent: skip
    kReadonly,  // read-only path: bind onto itself, remount read-only; absent: skip
    kSymlink,   // symlink at target pointing to source (EEXIST fine)
  };
  Kind kind = Kind::kMount;
  std::string source, target, fstype, data;
  unsigned long flags = 0;
  std::string what;  // the error message prefix, e.g. "mount proc on /proc"
  // target relative to the rootfs, resolved by the child with openat2(RESOLVE_IN_ROOT) so that a
  // symlink in the image cannot point a mkdir or a mount outside it; empty: use `target` as is.
  std::string rel = {};
  std::string rel_parent = {}, name = {};  // kMkdir/kTouch: rel split at its last '/'
};

// The container's file system: rootfs (a path in the agent's view) and the steps on top of it.
struct RootfsPlan {
  std::string rootfs;
  bool readonly = false;
  std::vector<MountStep> steps;
};

// Validates and plans: every destination absolute and free of "..", types proc, sysfs, tmpfs,
// devpts, mqueue, cgroup2, bind; bind sources exist (mapped under `root`). Adds the default masked
// and read-only paths of an OCI runtime (/proc/kcore, /proc/sys, ...).
absl::StatusOr<RootfsPlan> PlanRootfs(const std::string& root, const std::string& rootfs,
                                      bool readonly,
                                      const google::protobuf::RepeatedPtrField<v1::Mount>& mounts);

// Child side: runs the steps (system calls only). Returns 0, or the errno with *failed pointing at
// the failing step.
int RunMountSteps(const RootfsPlan& plan, const MountStep** failed);

// Mounts one storage under `root`; returns the mount point (agent view) to unmount later.
// Drivers: bind, tmpfs, virtio-fs (source = tag), virtio-blk (source = /dev path or serial).
absl::StatusOr<std::string> MountStorage(const std::string& root, const v1::Storage& storage);
// umount2(MNT_DETACH); a mount point that is not mounted any more is fine.
absl::Status UnmountStorage(const std::string& mount_point);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_MOUNTS_H_
