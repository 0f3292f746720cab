#include "rpc/ttrpc/socket.h"

#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"

namespace vessel::ttrpc {
namespace {

absl::StatusOr<sockaddr_un> UnixAddress(absl::string_view path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("Unix socket path '", path, "' must be 1..",
                                                   sizeof(addr.sun_path) - 1,
                                                   " bytes long; pick a shorter path"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace

absl::StatusOr<ScopedFd> ConnectUnix(absl::string_view path) {
  VESSEL_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket(AF_UNIX)");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    absl::Status s = ErrnoStatus(absl::StrCat("connect to ttrpc socket ", path), err);
    if (err == ENOENT || err == ECONNREFUSED) {
      return absl::UnavailableError(absl::StrCat(s.message(), "; is the server running?"));
    }
    return s;
  }
  return fd;
}

absl::StatusOr<ScopedFd> ListenUnix(absl::string_view path) {
  VESSEL_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket(AF_UNIX)");
  std::string p(path);
  struct stat st;
  if (::lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    // Replace a socket file only when nobody accepts on it any more.
    absl::StatusOr<ScopedFd> probe = ConnectUnix(path);
    if (probe.ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("ttrpc socket ", path, " is in use by a running server; stop it first"));
    }
    ::unlink(p.c_str());
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("bind ttrpc socket ", path));
  }
  if (::listen(fd.get(), 128) != 0) return ErrnoStatus(absl::StrCat("listen on ", path));
  return fd;
}

absl::StatusOr<ScopedFd> ConnectVsock(uint32_t cid, uint32_t port) {
  ScopedFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket(AF_VSOCK) (is vsock in this kernel?)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("connect to vsock ", cid, ":", port));
  }
  return fd;
}

absl::StatusOr<ScopedFd> ListenVsock(uint32_t port) {
  ScopedFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket(AF_VSOCK) (is vsock in this kernel?)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("bind vsock port ", port));
  }
  if (::listen(fd.get(), 128) != 0) return ErrnoStatus(absl::StrCat("listen on vsock port ", port));
  return fd;
}

}  // namespace vessel::ttrpc
