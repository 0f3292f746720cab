// VsockConfig: how a virtio-vsock device is set up (guest CID, the host's Unix socket path) plus its
// limits, and ValidateVsockConfig, shared by the device, the Machine and the vessel-vmm CLI.
#ifndef VESSEL_DEVICES_VSOCK_VSOCK_CONFIG_H_
#define VESSEL_DEVICES_VSOCK_VSOCK_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace vessel::vsock {

// The host's address (VMADDR_CID_HOST); the guest reaches the host only through it.
inline constexpr uint64_t kHostCid = 2;
// First guest CID that is not reserved (0 hypervisor, 1 local, 2 host).
inline constexpr uint64_t kMinGuestCid = 3;
// VMADDR_CID_ANY / VMADDR_PORT_ANY: never a real address.
inline constexpr uint64_t kCidAny = 0xffffffff;
inline constexpr uint32_t kPortAny = 0xffffffff;
// Longest "_<port>" suffix a guest-initiated connection adds to uds_path ("_4294967294").
inline constexpr size_t kPortSuffixMax = 11;

struct VsockConfig {
  // The guest's address: >= 3 and < 0xffffffff.
  uint64_t guest_cid = 0;
  // Host side, Firecracker's hybrid vsock: the device listens here for host → guest connections
  // ("CONNECT <port>\n"); a guest connecting to host port P reaches the Unix listener at
  // "<uds_path>_<P>". Must not exist yet; removed when the device goes away.
  std::string uds_path;

  // --- Limits (defaults suit production; tests shrink them) ---
  // Connections at once (guest- and host-initiated); more are refused with RST / closed.
  uint32_t max_connections = 1024;
  // Host clients accepted on uds_path that have not finished their CONNECT line yet.
  uint32_t max_pending_clients = 128;
  // Receive buffer we advertise to the guest per connection (buf_alloc): the guest never has more
  // than this in flight to us, and it bounds what we buffer for a slow host socket.
  uint32_t buf_alloc = 256 * 1024;
  // A host client must send its whole CONNECT line within this.
  std::chrono::milliseconds connect_line_timeout{2000};
  // The guest must answer our connection request (RESPONSE or RST) within this. Generous: a guest
  // kernel under software-emulated KVM (kvm_pvm) can take seconds to answer while busy.
  std::chrono::milliseconds request_timeout{20000};
  // After both directions are shut down (or while flushing before a close), the guest has this
  // long to send its RST / the host socket to drain, before we reset the connection.
  std::chrono::milliseconds shutdown_timeout{2000};
};

// OK, or InvalidArgument naming the field and the fix: CID range, uds_path non-empty and short
// enough that "<uds_path>_<port>" fits in sockaddr_un.sun_path, limits non-zero.
absl::Status ValidateVsockConfig(const VsockConfig& config);

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_VSOCK_CONFIG_H_
