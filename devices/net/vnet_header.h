// The virtio-net header rules shared by both directions: frame size limits, and which offload
// requests (partial checksum, GSO) a header may carry given the features the driver negotiated.
// The tap and the guest driver use the same struct virtio_net_hdr_v1, so a frame crosses the
// device unchanged once its header passes these checks.
#ifndef VESSEL_DEVICES_NET_VNET_HEADER_H_
#define VESSEL_DEVICES_NET_VNET_HEADER_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "devices/net/virtio_net_uapi.h"

namespace vessel::net {

inline constexpr size_t kVnetHdrSize = sizeof(virtio_net_hdr_v1);
// Largest frame the device moves in either direction, vnet header included (12 + 65550: a 64 KiB
// GSO packet with its Ethernet and VLAN headers).
inline constexpr size_t kMaxFrameBytes = 65562;
// Smallest: the vnet header and an Ethernet header.
inline constexpr size_t kMinFrameBytes = kVnetHdrSize + 14;

// A header from the guest (tx). Clears the flags a driver must not set (DATA_VALID, RSC_INFO,
// unknown bits); returns "" when the rest is allowed, otherwise why not: NEEDS_CSUM without
// VIRTIO_NET_F_CSUM, a GSO type whose VIRTIO_NET_F_HOST_* feature was not negotiated (TSO4, TSO6;
// UFO, USO and ECN are never offered), GSO without NEEDS_CSUM.
absl::string_view SanitizeTxHeader(virtio_net_hdr_v1& hdr, uint64_t acked_features);

// A header from the tap for the guest (rx). Without VIRTIO_NET_F_GUEST_CSUM the flags must be 0
// (DATA_VALID is cleared); returns "" when the rest is allowed, otherwise why not: NEEDS_CSUM
// without GUEST_CSUM, a GSO type without its GUEST_* feature.
absl::string_view SanitizeRxHeader(virtio_net_hdr_v1& hdr, uint64_t acked_features);

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_VNET_HEADER_H_
