#include "devices/vsock/vsock_config.h"

#include <sys/un.h>

#include "absl/strings/str_cat.h"

namespace vessel::vsock {

absl::Status ValidateVsockConfig(const VsockConfig& config) {
  if (config.guest_cid < kMinGuestCid || config.guest_cid >= kCidAny) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vsock guest CID ", config.guest_cid, " is out of range: use ", kMinGuestCid, "..",
        kCidAny - 1, " (0-2 are reserved for the hypervisor, loopback and host)"));
  }
  if (config.uds_path.empty()) {
    return absl::InvalidArgumentError(
        "vsock: no Unix socket path given: pass the path the host side should listen on");
  }
  // sun_path holds the path plus its NUL; guest-initiated connections append "_<port>".
  constexpr size_t kMaxPath = sizeof(sockaddr_un{}.sun_path) - 1 - kPortSuffixMax;
  if (config.uds_path.size() > kMaxPath) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vsock Unix socket path '", config.uds_path, "' is ", config.uds_path.size(),
        " bytes; at most ", kMaxPath, " fit (sun_path is ", sizeof(sockaddr_un{}.sun_path),
        " bytes including \"_<port>\" and the NUL): use a shorter path"));
  }
  if (config.uds_path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("vsock Unix socket path contains a NUL byte: use a plain path");
  }
  if (config.max_connections == 0 || config.max_pending_clients == 0) {
    return absl::InvalidArgumentError(
        "vsock: max_connections and max_pending_clients must be at least 1");
  }
  if (config.buf_alloc < 4096) {
    return absl::InvalidArgumentError(absl::StrCat("vsock buf_alloc ", config.buf_alloc,
                                                   " is too small: use at least 4096 bytes"));
  }
  if (config.connect_line_timeout.count() <= 0 || config.request_timeout.count() <= 0 ||
      config.shutdown_timeout.count() <= 0) {
    return absl::InvalidArgumentError("vsock: timeouts must be positive");
  }
  return absl::OkStatus();
}

}  // namespace vessel::vsock
