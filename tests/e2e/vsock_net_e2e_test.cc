// End to end: the Linux guest as the real peer of vessel's virtio-vsock (hybrid, Unix-socket
// backed) and virtio-net (tap) devices, in one boot. The guest's test init and static vessel-probe
// run the guest side; this test plays the host side:
// - vsock: streams 16 MiB through the guest's echo server via `CONNECT 5000` on the hybrid socket and
//   checks every byte came back; answers the guest's connect to host port 5001 on `<uds>_5001`;
//   leaves port 5002 without a listener (the guest must see its connect fail).
// - net: a tap in a scratch network namespace with 10.0.2.1/30; the guest pings it, receives 16 MiB
//   over TCP from it and sends 16 MiB back; both sides hash the seeded stream.
// On this build host (kvm_pvm) guest kernel code is emulated: minutes; labelled e2e.
#include <chrono>
#include <future>
#include <regex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/host_side.h"

namespace vessel::e2e {
namespace {

constexpr uint64_t kStreamBytes = 16ull << 20;
constexpr auto kTimeout = std::chrono::seconds(1500);

TEST(VsockNetE2eTest, GuestIsTheRealPeerOfVsockAndNet) {
  ScratchNetns netns("e2e");
  if (!netns.ok()) GTEST_SKIP() << netns.error();
  const std::string uds = absl::StrCat("/tmp/vessel-e2e-", ::getpid(), ".vsock");

  // Host listeners that exist before the guest boots: vsock port 5001, TCP 10.0.2.1:7000.
  int l5001 = ListenUnix(uds + "_5001");
  ASSERT_GE(l5001, 0);
  auto guest_to_host = std::async(std::launch::async, [l5001] {
    int c = ::accept(l5001, nullptr, nullptr);
    ::close(l5001);
    if (c < 0) return std::string("accept failed");
    std::string got = ReadLine(c);
    WriteAll(c, "hello-from-host\n", 16);
    ::close(c);
    return got;
  });
  std::promise<bool> tcp7000_listening;
  auto tcp7000 = InNetns(netns.path(), [&tcp7000_listening] {
    int s = TcpListen("10.0.2.1", 7000);
    tcp7000_listening.set_value(s >= 0);
    if (s < 0) return std::string("error: listen on 10.0.2.1:7000: ") + std::strerror(errno);
    pollfd p{s, POLLIN, 0};
    if (::poll(&p, 1, 1500 * 1000) != 1) return std::string("error: nobody connected to 7000");
    int c = ::accept(s, nullptr, nullptr);
    ::close(s);
    std::string r = HashToEof(c);
    ::close(c);
    return r;
  });
  ASSERT_TRUE(tcp7000_listening.get_future().get());

  const std::string guest = VESSEL_GUEST_DIR;
  VmmProcess vmm({VESSEL_VMM_BINARY, "--kernel=" + guest + "/vmlinux",
                  "--initrd=" + guest + "/test-initramfs.cpio", "--mem-mib=256", "--vsock=3," + uds,
                  "--net=vtap0,mac=52:54:00:12:34:56,netns=" + netns.path(),
                  "--append=vessel_test_cpus=1 vessel_test_mem_mib=256 vessel.token=vsocknet "
                  "vessel_test_vsock=1 vessel_test_net=1"});

  std::future<std::string> vsock_echo, tcp7001;
  bool vsock_result_sent = false;
  bool timed_out = true;
  auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!vmm.Pump(500, /*echo=*/true)) {
      timed_out = false;
      break;
    }
    // Host -> guest through the hybrid socket: 16 MiB into the guest's echo server and back.
    if (!vsock_echo.valid() && vmm.Saw("vessel-test: vsock echo listening on 5000")) {
      vsock_echo = std::async(std::launch::async, [uds] {
        std::string error;
        int s = HybridConnect(uds, 5000, &error);
        if (s < 0) return "error: " + error;
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
        vmm.Saw("vessel-test: waiting for the host's vsock echo result")) {
      std::string got = vsock_echo.get();
      EXPECT_EQ(got, ExpectedStream(5, kStreamBytes)) << "vsock echo";
      EXPECT_TRUE(vmm.WriteLine(got == ExpectedStream(5, kStreamBytes) ? "vsock-echo-ok" : "vsock-echo-bad"));
      vsock_result_sent = true;
    }
    // Host -> guest over TCP once the guest listens on 7001.
    if (!tcp7001.valid() && vmm.Saw("vessel-test: net listening on 7001")) {
      tcp7001 = InNetns(netns.path(), [] {
        int s = TcpConnect("10.0.2.2", 7001);
        if (s < 0) return std::string("error: connect 10.0.2.2:7001: ") + std::strerror(errno);
        SendStream(s, 11, kStreamBytes);
        ::close(s);
        return std::string("sent");
      });
    }
  }
  if (timed_out) {
    vmm.Kill();
    ADD_FAILURE() << "timed out";
  }
  EXPECT_EQ(vmm.Wait(), 0) << "vessel-vmm exit status";
  const std::string& output = vmm.output();

  // Every TAP line is ok, and the plan says 12 (4 base + 4 vsock + 4 net).
  EXPECT_NE(output.find("1..12"), std::string::npos);
  for (int i = 1; i <= 12; ++i) {
    EXPECT_TRUE(std::regex_search(output, std::regex(absl::StrCat("\nok ", i, " - "))))
        << "TAP " << i << " missing or not ok";
  }
  EXPECT_EQ(output.find("not ok"), std::string::npos);

  // Guest -> host vsock on 5001 carried the guest's message.
  ASSERT_EQ(guest_to_host.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(guest_to_host.get(), "hello-from-guest");
  // TCP both ways: the receiver's hash is the sender's stream.
  EXPECT_NE(output.find("# net_rx " + ExpectedStream(11, kStreamBytes)), std::string::npos);
  ASSERT_TRUE(tcp7001.valid());
  EXPECT_EQ(tcp7001.get(), "sent");
  EXPECT_EQ(tcp7000.get(), ExpectedStream(7, kStreamBytes));
  EXPECT_NE(output.find("# net_tx " + ExpectedStream(7, kStreamBytes)), std::string::npos);
  std::remove((uds + "_5001").c_str());
}

}  // namespace
}  // namespace vessel::e2e
