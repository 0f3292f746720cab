// End to end: the Linux guest as the real peer of vessel's virtio-vsock (hybrid, Unix-socket
// backed) and virtio-net (tap) devices, in one boot. The guest's test init and static vessel-probe
// run the guest side; this test plays the host side:
// - vsock: streams 16 MiB through the guest's echo server via `CONNECT 5000` on the hybrid socket and
//   checks every byte came back; answers the guest's connect to host port 5001 on `<uds>_5001`;
//   leaves port 5002 without a listener (the guest must see its connect fail).
// - net: a tap in a scratch network namespace with 10.0.2.1/30; the guest pings it, receives 16 MiB
//   over TCP from it and sends 16 MiB back; both sides hash the seeded stream.
// On this build host (kvm_pvm) guest kernel code is emulated: minutes; labelled e2e.
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

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "guest/testing/probe_stream.h"
#include "gtest/gtest.h"

namespace vessel {
namespace {

constexpr uint64_t kStreamBytes = 16ull << 20;
constexpr auto kTimeout = std::chrono::seconds(1500);

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

// The hash of the first `bytes` of the stream seeded with `seed`.
std::string ExpectedHash(uint64_t seed, uint64_t bytes) {
  probe::StreamGenerator gen(seed);
  probe::Fnv1a64 hash;
  std::vector<uint8_t> buf(1 << 16);
  while (bytes > 0) {
    size_t n = std::min<uint64_t>(bytes, buf.size());
    gen.Fill(buf.data(), n);
    hash.Update(buf.data(), n);
    bytes -= n;
  }
  return Hex(hash.hash());
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
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
std::string HashToEof(int fd) {
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

void SendStream(int fd, uint64_t seed, uint64_t bytes) {
  probe::StreamGenerator gen(seed);
  std::vector<uint8_t> buf(1 << 16);
  while (bytes > 0) {
    size_t n = std::min<uint64_t>(bytes, buf.size());
    gen.Fill(buf.data(), n);
    if (!WriteAll(fd, buf.data(), n)) return;
    bytes -= n;
  }
}

int Shell(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Runs `fn` on a thread that entered the network namespace at `netns_path`.
template <typename Fn>
auto InNetns(const std::string& netns_path, Fn fn) {
  return std::async(std::launch::async, [netns_path, fn]() mutable {
    int fd = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) ::close(fd);
      return std::string("error: setns ") + netns_path + ": " + std::strerror(errno);
    }
    ::close(fd);
    return fn();
  });
}

int ListenUnix(const std::string& path) {
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

class VsockNetE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespace, tap)";
    if (Shell("ip -V") != 0) GTEST_SKIP() << "needs iproute2 (apt-get install iproute2)";
    netns_ = absl::StrCat("vessel-e2e-", ::getpid());
    netns_path_ = "/var/run/netns/" + netns_;
    ASSERT_EQ(Shell("ip netns add " + netns_), 0);
    ASSERT_EQ(Shell(absl::StrCat("ip -n ", netns_, " tuntap add dev vtap0 mode tap")), 0);
    ASSERT_EQ(Shell(absl::StrCat("ip -n ", netns_, " addr add 10.0.2.1/30 dev vtap0")), 0);
    ASSERT_EQ(Shell(absl::StrCat("ip -n ", netns_, " link set vtap0 up")), 0);
    uds_ = (std::filesystem::temp_directory_path() / absl::StrCat("vessel-e2e-", ::getpid(), ".vsock")).string();
  }
  void TearDown() override {
    if (!netns_.empty()) Shell("ip netns del " + netns_);
    std::filesystem::remove(uds_);
    std::filesystem::remove(uds_ + "_5001");
  }

