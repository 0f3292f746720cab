// Stream sockets ttrpc runs over: Unix sockets on the host, AF_VSOCK in the guest, or any
// connected fd someone hands over (the hybrid vsock muxer, a socketpair). Blocking setup calls;
// the Channel switches the fd to non-blocking.
#ifndef VESSEL_RPC_TTRPC_SOCKET_H_
#define VESSEL_RPC_TTRPC_SOCKET_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::ttrpc {

absl::StatusOr<ScopedFd> ConnectUnix(absl::string_view path);
// Binds and listens; a stale socket file at `path` (nobody accepting) is replaced.
absl::StatusOr<ScopedFd> ListenUnix(absl::string_view path);

absl::StatusOr<ScopedFd> ConnectVsock(uint32_t cid, uint32_t port);
absl::StatusOr<ScopedFd> ListenVsock(uint32_t port);

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_SOCKET_H_
