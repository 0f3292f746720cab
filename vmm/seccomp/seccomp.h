// Per-thread seccomp filters for the VMM's own threads (libseccomp).
//
// The VMM is a library in its caller's process (the sandbox SDK, the containerd shim), so the
// filters are per thread: each vCPU, event-loop and device I/O thread installs the filter of its
// kind as the first thing it does (seccomp_load without TSYNC applies to the calling thread only).
// The caller's threads (ttrpc, stdio pumps, main) stay unfiltered. A filtered thread that makes a
// syscall outside its list kills the whole process (SECCOMP_RET_KILL_PROCESS), and the kernel logs
// it (audit type=1326 in dmesg/journal: comm, syscall number). See docs/security.md.
//
// Callbacks that run on filtered threads (MachineConfig::console_sink on vCPU threads,
// VsockDevice::ConnectToGuest's `done` on the vsock thread) may only use what those filters allow:
// write(2) to an fd, futex (mutexes, condition variables, promises), memory allocation.
//
// Debugging: MachineConfig::seccomp = false (vessel-vmm --seccomp=false) installs nothing;
// VESSEL_SECCOMP_LOG_ONLY=1 in the environment installs the filters with SCMP_ACT_LOG as the
// default action, so every syscall a thread would have been killed for is logged and allowed.
#ifndef VESSEL_VMM_SECCOMP_SECCOMP_H_
#define VESSEL_VMM_SECCOMP_SECCOMP_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vessel::seccomp {

enum class ThreadKind {
  kVcpu,       // KVM_RUN and the exit handlers (port I/O, MMIO, virtio-mmio registers, console)
  kEventLoop,  // vmm/event_loop: ioeventfd kicks -> devices' queue notifications
  kBlock,      // devices/block I/O thread: the disk file
  kVsock,      // devices/vsock I/O thread: AF_UNIX sockets, epoll, timerfd
  kNet,        // devices/net I/O thread: the tap
  kFs,         // devices/fs worker threads: the FUSE passthrough's *at() calls
};
inline constexpr ThreadKind kAllThreadKinds[] = {ThreadKind::kVcpu,  ThreadKind::kEventLoop,
                                                 ThreadKind::kBlock, ThreadKind::kVsock,
                                                 ThreadKind::kNet,   ThreadKind::kFs};

absl::string_view ThreadKindName(ThreadKind kind);

// The syscall names `kind`'s filter allows (some only with argument checks), sorted.
std::vector<std::string> AllowedSyscalls(ThreadKind kind);

// OK when this kernel and libseccomp can install the filters (seccomp filter mode, the
// KILL_PROCESS action, the log flag); otherwise an error that says how to turn them off.
absl::Status CheckSupported();

// Installs `kind`'s filter on the calling thread (and sets its no_new_privs). Irreversible.
absl::Status InstallFilter(ThreadKind kind);

// Threads started by devices and the event loop decide at their creation whether to filter
// themselves: a ThreadFilter captured on the creating thread (ForNewThread) and installed first
// thing on the new one. Machine wraps the creation of its event loop and devices in a
// ScopedThreadFilters(config.seccomp); anywhere else (device unit tests) nothing is installed.
class ScopedThreadFilters {
 public:
  explicit ScopedThreadFilters(bool enabled);
  ~ScopedThreadFilters();
  ScopedThreadFilters(const ScopedThreadFilters&) = delete;
  ScopedThreadFilters& operator=(const ScopedThreadFilters&) = delete;

 private:
  bool previous_;
};

class ThreadFilter {
 public:
  ThreadFilter() = default;
  explicit ThreadFilter(ThreadKind kind) : kind_(kind) {}
  // Installs the filter if one was captured; a failure is logged and aborts the process (a VMM
  // thread never runs unfiltered when filtering was asked for).
  void Install() const;
  bool enabled() const { return kind_.has_value(); }

 private:
  std::optional<ThreadKind> kind_;
};

// Call on the creating thread; pass the result to the new thread and Install() it there.
ThreadFilter ForNewThread(ThreadKind kind);

// Seccomp mode of the calling thread from /proc/thread-self/status (0 none, 2 filter), or -1.
int CurrentThreadMode();

}  // namespace vessel::seccomp

#endif  // VESSEL_VMM_SECCOMP_SECCOMP_H_
