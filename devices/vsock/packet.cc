#include "devices/vsock/packet.h"

#include <bit>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/vsock/vsock_config.h"

namespace vessel::vsock {
namespace {

// virtio_vsock_hdr is little endian; vessel runs on x86_64 only, so fields are used as read.
static_assert(std::endian::native == std::endian::little);

TxPacket Verdict(TxVerdict verdict, const virtio_vsock_hdr& hdr, std::string problem) {
  TxPacket p;
  p.verdict = verdict;
  p.hdr = hdr;
  p.problem = std::move(problem);
  return p;
}

}  // namespace

TxPacket ParseTxPacket(const GuestMemory& memory, const virtio::DescriptorChain& chain,
                       uint64_t guest_cid) {
  absl::StatusOr<virtio::ChainReader> reader = virtio::ChainReader::Create(memory, chain);
  if (!reader.ok()) {
    return Verdict(TxVerdict::kDrop, {}, absl::StrCat("malformed chain: ", reader.status().message()));
  }
  if (reader->remaining() < kHeaderSize) {
    return Verdict(TxVerdict::kDrop, {},
                   absl::StrCat("packet of ", reader->remaining(),
                                " device-readable bytes is shorter than the ", kHeaderSize,
                                "-byte header"));
  }
  absl::StatusOr<virtio_vsock_hdr> hdr = reader->ReadObj<virtio_vsock_hdr>();
  if (!hdr.ok()) {
    return Verdict(TxVerdict::kDrop, {}, absl::StrCat("header unreadable: ", hdr.status().message()));
  }
  const uint64_t src_cid = hdr->src_cid;
  const uint64_t dst_cid = hdr->dst_cid;
  const uint16_t type = hdr->type;
  const uint16_t op = hdr->op;
  const uint32_t len = hdr->len;
  if (src_cid != guest_cid) {
    return Verdict(TxVerdict::kDrop, *hdr,
                   absl::StrCat("source CID ", src_cid, " is not the guest's CID ", guest_cid));
  }
  if (type != VIRTIO_VSOCK_TYPE_STREAM) {
    return Verdict(TxVerdict::kReset, *hdr,
                   absl::StrCat("socket type ", type, " is not STREAM (only STREAM is offered)"));
  }
  if (dst_cid != kHostCid) {
    return Verdict(TxVerdict::kReset, *hdr,
                   absl::StrCat("destination CID ", dst_cid, " is not the host (2)"));
  }
  if (op < VIRTIO_VSOCK_OP_REQUEST || op > VIRTIO_VSOCK_OP_CREDIT_REQUEST) {
    return Verdict(TxVerdict::kReset, *hdr, absl::StrCat("unknown op ", op));
  }
  if (len > kMaxPayload) {
    return Verdict(TxVerdict::kReset, *hdr,
                   absl::StrCat("payload length ", len, " exceeds the ", kMaxPayload, "-byte cap"));
  }
  if (len > reader->remaining()) {
    return Verdict(TxVerdict::kReset, *hdr,
                   absl::StrCat("header says ", len, " payload bytes but the chain holds ",
                                reader->remaining()));
  }
  TxPacket p;
  p.verdict = TxVerdict::kOk;
  p.hdr = *hdr;
  p.payload.emplace(std::move(*reader));
  return p;
}

virtio_vsock_hdr HostHeader(uint64_t guest_cid, uint32_t local_port, uint32_t peer_port,
                            uint16_t op, uint32_t len) {
  virtio_vsock_hdr h{};
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid;
  h.src_port = local_port;
  h.dst_port = peer_port;
  h.len = len;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  return h;
}

virtio_vsock_hdr ResetReply(const virtio_vsock_hdr& hdr) {
  virtio_vsock_hdr h{};
  h.src_cid = hdr.dst_cid;
  h.dst_cid = hdr.src_cid;
  h.src_port = hdr.dst_port;
  h.dst_port = hdr.src_port;
  h.type = hdr.type;
  h.op = VIRTIO_VSOCK_OP_RST;
  return h;
}

absl::Status WriteRxPacket(virtio::ChainWriter& writer, const virtio_vsock_hdr& hdr,
                           absl::Span<const uint8_t> payload) {
  if (hdr.len != payload.size()) {
    return absl::InternalError(absl::StrCat("vsock rx packet: header len ", uint32_t{hdr.len},
                                            " != payload size ", payload.size()));
  }
  if (writer.remaining() < kHeaderSize + payload.size()) {
    return absl::OutOfRangeError(absl::StrCat("vsock rx buffer of ", writer.remaining(),
                                              " bytes cannot hold a ", kHeaderSize, "-byte header + ",
                                              payload.size(), " payload bytes"));
  }
  absl::Status s = writer.WriteObj(hdr);
  if (!s.ok()) return s;
  if (payload.empty()) return absl::OkStatus();
  return writer.Write(payload.data(), payload.size());
}

std::string OpName(uint16_t op) {
  switch (op) {
    case VIRTIO_VSOCK_OP_REQUEST: return "REQUEST";
    case VIRTIO_VSOCK_OP_RESPONSE: return "RESPONSE";
    case VIRTIO_VSOCK_OP_RST: return "RST";
    case VIRTIO_VSOCK_OP_SHUTDOWN: return "SHUTDOWN";
    case VIRTIO_VSOCK_OP_RW: return "RW";
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE: return "CREDIT_UPDATE";
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST: return "CREDIT_REQUEST";
    default: return absl::StrCat("op ", op);
  }
}

std::string Describe(const virtio_vsock_hdr& hdr) {
  return absl::StrFormat("%s %d:%d -> %d:%d len %d", OpName(hdr.op), uint64_t{hdr.src_cid},
                         uint32_t{hdr.src_port}, uint64_t{hdr.dst_cid}, uint32_t{hdr.dst_port},
                         uint32_t{hdr.len});
}

}  // namespace vessel::vsock
