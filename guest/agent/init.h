// PID 1 duties in the guest: the early file systems, and powering the VM off at the end. The
// reaping itself is the agent's (every orphan in the guest is re-parented to PID 1).
#ifndef VESSEL_GUEST_AGENT_INIT_H_
#define VESSEL_GUEST_AGENT_INIT_H_

#include "absl/status/status.h"

namespace vessel::agent {

// Leaves the initramfs root mount (bind + MS_MOVE + chroot, so that containers can pivot_root),
// then mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /sys/fs/cgroup (cgroup2) and
// sets up /dev/console as fds 0-2 when missing.
absl::Status InitGuestFilesystems();

// sync, then power the VM off (I/O port 0x600 <- 0x34 through /dev/port, vessel's power port;
// reboot(RB_POWER_OFF) as a fallback). Does not return.
[[noreturn]] void PowerOff();

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_INIT_H_
