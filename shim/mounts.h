// The task rootfs: containerd's Mounts (overlay from the overlayfs snapshotter, bind from native)
// turned into mount(2) calls on <bundle>/rootfs, and their removal.
#ifndef VESSEL_SHIM_MOUNTS_H_
#define VESSEL_SHIM_MOUNTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "containerd/types/mount.pb.h"

namespace vessel::shim {

// One mount(2) call (plus what has to follow it), as containerd's mount.parseMountOptions reads
// the options: flag words become flags, propagation words a second call, the rest the data string.
struct MountPlan {
  std::string type;
  std::string source;
  unsigned long flags = 0;        // MS_*
  unsigned long propagation = 0;  // MS_SHARED/MS_PRIVATE/MS_SLAVE/MS_UNBINDABLE (| MS_REC), or 0
  std::string data;               // comma-joined options that are not flags
  // A read-only bind needs a MS_REMOUNT|MS_BIND|MS_RDONLY after the bind itself.
  bool remount_readonly = false;
};

// Validates and translates one containerd Mount. InvalidArgument (naming the option) for an
// empty type, a relative or empty source of a bind, overlay without lowerdir, an option with a
// comma or NUL in it, or data longer than a page.
absl::StatusOr<MountPlan> PlanMount(const containerd::types::Mount& mount);

// Mounts every Mount on `target` in order; on failure unmounts what it mounted.
absl::Status MountAll(const std::vector<containerd::types::Mount>& mounts, const std::string& target);
// Detaches every mount stacked on `target` (none is fine).
absl::Status UnmountAll(const std::string& target);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_MOUNTS_H_
