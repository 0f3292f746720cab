#include "devices/net/netns.h"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <thread>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::net {

absl::Status RunInNetns(const std::string& netns_path, absl::FunctionRef<absl::Status()> fn) {
  if (netns_path.empty()) return fn();
  ScopedFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          "network namespace ", netns_path,
          " does not exist: create it (ip netns add NAME gives /var/run/netns/NAME) or name "
          "/proc/PID/ns/net of a process inside it"));
    }
    return ErrnoStatus(absl::StrCat("opening network namespace ", netns_path), err);
  }
  absl::Status status;
  // The helper thread is the only one that ever changes namespace; it ends right after `fn`.
  std::thread helper([&] {
    if (::setns(ns.get(), CLONE_NEWNET) != 0) {
      const int err = errno;
      if (err == EINVAL) {
        status = absl::InvalidArgumentError(
            absl::StrCat(netns_path,
                         " is not a network namespace: expected /var/run/netns/NAME or "
                         "/proc/PID/ns/net"));
      } else if (err == EPERM) {
        status = absl::PermissionDeniedError(
            absl::StrCat("joining network namespace ", netns_path,
                         " needs CAP_SYS_ADMIN: run the VMM as root or with that capability"));
      } else {
        status = ErrnoStatus(absl::StrCat("setns(", netns_path, ", CLONE_NEWNET)"), err);
      }
      return;
    }
    status = fn();
  });
  helper.join();
  return status;
}

}  // namespace vessel::net
