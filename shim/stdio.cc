#include "shim/stdio.h"

#include <fcntl.h>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "vmm/base/errors.h"

namespace vessel::shim {
namespace {

absl::StatusOr<ScopedFd> OpenOutput(const std::string& uri, const char* what) {
  if (uri.empty()) return ScopedFd();
  absl::string_view path = uri;
  bool file = absl::ConsumePrefix(&path, "file://");
  if (!file && absl::StrContains(path, "://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " \"", uri, "\": only FIFO paths and file:// URIs are supported by vessel (not binary:// logging)"));
  }
  if (path.empty() || path.front() != '/') {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", uri, "\" is not an absolute path"));
  }
  std::string p(path);
  int flags = file ? (O_WRONLY | O_APPEND | O_CREAT) : O_RDWR;
  int fd = ::open(p.c_str(), flags | O_CLOEXEC | O_NOCTTY, 0640);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", what, " ", p));
  return ScopedFd(fd);
}

}  // namespace

absl::StatusOr<OpenedStdio> OpenStdio(const std::string& stdin_path, const std::string& stdout_path,
                                      const std::string& stderr_path, bool terminal) {
  OpenedStdio io;
  if (!stdin_path.empty()) {
    if (stdin_path.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat("stdin \"", stdin_path, "\" is not an absolute FIFO path"));
    }
    int fd = ::open(stdin_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return ErrnoStatus("open stdin " + stdin_path);
    io.in.reset(fd);
  }
  VESSEL_ASSIGN_OR_RETURN(io.out, OpenOutput(stdout_path, "stdout"));
  if (!terminal) {
    VESSEL_ASSIGN_OR_RETURN(io.err, OpenOutput(stderr_path, "stderr"));
  }
  return io;
}

}  // namespace vessel::shim
