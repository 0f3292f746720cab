// The kernel UAPI split-ring ABI (<linux/virtio_ring.h>: vring_desc, vring_avail, vring_used_elem,
// VRING_* flags, vring_need_event) for C++. Include this instead of the UAPI header directly: its
// legacy helpers (vring_init, vring_size) are C only (void* conversions), so they are left out
// with VIRTIO_RING_NO_LEGACY; vessel lays rings out from the structs' offsets.
#ifndef VESSEL_DEVICES_VIRTIO_VIRTIO_RING_H_
#define VESSEL_DEVICES_VIRTIO_VIRTIO_RING_H_

#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/virtio_ring.h>

#endif  // VESSEL_DEVICES_VIRTIO_VIRTIO_RING_H_
