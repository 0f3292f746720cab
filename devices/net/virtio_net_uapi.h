// The kernel UAPI virtio-net ABI (<linux/virtio_net.h>: virtio_net_hdr_v1, virtio_net_config,
// VIRTIO_NET_F_*, VIRTIO_NET_HDR_*) for C++. Include this instead of the UAPI header directly: its
// control-queue header has a field named `class`, a C++ keyword, which is renamed while the header
// is parsed (vessel has no control queue). Its own includes come first, untouched.
#ifndef VESSEL_DEVICES_NET_VIRTIO_NET_UAPI_H_
#define VESSEL_DEVICES_NET_VIRTIO_NET_UAPI_H_

#include <linux/if_ether.h>
#include <linux/types.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_types.h>

#define class class_
#include <linux/virtio_net.h>
#undef class

#endif  // VESSEL_DEVICES_NET_VIRTIO_NET_UAPI_H_
