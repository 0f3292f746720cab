// Tap: the host end of a virtio-net device, a tap interface opened through /dev/net/tun with
// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header (sizeof(virtio_net_hdr_v1)): every
// frame read or written carries the same header the guest's virtio-net driver uses, so packets pass
// through with their checksum-offload and GSO metadata and no translation.
//
// The fd is non-blocking and close-on-exec; the tap's offloads towards the guest (TUNSETOFFLOAD)
// start off and are set from the features the driver acked. Thread-compatible: one reader and one
// writer may use it at once (the device's I/O thread does both).
#ifndef VESSEL_DEVICES_NET_TAP_H_
#define VESSEL_DEVICES_NET_TAP_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "devices/net/virtio_net_uapi.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::net {

class Tap {
 public:
  static constexpr size_t kVnetHdrSize = sizeof(virtio_net_hdr_v1);
  static_assert(kVnetHdrSize == 12);

  // Opens the tap called `name`, creating it (non-persistent: gone when the fd closes) when no
  // interface has that name. With a non-empty `netns_path` the tap is opened inside that network
  // namespace (see RunInNetns); the VMM's threads stay where they are. Errors say what to fix: no
  // /dev/net/tun (load the tun module), no CAP_NET_ADMIN, a bad namespace path, a name taken by a
  // non-tap interface, a tap some other process has open.
  static absl::StatusOr<Tap> Open(absl::string_view name, const std::string& netns_path = "");

  Tap(Tap&&) = default;
  Tap& operator=(Tap&&) = default;

  int fd() const { return fd_.get(); }
  // The interface name as the kernel reports it.
  const std::string& name() const { return name_; }

  // TUNSETOFFLOAD: which offloads frames towards the guest may use (TUN_F_CSUM: partial
  // checksums; TUN_F_TSO4/6: GSO). The kernel completes checksums / segments for anything else.
  absl::Status SetOffload(unsigned int tun_flags);

  // Reads one frame (vnet header first) into `buffer`. Returns its length, which is larger than
  // buffer.size() when the frame did not fit (it was truncated: drop it); 0 when no frame is
  // waiting.
  absl::StatusOr<size_t> Read(absl::Span<uint8_t> buffer);
  // Writes one frame (vnet header first). Unavailable when the tap cannot take it right now.
  absl::Status Write(absl::Span<const uint8_t> frame);

 private:
  Tap(ScopedFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  // Open() on the calling thread's namespace; `netns_path` only names it in errors.
  static absl::StatusOr<Tap> OpenHere(const std::string& name, const std::string& netns_path);

  ScopedFd fd_;
  std::string name_;
};

// The TUN_F_* offloads matching the guest features a driver acked (VIRTIO_NET_F_GUEST_CSUM →
// TUN_F_CSUM; GUEST_TSO4/6 → TUN_F_TSO4/6, only together with GUEST_CSUM as the spec requires).
unsigned int TapOffloadsForGuestFeatures(uint64_t acked_features);

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_TAP_H_
