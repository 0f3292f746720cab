// A process's stdio: connections to the host (vsock in the guest, Unix sockets in host mode) made
// before the process starts, and for terminals a pty whose master the agent relays.
//
// Without a terminal the sockets themselves become the child's fds 0/1/2 (dup2), so output written
// before the process exits is never lost and there is no relay. The agent keeps its own copy of
// the stdin socket only to end it on CloseStdin (shutdown(SHUT_RD): the child reads EOF once the
// data already queued is consumed).
#ifndef VESSEL_GUEST_AGENT_STDIO_H_
#define VESSEL_GUEST_AGENT_STDIO_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

// Reaches the host's stdio listeners by port number.
class HostConnector {
 public:
  virtual ~HostConnector() = default;
  virtual absl::StatusOr<ScopedFd> Connect(uint32_t port) = 0;
};

// AF_VSOCK to CID 2 (the host), in the guest.
std::unique_ptr<HostConnector> MakeVsockConnector();
// Unix sockets at <dir>/<port>, in host mode (tests listen there).
std::unique_ptr<HostConnector> MakeUnixConnector(std::string dir);

// The fds a new process gets, opened by the agent before clone.
struct ChildStdio {
  ScopedFd in, out, err;     // non-terminal: sockets or /dev/null
  ScopedFd pty_slave;        // terminal: the child's 0/1/2 and controlling tty
  ScopedFd pty_master;       // terminal: kept by the agent (relay, resize)
  ScopedFd terminal_socket;  // terminal: the host stream relayed to the master
  ScopedFd stdin_control;    // non-terminal: the agent's copy of the stdin socket, for CloseStdin
  // terminal, container init with its own devpts: the child opens the pty in the container's
  // /dev/pts after pivot_root (so ttyname() works there) and the agent takes the master from it
  // with pidfd_getfd once it reports ready; pty_slave/pty_master stay empty.
  bool pty_in_child = false;
};

// Where a terminal's pty is allocated.
struct PtyPlace {
  // The child allocates it (see ChildStdio::pty_in_child).
  bool in_child = false;
  // Otherwise: a devpts directory to open "ptmx" and the slave in (an exec into a running
  // container: "/proc/<init pid>/root/dev/pts"); empty: the agent's own (posix_openpt).
  std::string devpts_dir;
};

absl::StatusOr<ChildStdio> OpenChildStdio(HostConnector& connector, const v1::Stdio& stdio,
                                          bool terminal, const PtyPlace& pty = {});

// Copies pty master <-> socket on its own thread until the pty side ends (every holder of the
// slave closed it) and all output has been written to the socket; then calls `done`.
class PtyRelay {
 public:
  PtyRelay(ScopedFd master, ScopedFd socket, std::function<void()> done);
  ~PtyRelay();  // stops and joins
  PtyRelay(const PtyRelay&) = delete;
  PtyRelay& operator=(const PtyRelay&) = delete;

  int master_fd() const { return master_.get(); }
  // Stops forwarding input and sends the terminal's EOF character (^D).
  void CloseInput();

 private:
  void Run();

  ScopedFd master_;
  ScopedFd socket_;
  ScopedFd wake_;  // eventfd: stop / input closed
  std::function<void()> done_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> input_closed_{false};
  std::thread thread_;
};

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_STDIO_H_
