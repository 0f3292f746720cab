#include "guest/agent/stdio.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rpc/ttrpc/socket.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

constexpr uint32_t kHostCid = 2;

class VsockConnector : public HostConnector {
 public:
  absl::StatusOr<ScopedFd> Connect(uint32_t port) override {
    return ttrpc::ConnectVsock(kHostCid, port);
  }
};

class UnixConnector : public HostConnector {
 public:
  explicit UnixConnector(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<ScopedFd> Connect(uint32_t port) override {
    return ttrpc::ConnectUnix(absl::StrCat(dir_, "/", port));
  }

 private:
  std::string dir_;
};

absl::StatusOr<ScopedFd> OpenDevNull() {
  ScopedFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open /dev/null");
  return fd;
}

absl::StatusOr<ScopedFd> ConnectOrNull(HostConnector& connector, uint32_t port, const char* what) {
  if (port == 0) return OpenDevNull();
  absl::StatusOr<ScopedFd> fd = connector.Connect(port);
  if (!fd.ok()) {
    return absl::Status(fd.status().code(), absl::StrCat("connecting ", what, " to host port ",
                                                         port, ": ", fd.status().message()));
  }
  return fd;
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::unique_ptr<HostConnector> MakeVsockConnector() { return std::make_unique<VsockConnector>(); }
std::unique_ptr<HostConnector> MakeUnixConnector(std::string dir) {
  return std::make_unique<UnixConnector>(std::move(dir));
}

absl::StatusOr<ChildStdio> OpenChildStdio(HostConnector& connector, const v1::Stdio& stdio,
                                          bool terminal, const PtyPlace& pty) {
  ChildStdio out;
  if (terminal) {
    if (stdio.terminal_port() != 0) {
      VESSEL_ASSIGN_OR_RETURN(out.terminal_socket,
                              ConnectOrNull(connector, stdio.terminal_port(), "terminal"));
    }
    if (pty.in_child) {
      out.pty_in_child = true;
      return out;
    }
    if (!pty.devpts_dir.empty()) {
      // In the container's devpts instance: the slave's name is valid inside the container.
      std::string ptmx = pty.devpts_dir + "/ptmx";
      out.pty_master.reset(::open(ptmx.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
      if (!out.pty_master.valid()) return ErrnoStatus("open " + ptmx);
      int unlock = 0;
      unsigned int n = 0;
      if (::ioctl(out.pty_master.get(), TIOCSPTLCK, &unlock) != 0) return ErrnoStatus("unlock the pty");
      if (::ioctl(out.pty_master.get(), TIOCGPTN, &n) != 0) return ErrnoStatus("get the pty number");
      std::string slave = absl::StrCat(pty.devpts_dir, "/", n);
      out.pty_slave.reset(::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
      if (!out.pty_slave.valid()) return ErrnoStatus("open " + slave);
      return out;
    }
    out.pty_master.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!out.pty_master.valid()) return ErrnoStatus("posix_openpt");
    if (::grantpt(out.pty_master.get()) != 0) return ErrnoStatus("grantpt");
    if (::unlockpt(out.pty_master.get()) != 0) return ErrnoStatus("unlockpt");
    char name[128];
    if (::ptsname_r(out.pty_master.get(), name, sizeof(name)) != 0) return ErrnoStatus("ptsname_r");
    out.pty_slave.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!out.pty_slave.valid()) return ErrnoStatus(absl::StrCat("open ", name));
    return out;
  }
  VESSEL_ASSIGN_OR_RETURN(out.in, ConnectOrNull(connector, stdio.stdin_port(), "stdin"));
  VESSEL_ASSIGN_OR_RETURN(out.out, ConnectOrNull(connector, stdio.stdout_port(), "stdout"));
  VESSEL_ASSIGN_OR_RETURN(out.err, ConnectOrNull(connector, stdio.stderr_port(), "stderr"));
  if (stdio.stdin_port() != 0) {
    out.stdin_control.reset(::fcntl(out.in.get(), F_DUPFD_CLOEXEC, 3));
    if (!out.stdin_control.valid()) return ErrnoStatus("dup stdin socket");
  }
  return out;
}

PtyRelay::PtyRelay(ScopedFd master, ScopedFd socket, std::function<void()> done)
    : master_(std::move(master)),
      socket_(std::move(socket)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      done_(std::move(done)) {
  thread_ = std::thread([this] { Run(); });
}

PtyRelay::~PtyRelay() {
  stop_.store(true);
  uint64_t one = 1;
  ssize_t unused = ::write(wake_.get(), &one, sizeof(one));
  (void)unused;
  if (thread_.joinable()) thread_.join();
}

void PtyRelay::CloseInput() {
  input_closed_.store(true);
  uint64_t one = 1;
  ssize_t unused = ::write(wake_.get(), &one, sizeof(one));
  (void)unused;
}

void PtyRelay::Run() {
  char buf[16384];
  bool input_open = socket_.valid();
  bool eof_sent = false;
  while (!stop_.load()) {
    if (input_closed_.load() && !eof_sent) {
      input_open = false;
      eof_sent = true;
      char eot = 4;
      ssize_t unused = ::write(master_.get(), &eot, 1);
      (void)unused;
    }
    pollfd fds[3] = {{master_.get(), POLLIN, 0},
                     {wake_.get(), POLLIN, 0},
                     {input_open ? socket_.get() : -1, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      ssize_t unused = ::read(wake_.get(), &v, sizeof(v));
      (void)unused;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(master_.get(), buf, sizeof(buf));
      if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        break;  // EIO: every slave holder is gone and the output is drained
      }
      if (socket_.valid() && !WriteAll(socket_.get(), buf, static_cast<size_t>(n))) socket_.reset();
    }
    if (input_open && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = ::read(socket_.get(), buf, sizeof(buf));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        input_open = false;
      } else if (!WriteAll(master_.get(), buf, static_cast<size_t>(n))) {
        input_open = false;
      }
    }
  }
  if (socket_.valid()) ::shutdown(socket_.get(), SHUT_WR);
  if (done_) done_();
}

}  // namespace vessel::agent
