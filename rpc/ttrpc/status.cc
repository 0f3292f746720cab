#include "rpc/ttrpc/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace vessel::ttrpc {

void StatusToProto(const absl::Status& status, Status* proto) {
  proto->set_code(static_cast<int32_t>(status.code()));
  proto->set_message(std::string(status.message()));
}

absl::Status StatusFromProto(const Status& proto) {
  int32_t code = proto.code();
  if (code == 0) return absl::OkStatus();
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(absl::StrCat("(ttrpc status code ", code, ") ", proto.message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), proto.message());
}

}  // namespace vessel::ttrpc