  std::string netns_, netns_path_, uds_;
};

TEST_F(VsockNetE2eTest, GuestIsTheRealPeerOfVsockAndNet) {
  // Host listeners that exist before the guest boots.
  int l5001 = ListenUnix(uds_ + "_5001");
  ASSERT_GE(l5001, 0);
  auto guest_to_host = std::async(std::launch::async, [l5001] {
    int c = ::accept(l5001, nullptr, nullptr);
    ::close(l5001);
    if (c < 0) return std::string("accept failed");
    std::string got;
    char ch;
    while (::read(c, &ch, 1) == 1 && ch != '\n') got += ch;
    WriteAll(c, reinterpret_cast<const uint8_t*>("hello-from-host\n"), 16);
    ::close(c);
    return got;
  });
  std::promise<int> tcp7000_listening;
  auto tcp7000 = InNetns(netns_path_, [&tcp7000_listening] {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(7000);
    ::inet_pton(AF_INET, "10.0.2.1", &addr.sin_addr);
    if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(s, 1) != 0) {
      tcp7000_listening.set_value(-1);
      return std::string("error: listen on 10.0.2.1:7000: ") + std::strerror(errno);
    }
    tcp7000_listening.set_value(0);
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, 1500 * 1000) != 1) return std::string("error: nobody connected to 7000");
    int c = ::accept(s, nullptr, nullptr);
    ::close(s);
    std::string r = HashToEof(c);
    ::close(c);
    return r;
  });
  ASSERT_EQ(tcp7000_listening.get_future().get(), 0);

  // The VMM.
  int in_pipe[2], out_pipe[2];
  ASSERT_EQ(::pipe2(in_pipe, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(out_pipe, O_CLOEXEC), 0);
  std::string guest = VESSEL_GUEST_DIR;
  std::vector<std::string> args = {
      VESSEL_VMM_BINARY, "--kernel=" + guest + "/vmlinux", "--initrd=" + guest + "/initramfs.cpio",
      "--mem-mib=256", "--vsock=3," + uds_, "--net=vtap0,mac=52:54:00:12:34:56,netns=" + netns_path_,
      "--append=vessel_test_cpus=1 vessel_test_mem_mib=256 vessel.token=vsocknet vessel_test_vsock=1 "
      "vessel_test_net=1"};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(out_pipe[1], 2);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);

  std::future<std::string> vsock_echo, tcp7001;
  bool vsock_result_sent = false;
  std::string output;
  auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{out_pipe[0], POLLIN, 0};
    if (::poll(&pfd, 1, 500) > 0) {
      char buf[4096];
      ssize_t n = ::read(out_pipe[0], buf, sizeof(buf));
      if (n <= 0) break;
      output.append(buf, static_cast<size_t>(n));
      std::fwrite(buf, 1, static_cast<size_t>(n), stdout);  // progress: the console as it comes
      std::fflush(stdout);
    }
    if (!vsock_echo.valid() && output.find("vessel-test: vsock echo listening on 5000") != std::string::npos) {
      std::string uds = uds_;
      vsock_echo = std::async(std::launch::async, [uds] {
        int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, uds.c_str(), sizeof(addr.sun_path) - 1);
        if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          return std::string("error: connect to ") + uds + ": " + std::strerror(errno);
        }
        WriteAll(s, reinterpret_cast<const uint8_t*>("CONNECT 5000\n"), 13);
        std::string ok;
        char ch;
        while (::read(s, &ch, 1) == 1 && ch != '\n') ok += ch;
        if (ok.rfind("OK ", 0) != 0) return "error: handshake answered '" + ok + "'";
        std::thread writer([s] {
          SendStream(s, 5, kStreamBytes);
          ::shutdown(s, SHUT_WR);
        });
        std::string r = HashToEof(s);
        writer.join();
        ::close(s);
        return r;
      });
    }
    if (vsock_echo.valid() && !vsock_result_sent &&
        vsock_echo.wait_for(std::chrono::seconds(0)) == std::future_status::ready &&
        output.find("vessel-test: waiting for the host's vsock echo result") != std::string::npos) {
      std::string got = vsock_echo.get();
      std::string want = "bytes=" + std::to_string(kStreamBytes) + " hash=" + ExpectedHash(5, kStreamBytes);
      EXPECT_EQ(got, want) << "vsock echo";
      std::string line = got == want ? "vsock-echo-ok\n" : "vsock-echo-bad\n";
      EXPECT_EQ(::write(in_pipe[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
      vsock_result_sent = true;
    }
    if (!tcp7001.valid() && output.find("vessel-test: net listening on 7001") != std::string::npos) {
      tcp7001 = InNetns(netns_path_, [] {
        int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(7001);
        ::inet_pton(AF_INET, "10.0.2.2", &addr.sin_addr);
        if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          return std::string("error: connect 10.0.2.2:7001: ") + std::strerror(errno);
        }
        SendStream(s, 11, kStreamBytes);
        ::close(s);
        return std::string("sent");
      });
    }
  }
  if (std::chrono::steady_clock::now() >= deadline) {
    ::kill(pid, SIGKILL);
    ADD_FAILURE() << "timed out";
  }
  ::close(in_pipe[1]);
  ::close(out_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "vessel-vmm exit status " << status;

  // Every TAP line is ok, and the plan says 12 (4 base + 4 vsock + 4 net).
  EXPECT_NE(output.find("1..12"), std::string::npos);
  for (int i = 1; i <= 12; ++i) {
    std::regex ok(absl::StrCat("\nok ", i, " - "));
    EXPECT_TRUE(std::regex_search(output, ok)) << "TAP " << i << " missing or not ok";
  }
  EXPECT_EQ(output.find("not ok"), std::string::npos);

  // Guest -> host vsock on 5001 carried the guest's message.
  ASSERT_EQ(guest_to_host.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(guest_to_host.get(), "hello-from-guest");
  // TCP both ways: the receiver's hash is the sender's stream.
  std::string want_rx = "bytes=16777216 hash=" + ExpectedHash(11, kStreamBytes);
  EXPECT_NE(output.find("# net_rx " + want_rx), std::string::npos) << "guest received: " << want_rx;
  ASSERT_TRUE(tcp7001.valid());
  EXPECT_EQ(tcp7001.get(), "sent");
  std::string want_tx = "bytes=16777216 hash=" + ExpectedHash(7, kStreamBytes);
  EXPECT_EQ(tcp7000.get(), want_tx);
  EXPECT_NE(output.find("# net_tx " + want_tx), std::string::npos);
}

}  // namespace
}  // namespace vessel
