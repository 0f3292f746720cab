#include "sandbox/stdio_stream.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <limits.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

constexpr size_t kChunk = 64 * 1024;

void Signal(int eventfd) {
  uint64_t one = 1;
  (void)!::write(eventfd, &one, sizeof(one));
}

// Writes everything unless the peer is gone (false) or `stop` fires (false). Waits for room with
// poll and writes at most PIPE_BUF at a time, which poll's POLLOUT guarantees fits: a blocking
// caller fd never blocks us past an Abort.
bool WriteAll(int fd, const char* data, size_t size, int stop) {
  while (size > 0) {
    pollfd fds[2] = {{fd, POLLOUT, 0}, {stop, POLLIN, 0}};
    int p = ::poll(fds, 2, -1);
    if (p < 0 && errno == EINTR) continue;
    if (p < 0 || (fds[1].revents & POLLIN)) return false;
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
      errno = (fds[0].revents & POLLNVAL) ? EBADF : EPIPE;  // for the caller's message
      return false;
    }
    size_t chunk = size < PIPE_BUF ? size : PIPE_BUF;
    ssize_t n = ::send(fd, data, chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data, chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StdioStream>> StdioStream::Listen(const std::string& uds_base,
                                                                 uint32_t port, ScopedFd input,
                                                                 ScopedFd output, std::string name) {
  std::string path = absl::StrCat(uds_base, "_", port);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("stdio socket path ", path, " is too long for a Unix socket: use a shorter state_dir"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ScopedFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return ErrnoStatus("socket(AF_UNIX) for " + name);
  ::unlink(path.c_str());
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("bind ", path, " (", name, ")"));
  }
  if (::listen(listener.get(), 4) != 0) return ErrnoStatus("listen " + path);
  ScopedFd stop(::eventfd(0, EFD_CLOEXEC));
  ScopedFd close_input(::eventfd(0, EFD_CLOEXEC));
  if (!stop.valid() || !close_input.valid()) return ErrnoStatus("eventfd for " + name);
  std::unique_ptr<StdioStream> stream(new StdioStream(port, path, std::move(name), std::move(listener),
                                                      std::move(input), std::move(output),
                                                      std::move(stop), std::move(close_input)));
  stream->thread_ = std::thread([s = stream.get()] { s->Run(); });
  return stream;
}

StdioStream::StdioStream(uint32_t port, std::string path, std::string name, ScopedFd listener,
                         ScopedFd input, ScopedFd output, ScopedFd stop, ScopedFd close_input)
    : port_(port),
      path_(std::move(path)),
      name_(std::move(name)),
      carries_output_(output.valid()),
      listener_(std::move(listener)),
      input_(std::move(input)),
      output_(std::move(output)),
      stop_(std::move(stop)),
      close_input_(std::move(close_input)) {}

StdioStream::~StdioStream() {
  Abort();
  if (thread_.joinable()) thread_.join();
  if (input_thread_.joinable()) input_thread_.join();
  ::unlink(path_.c_str());
}

void StdioStream::Abort() { Signal(stop_.get()); }

void StdioStream::CloseInput() { Signal(close_input_.get()); }

bool StdioStream::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

bool StdioStream::WaitOutputDone(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return output_done_; });
}

void StdioStream::FinishOutput() {
  std::lock_guard<std::mutex> lock(mu_);
  output_done_ = true;
  cv_.notify_all();
}

void StdioStream::Run() {
  // A write to a pipe whose reader is gone raises SIGPIPE, which kills an embedding program that
  // did not ignore it: poll's POLLERR only catches a reader that left before the poll. Blocked
  // here, it is inherited by the input thread; a pending thread-directed SIGPIPE dies with us.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) {
      FinishOutput();
      return;
    }
    int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    conn_.reset(c);
    break;
  }
  listener_.reset();
  ::unlink(path_.c_str());
  {
    std::lock_guard<std::mutex> lock(mu_);
    connected_ = true;
    cv_.notify_all();
  }
  if (input_.valid()) {
    input_thread_ = std::thread([this] { PumpInput(); });
  } else {
    ::shutdown(conn_.get(), SHUT_WR);  // nothing to send: the guest reads EOF at once
  }
  PumpOutput();
}

void StdioStream::PumpInput() {
  std::unique_ptr<char[]> buf(new char[kChunk]);
  pollfd fds[3] = {{input_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}, {close_input_.get(), POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds, 3, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return;
    if (fds[2].revents & POLLIN) break;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::read(input_.get(), buf.get(), kChunk);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) break;  // EOF (or an error) on the caller's side
      if (!WriteAll(conn_.get(), buf.get(), static_cast<size_t>(r), stop_.get())) return;  // the guest side is gone
    }
  }
  ::shutdown(conn_.get(), SHUT_WR);
}

void StdioStream::PumpOutput() {
  std::unique_ptr<char[]> buf(new char[kChunk]);
  bool sink_ok = output_.valid();
  pollfd fds[2] = {{conn_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) break;
    ssize_t r = ::read(conn_.get(), buf.get(), kChunk);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) break;
    if (sink_ok && !WriteAll(output_.get(), buf.get(), static_cast<size_t>(r), stop_.get())) {
      pollfd stop = {stop_.get(), POLLIN, 0};
      if (::poll(&stop, 1, 0) == 1) break;  // Abort
      // The caller closed its end: keep draining so the guest process never blocks on us.
      LogWarning(name_, ": the output's reader went away (", std::strerror(errno),
                 "); discarding the rest");
      sink_ok = false;
    }
  }
  output_.reset();  // the caller's reader sees EOF once every copy of its fd is closed
  FinishOutput();
}

}  // namespace vessel::sandbox
