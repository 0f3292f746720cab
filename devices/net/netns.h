// RunInNetns: runs a function inside another network namespace without moving any of the VMM's own
// threads there.
//
// setns(CLONE_NEWNET) changes the namespace of the calling thread only; RunInNetns calls it on a
// short-lived helper thread, runs `fn` there and joins the thread. What `fn` opens (a tun fd, a
// socket) belongs to that namespace for good and stays usable from any thread in any namespace.
#ifndef VESSEL_DEVICES_NET_NETNS_H_
#define VESSEL_DEVICES_NET_NETNS_H_

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace vessel::net {

// Runs `fn` in the network namespace at `netns_path` (/var/run/netns/NAME, /proc/PID/ns/net, or any
// open namespace file such as /proc/self/fd/N) and returns its status; with an empty path, runs it
// on the calling thread. Errors name the path: it does not exist (NotFound), it is not a network
// namespace (InvalidArgument), joining it needs CAP_SYS_ADMIN (PermissionDenied).
absl::Status RunInNetns(const std::string& netns_path, absl::FunctionRef<absl::Status()> fn);

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_NETNS_H_
