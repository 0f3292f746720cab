// The virtio-vsock packet format between the device and the guest's driver: a 44-byte
// virtio_vsock_hdr (little endian, <linux/virtio_vsock.h>) followed by `len` payload bytes.
//
// Guest → device (tx queue): ParseTxPacket reads a chain's device-readable bytes and sorts the
// packet into ok / answer-with-RST / drop, trusting nothing:
//   - drop (no reply is possible or meaningful): the chain is malformed, the header is not wholly
//     present, or src_cid is not the guest's CID (a spoofed source gets no answer);
//   - RST (the header names a connection to reset): type is not STREAM, dst_cid is not the host,
//     op is unknown, len exceeds kMaxPayload or the payload bytes actually in the chain.
// Device → guest (rx queue): WriteRxPacket writes header + payload into a chain's writable bytes.
// Nothing here keeps a pointer into guest RAM: all access goes through ChainReader / ChainWriter.
#ifndef VESSEL_DEVICES_VSOCK_PACKET_H_
#define VESSEL_DEVICES_VSOCK_PACKET_H_

#include <linux/virtio_vsock.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "devices/virtio/descriptor_chain.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::vsock {

inline constexpr uint64_t kHeaderSize = sizeof(virtio_vsock_hdr);
static_assert(kHeaderSize == 44);
// Largest payload of one packet (the kernel's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
inline constexpr uint32_t kMaxPayload = 64 * 1024;

enum class TxVerdict {
  kOk,     // a valid packet: act on it
  kReset,  // invalid, but the header names the sender: answer with RST
  kDrop,   // nothing trustworthy to answer: drop it
};

struct TxPacket {
  TxVerdict verdict = TxVerdict::kDrop;
  // The header as the guest wrote it (fields little endian = host order on x86_64); meaningful
  // unless the verdict is kDrop.
  virtio_vsock_hdr hdr{};
  // kOk: positioned at the first payload byte; at least hdr.len bytes remain (the packet's
  // payload is exactly the next hdr.len bytes; anything after them is ignored).
  std::optional<virtio::ChainReader> payload;
  // kReset / kDrop: what was wrong, for a log line.
  std::string problem;
};

// Parses one tx chain from a driver whose address is `guest_cid`.
TxPacket ParseTxPacket(const GuestMemory& memory, const virtio::DescriptorChain& chain,
                       uint64_t guest_cid);

// A header from the host (CID 2, port `local_port`) to the guest (`guest_cid`, `peer_port`) with
// type STREAM and the given op and len; flags, buf_alloc and fwd_cnt are 0 for the caller to set.
virtio_vsock_hdr HostHeader(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port,
                            uint16_t op, uint32_t len = 0);
// The RST that answers `hdr` (addresses swapped, same type), from the host's side.
virtio_vsock_hdr ResetReply(const virtio_vsock_hdr& hdr);

// Writes `hdr` (its len must equal payload.size()) then `payload` into the writable bytes of an rx
// chain. OutOfRange, writing nothing, when they do not fit.
absl::Status WriteRxPacket(virtio::ChainWriter& writer, const virtio_vsock_hdr& hdr,
                           absl::Span<const uint8_t> payload = {});

// "RW", "REQUEST", ... or "op <n>"; and a one-line description of a header for logs.
std::string OpName(uint16_t op);
std::string Describe(const virtio_vsock_hdr& hdr);

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_PACKET_H_
