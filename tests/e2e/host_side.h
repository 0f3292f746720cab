// The host side of the vsock/net end-to-end tests and benchmarks: a scratch network namespace with
// a tap, the seeded stream (guest/testing/probe_stream.h) sent and hashed over sockets, hybrid vsock
// connects, and vessel-vmm run as a child with its console on a pipe. Header-only, test code.
#ifndef VESSEL_TESTS_E2E_HOST_SIDE_H_
#define VESSEL_TESTS_E2E_HOST_SIDE_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "guest/testing/probe_stream.h"

namespace vessel::e2e {

inline std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

// "bytes=N hash=H" of the first `bytes` of the stream seeded with `seed`: what vessel-probe prints.
inline std::string ExpectedStream(uint64_t seed, uint64_t bytes) {
  probe::StreamGenerator gen(seed);
  probe::Fnv1a64 hash;
  std::vector<uint8_t> buf(1 << 16);
  for (uint64_t left = bytes; left > 0;) {
    size_t n = std::min<uint64_t>(left, buf.size());
    gen.Fill(buf.data(), n);
    hash.Update(buf.data(), n);
    left -= n;
  }
  return absl::StrCat("bytes=", bytes, " hash=", Hex(hash.hash()));
}

inline bool WriteAll(int fd, const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads to EOF; returns "bytes=N hash=H".
inline std::string HashToEof(int fd) {
  probe::Fnv1a64 hash;
  std::vector<uint8_t> buf(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    hash.Update(buf.data(), static_cast<size_t>(n));
  }
  return absl::StrCat("bytes=", hash.bytes(), " hash=", Hex(hash.hash()));
}

inline void SendStream(int fd, uint64_t seed, uint64_t bytes) {
  probe::StreamGenerator gen(seed);
  std::vector<uint8_t> buf(1 << 16);
  while (bytes > 0) {
    size_t n = std::min<uint64_t>(bytes, buf.size());
    gen.Fill(buf.data(), n);
    if (!WriteAll(fd, buf.data(), n)) return;
    bytes -= n;
  }
}

inline std::string ReadLine(int fd) {
  std::string line;
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n') line += ch;
  return line;
}

// Runs a shell command quietly; its exit status.
inline int Shell(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Runs `fn` (returning std::string) on a thread inside the network namespace at `netns_path`.
template <typename Fn>
std::future<std::string> InNetns(const std::string& netns_path, Fn fn) {
  return std::async(std::launch::async, [netns_path, fn]() mutable {
    int fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) ::close(fd);
      return std::string("error: setns ") + netns_path + ": " + std::strerror(errno);
    }
    ::close(fd);
    return std::string(fn());
  });
}

inline int ListenUnix(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ::unlink(path.c_str());
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(s, 4) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// Hybrid vsock: connects to the device's socket and asks for guest `port`. The fd, or -1 with
// `error` saying why (the VMM's answer when it was not "OK <host port>").
inline int HybridConnect(const std::string& uds, uint32_t port, std::string* error) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, uds.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = "connect to " + uds + ": " + std::strerror(errno);
    ::close(s);
    return -1;
  }
  std::string line = absl::StrCat("CONNECT ", port, "\n");
  WriteAll(s, line.data(), line.size());
  std::string ok = ReadLine(s);
  if (ok.rfind("OK ", 0) != 0) {
    *error = "CONNECT " + std::to_string(port) + " answered '" + ok + "'";
    ::close(s);
    return -1;
  }
  return s;
}

// TCP socket bound/connected inside the calling thread's network namespace.
inline int TcpListen(const char* address, uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, address, &addr.sin_addr);
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(s, 1) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}
inline int TcpConnect(const char* address, uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, address, &addr.sin_addr);
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

// A network namespace named vessel-<tag>-<pid> with tap vtap0 at 10.0.2.1/30, up; deleted on
// destruction. ok() is false (and error() says why) without root or iproute2.
class ScratchNetns {
 public:
  explicit ScratchNetns(const std::string& tag) : name_(absl::StrCat("vessel-", tag, "-", ::getpid())) {
    if (::geteuid() != 0) {
      error_ = "needs root (network namespace, tap)";
      return;
    }
    if (Shell("ip -V") != 0) {
      error_ = "needs iproute2 (apt-get install iproute2)";
      return;
    }
    for (const std::string& cmd : {"ip netns add " + name_, "ip -n " + name_ + " tuntap add dev vtap0 mode tap",
                                   "ip -n " + name_ + " addr add 10.0.2.1/30 dev vtap0",
                                   "ip -n " + name_ + " link set vtap0 up"}) {
      if (Shell(cmd) != 0) {
        error_ = "failed: " + cmd;
        return;
      }
    }
  }
  ~ScratchNetns() { Shell("ip netns del " + name_); }
  ScratchNetns(const ScratchNetns&) = delete;
  ScratchNetns& operator=(const ScratchNetns&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  std::string path() const { return "/var/run/netns/" + name_; }

 private:
  std::string name_;
  std::string error_;
};

// vessel-vmm as a child: console (stdout+stderr) on a pipe we read, stdin on a pipe we write.
class VmmProcess {
 public:
  explicit VmmProcess(std::vector<std::string> argv) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~VmmProcess() {
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
  }
  VmmProcess(const VmmProcess&) = delete;
  VmmProcess& operator=(const VmmProcess&) = delete;

  // Appends what the console printed within `timeout_ms` to output(); false at EOF.
  bool Pump(int timeout_ms, bool echo) {
    pollfd pfd{stdout_, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) return true;
    char buf[4096];
    ssize_t n = ::read(stdout_, buf, sizeof(buf));
    if (n <= 0) return false;
    output_.append(buf, static_cast<size_t>(n));
    if (echo) {
      std::fwrite(buf, 1, static_cast<size_t>(n), stdout);
      std::fflush(stdout);
    }
    return true;
  }
  bool Saw(const std::string& text) const { return output_.find(text) != std::string::npos; }
  bool WriteLine(const std::string& line) {
    std::string l = line + "\n";
    return ::write(stdin_, l.data(), l.size()) == static_cast<ssize_t>(l.size());
  }
  // The exit status (or -1 when killed by a signal).
  int Wait() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return status_;
  }
  void Kill() { if (pid_ > 0) ::kill(pid_, SIGKILL); }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  int status_ = -1;
  std::string output_;
};

}  // namespace vessel::e2e

#endif  // VESSEL_TESTS_E2E_HOST_SIDE_H_
