// Helpers that turn errno into absl::Status with the failing operation named.
#ifndef VESSEL_VMM_BASE_ERRORS_H_
#define VESSEL_VMM_BASE_ERRORS_H_

#include <cerrno>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vessel {

// Status for a failed system call: "<what>: <strerror> (errno N)". Maps common errnos to codes.
inline absl::Status ErrnoStatus(absl::string_view what, int err = errno) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err), " (errno ", err, ")");
  switch (err) {
    case ENOENT: return absl::NotFoundError(msg);
    case EACCES:
    case EPERM: return absl::PermissionDeniedError(msg);
    case EINVAL: return absl::InvalidArgumentError(msg);
    case ENOMEM:
    case ENOSPC: return absl::ResourceExhaustedError(msg);
    case EEXIST: return absl::AlreadyExistsError(msg);
    default: return absl::InternalError(msg);
  }
}

}  // namespace vessel

#define VESSEL_RETURN_IF_ERROR(expr)            \
  do {                                          \
    absl::Status vessel_status_ = (expr);       \
    if (!vessel_status_.ok()) return vessel_status_; \
  } while (0)

#define VESSEL_CONCAT_INNER_(a, b) a##b
#define VESSEL_CONCAT_(a, b) VESSEL_CONCAT_INNER_(a, b)
#define VESSEL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(*tmp)
// VESSEL_ASSIGN_OR_RETURN(auto x, StatusOrFn());
#define VESSEL_ASSIGN_OR_RETURN(lhs, expr) \
  VESSEL_ASSIGN_OR_RETURN_IMPL_(VESSEL_CONCAT_(vessel_statusor_, __LINE__), lhs, expr)

#endif  // VESSEL_VMM_BASE_ERRORS_H_
