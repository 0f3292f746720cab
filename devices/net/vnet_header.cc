#include "devices/net/vnet_header.h"

namespace vessel::net {
namespace {

bool Has(uint64_t features, unsigned bit) { return (features >> bit) & 1; }

}  // namespace

absl::string_view SanitizeTxHeader(virtio_net_hdr_v1& hdr, uint64_t acked) {
  hdr.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
  const bool needs_csum = hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
  if (needs_csum && !Has(acked, VIRTIO_NET_F_CSUM)) {
    return "partial checksum (NEEDS_CSUM) without VIRTIO_NET_F_CSUM negotiated";
  }
  switch (hdr.gso_type) {
    case VIRTIO_NET_HDR_GSO_NONE:
      return "";
    case VIRTIO_NET_HDR_GSO_TCPV4:
      if (!Has(acked, VIRTIO_NET_F_HOST_TSO4))
        return "TSO4 frame without VIRTIO_NET_F_HOST_TSO4 negotiated";
      break;
    case VIRTIO_NET_HDR_GSO_TCPV6:
      if (!Has(acked, VIRTIO_NET_F_HOST_TSO6))
        return "TSO6 frame without VIRTIO_NET_F_HOST_TSO6 negotiated";
      break;
    default:
      return (hdr.gso_type & VIRTIO_NET_HDR_GSO_ECN)
                 ? "GSO with ECN (VIRTIO_NET_F_HOST_ECN is not offered)"
                 : "GSO type the device does not offer (only TCPv4 / TCPv6)";
  }
  if (!needs_csum) return "GSO frame without NEEDS_CSUM";
  return "";
}

absl::string_view SanitizeRxHeader(virtio_net_hdr_v1& hdr, uint64_t acked) {
  if (!Has(acked, VIRTIO_NET_F_GUEST_CSUM)) {
    if (hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      return "partial checksum for a guest without VIRTIO_NET_F_GUEST_CSUM";
    }
    hdr.flags = 0;
  } else {
    hdr.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;
  }
  switch (hdr.gso_type) {
    case VIRTIO_NET_HDR_GSO_NONE:
      return "";
    case VIRTIO_NET_HDR_GSO_TCPV4:
      return Has(acked, VIRTIO_NET_F_GUEST_TSO4)
                 ? ""
                 : "TSO4 frame for a guest without VIRTIO_NET_F_GUEST_TSO4";
    case VIRTIO_NET_HDR_GSO_TCPV6:
      return Has(acked, VIRTIO_NET_F_GUEST_TSO6)
                 ? ""
                 : "TSO6 frame for a guest without VIRTIO_NET_F_GUEST_TSO6";
    default:
      return "GSO type the guest did not negotiate";
  }
}

}  // namespace vessel::net
