// absl::Status <-> google.rpc.Status as ttrpc carries it. Abseil's status codes are gRPC's codes
// (0 OK .. 16 Unauthenticated), so a code crosses the wire as its number.
#ifndef VESSEL_RPC_TTRPC_STATUS_H_
#define VESSEL_RPC_TTRPC_STATUS_H_

#include "absl/status/status.h"
#include "rpc/ttrpc/ttrpc.pb.h"

namespace vessel::ttrpc {

void StatusToProto(const absl::Status& status, Status* proto);
// A code outside 0..16 from a peer becomes Unknown, with the number kept in the message.
absl::Status StatusFromProto(const Status& proto);

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_STATUS_H_
