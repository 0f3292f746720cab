// vessel-probe: the static in-guest side of the vsock and network end-to-end tests. Runs under the
// test init; every result is one line on stdout, errors name the call and errno.
//   vessel-probe vsock-echo PORT                 listen on vsock PORT, echo every connection
//   vessel-probe vsock-connect CID PORT MESSAGE  connect, send MESSAGE, print the reply
//   vessel-probe tcp-send ADDR PORT BYTES SEED   send the seeded stream; print bytes and hash
//   vessel-probe tcp-recv PORT                   accept one connection, read to EOF; print bytes and hash
//   vessel-probe file-write PATH BYTES SEED      write the seeded stream to PATH, fsync; print bytes and hash
//   vessel-probe file-hash PATH                  read PATH; print bytes and hash
//   vessel-probe fs-bench DIR FILES BYTES        guest/testing/fs_workload.h in DIR; print the rates
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "guest/testing/fs_workload.h"
#include "guest/testing/probe_stream.h"

namespace {

int Fail(const char* what) {
  std::printf("error: %s: %s (errno %d)\n", what, std::strerror(errno), errno);
  std::fflush(stdout);
  return 1;
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// One process, poll(2) over the listener and every connection: no fork or thread per connection
// (each costs seconds of emulated kernel work on kvm_pvm, and the accept backlog would overflow).
int VsockEcho(uint32_t port) {
  int s = ::socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return Fail("socket(AF_VSOCK)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fail("bind");
  if (::listen(s, 64) != 0) return Fail("listen");
  std::printf("listening on vsock port %u\n", port);
  std::fflush(stdout);
  std::vector<pollfd> fds = {{s, POLLIN, 0}};
  static uint8_t buf[1 << 16];
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return Fail("poll");
    }
    for (size_t i = fds.size(); i-- > 1;) {
      if (fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0 && WriteAll(fds[i].fd, buf, static_cast<size_t>(n))) continue;
      if (n < 0 && errno == EINTR) continue;
      ::close(fds[i].fd);  // EOF or error: this connection is done
      fds.erase(fds.begin() + static_cast<long>(i));
    }
    if (fds[0].revents & POLLIN) {
      int c = ::accept(s, nullptr, nullptr);
      if (c >= 0) fds.push_back({c, POLLIN, 0});
    }
  }
}

int VsockConnect(uint32_t cid, uint32_t port, const std::string& message) {
  int s = ::socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return Fail("socket(AF_VSOCK)");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid;
  addr.svm_port = port;
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fail("connect");
  std::string line = message + "\n";
  if (!WriteAll(s, reinterpret_cast<const uint8_t*>(line.data()), line.size())) return Fail("write");
  ::shutdown(s, SHUT_WR);
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(s, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("read");
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  std::printf("reply: %s\n", reply.c_str());
  return 0;
}

int TcpSend(const char* address, uint16_t port, uint64_t bytes, uint64_t seed) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return Fail("socket(AF_INET)");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, address, &addr.sin_addr) != 1) return Fail("inet_pton");
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fail("connect");
  vessel::probe::StreamGenerator gen(seed);
  vessel::probe::Fnv1a64 hash;
  static uint8_t buf[1 << 16];
  uint64_t left = bytes;
  while (left > 0) {
    size_t n = left < sizeof(buf) ? static_cast<size_t>(left) : sizeof(buf);
    gen.Fill(buf, n);
    hash.Update(buf, n);
    if (!WriteAll(s, buf, n)) return Fail("write");
    left -= n;
  }
  ::close(s);
  std::printf("bytes=%" PRIu64 " hash=%016" PRIx64 "\n", hash.bytes(), hash.hash());
  return 0;
}

int TcpRecv(uint16_t port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return Fail("socket(AF_INET)");
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fail("bind");
  if (::listen(s, 1) != 0) return Fail("listen");
  std::printf("listening on tcp port %u\n", port);
  std::fflush(stdout);
  int c = ::accept(s, nullptr, nullptr);
  if (c < 0) return Fail("accept");
  vessel::probe::Fnv1a64 hash;
  static uint8_t buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(c, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("read");
    if (n == 0) break;
    hash.Update(buf, static_cast<size_t>(n));
  }
  std::printf("bytes=%" PRIu64 " hash=%016" PRIx64 "\n", hash.bytes(), hash.hash());
  return 0;
}

int FileWrite(const char* path, uint64_t bytes, uint64_t seed) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Fail("open");
  vessel::probe::StreamGenerator gen(seed);
  vessel::probe::Fnv1a64 hash;
  static uint8_t buf[1 << 20];
  for (uint64_t left = bytes; left > 0;) {
    size_t n = left < sizeof(buf) ? static_cast<size_t>(left) : sizeof(buf);
    gen.Fill(buf, n);
    hash.Update(buf, n);
    if (!WriteAll(fd, buf, n)) return Fail("write");
    left -= n;
  }
  if (::fsync(fd) != 0) return Fail("fsync");
  ::close(fd);
  std::printf("bytes=%" PRIu64 " hash=%016" PRIx64 "\n", hash.bytes(), hash.hash());
  return 0;
}

int FileHash(const char* path) {
  int fd = ::open(path, O_RDONLY);
  if (fd < 0) return Fail("open");
  vessel::probe::Fnv1a64 hash;
  static uint8_t buf[1 << 20];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("read");
    if (n == 0) break;
    hash.Update(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  std::printf("bytes=%" PRIu64 " hash=%016" PRIx64 "\n", hash.bytes(), hash.hash());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "vsock-echo" && argc == 3) return VsockEcho(std::strtoul(argv[2], nullptr, 10));
  if (mode == "vsock-connect" && argc == 5) {
    return VsockConnect(std::strtoul(argv[2], nullptr, 10), std::strtoul(argv[3], nullptr, 10), argv[4]);
  }
  if (mode == "tcp-send" && argc == 6) {
    return TcpSend(argv[2], static_cast<uint16_t>(std::strtoul(argv[3], nullptr, 10)),
                   std::strtoull(argv[4], nullptr, 10), std::strtoull(argv[5], nullptr, 10));
  }
  if (mode == "file-write" && argc == 5) {
    return FileWrite(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10));
  }
  if (mode == "file-hash" && argc == 3) return FileHash(argv[2]);
  if (mode == "fs-bench" && argc == 5) {
    vessel::probe::FsWorkloadResult r = vessel::probe::RunFsWorkload(
        argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
    if (!r.ok) return Fail("fs-bench");
    std::printf("metadata_ops_per_s=%.0f write_mib_per_s=%.1f read_mib_per_s=%.1f\n",
                r.metadata_ops_per_s, r.write_mib_per_s, r.read_mib_per_s);
    return 0;
  }
  if (mode == "tcp-recv" && argc == 3) return TcpRecv(static_cast<uint16_t>(std::strtoul(argv[2], nullptr, 10)));
  std::fprintf(stderr,
               "usage: vessel-probe vsock-echo PORT | vsock-connect CID PORT MESSAGE |\n"
               "       tcp-send ADDR PORT BYTES SEED | tcp-recv PORT |\n"
               "       file-write PATH BYTES SEED | file-hash PATH | fs-bench DIR FILES BYTES\n");
  return 2;
}
