// A task's stdio as containerd names it: FIFO paths (ctr, CRI), "file://PATH" for output, or empty.
#ifndef VESSEL_SHIM_STDIO_H_
#define VESSEL_SHIM_STDIO_H_

#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::shim {

struct OpenedStdio {
  ScopedFd in;
  ScopedFd out;
  ScopedFd err;
};

// stdin: opened O_RDONLY|O_NONBLOCK (never waits for containerd's writer; EOF once the writer is
// gone). stdout/stderr FIFOs: O_RDWR, so the open never blocks and a write never raises EPIPE when
// containerd's reader went away (runc's shim keeps a read end open for the same reason);
// "file://PATH": appended to (created 0640). With `terminal` stderr is not opened (the pty carries
// both). InvalidArgument for a relative path or another URI scheme ("binary://" logging is not
// supported yet).
absl::StatusOr<OpenedStdio> OpenStdio(const std::string& stdin_path, const std::string& stdout_path,
                                      const std::string& stderr_path, bool terminal);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_STDIO_H_
