// sandbox/network against real namespaces: a pod namespace made the way a CNI plugin makes one
// (iproute2's `ip`, an independent implementation: a veth with IPv4 + IPv6 addresses, a MAC, MTU
// 1400 and routes, its peer in a second "host" namespace), read back by InspectPodNetwork; a real
// tap (devices/net's Tap, as the virtio-net device opens it) joined to the veth by TcMirror, with
// frames sent both ways and iproute2's `tc` checking what was installed and what was removed.
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "devices/net/netns.h"
#include "devices/net/tap.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sandbox/network/pod_network.h"
#include "sandbox/network/tc_mirror.h"
#include "tests/devices/net_test_env.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::sandbox::network {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPodMac[] = "02:00:00:aa:bb:01";
constexpr char kPeerMac[] = "02:00:00:aa:bb:02";
constexpr std::chrono::milliseconds kFrameTimeout(2000);

// Runs a shell command; its output (stdout and stderr) when it exits 0.
absl::StatusOr<std::string> Shell(const std::string& command) {
  FILE* pipe = ::popen(absl::StrCat(command, " 2>&1").c_str(), "r");
  if (pipe == nullptr) return ErrnoStatus(absl::StrCat("popen ", command));
  std::string output;
  std::array<char, 4096> chunk;
  size_t n;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0) output.append(chunk.data(), n);
  const int rc = ::pclose(pipe);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` failed (", rc, "): ", output));
  }
  return output;
}

std::string RouteText(const vessel::agent::v1::Route& r) {
  return absl::StrCat(r.destination(), " gw=", r.gateway(), " dev=", r.device(),
                      " src=", r.source(), " scope=", r.scope());
}

// An AF_PACKET socket bound to `ifname` in the namespace at `netns_path`.
absl::StatusOr<ScopedFd> PacketSocketIn(const std::string& netns_path, const std::string& ifname) {
  ScopedFd fd;
  VESSEL_RETURN_IF_ERROR(net::RunInNetns(netns_path, [&]() -> absl::Status {
    fd.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    if (!fd.valid()) return ErrnoStatus("socket(AF_PACKET)");
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
    if (sll.sll_ifindex == 0) return ErrnoStatus(absl::StrCat("if_nametoindex ", ifname));
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
      return ErrnoStatus(absl::StrCat("bind AF_PACKET to ", ifname));
    }
    return absl::OkStatus();
  }));
  return fd;
}

absl::StatusOr<int> IfIndexIn(const std::string& netns_path, const std::string& ifname) {
  int index = 0;
  VESSEL_RETURN_IF_ERROR(net::RunInNetns(netns_path, [&]() -> absl::Status {
    index = static_cast<int>(::if_nametoindex(ifname.c_str()));
    if (index == 0) return ErrnoStatus(absl::StrCat("if_nametoindex ", ifname));
    return absl::OkStatus();
  }));
  return index;
}

// The next frame of `ethertype` read from a tap fd, without its vnet header.
std::optional<std::vector<uint8_t>> ReadTapFrameOfType(int fd, uint16_t ethertype) {
  const auto deadline = std::chrono::steady_clock::now() + kFrameTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto frame = net::testing::ReadTapFrame(fd, kFrameTimeout);
    if (!frame.has_value()) return std::nullopt;
    if (frame->size() < net::Tap::kVnetHdrSize + 14) continue;
    frame->erase(frame->begin(), frame->begin() + net::Tap::kVnetHdrSize);
    if (((*frame)[12] << 8 | (*frame)[13]) == ethertype) return frame;
  }
  return std::nullopt;
}

// Two named namespaces, as a CNI plugin leaves them: "pod" holds eth0 (a veth with the pod's
// addresses and routes), "host" holds its peer.
class PodNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: creates network namespaces, veths, taps";
    if (!Shell("ip -V").ok() || !Shell("tc -V").ok()) {
      GTEST_SKIP() << "needs iproute2 (ip, tc) to build and check the test namespaces";
    }
    const std::string base = absl::StrCat("vessel-nettest-", ::getpid());
    pod_ns_ = base + "-pod";
    host_ns_ = base + "-host";
    pod_path_ = "/var/run/netns/" + pod_ns_;
    host_path_ = "/var/run/netns/" + host_ns_;
    for (const std::string& command : {
             absl::StrCat("ip netns add ", pod_ns_),
             absl::StrCat("ip netns add ", host_ns_),
             absl::StrCat("ip -n ", pod_ns_, " link add eth0 address ", kPodMac,
                          " mtu 1400 type veth peer name hostend address ", kPeerMac,
                          " mtu 1400 netns ", host_ns_),
             absl::StrCat("ip -n ", pod_ns_, " link set eth0 up"),
             absl::StrCat("ip -n ", host_ns_, " link set hostend up"),
             absl::StrCat("ip -n ", pod_ns_, " addr add 10.77.0.5/24 dev eth0"),
             absl::StrCat("ip -n ", pod_ns_, " addr add fd77::5/64 dev eth0 nodad"),
             absl::StrCat("ip -n ", pod_ns_, " route add default via 10.77.0.1 dev eth0"),
             absl::StrCat("ip -n ", pod_ns_,
                          " route add 192.168.50.0/24 via 10.77.0.1 dev eth0 src 10.77.0.5"),
             absl::StrCat("ip -n ", pod_ns_, " route add 10.99.0.0/16 dev eth0 scope link"),
             absl::StrCat("ip -n ", pod_ns_, " -6 route add default via fd77::1 dev eth0"),
         }) {
      absl::StatusOr<std::string> out = Shell(command);
      ASSERT_TRUE(out.ok()) << out.status();
    }
  }

  void TearDown() override {
    // Deleting a namespace deletes its interfaces (and the veth's peer with it).
    for (const std::string& ns : {pod_ns_, host_ns_, empty_ns_}) {
      if (!ns.empty()) Shell(absl::StrCat("ip netns del ", ns)).IgnoreError();
    }
  }

  std::string Tc(const std::string& args) {
    absl::StatusOr<std::string> out = Shell(absl::StrCat("ip netns exec ", pod_ns_, " tc ", args));
    EXPECT_TRUE(out.ok()) << out.status();
    return out.value_or("");
  }

  std::string pod_ns_, host_ns_, empty_ns_;
  std::string pod_path_, host_path_;
};

TEST_F(PodNetworkTest, InspectReturnsThePodInterfaceAddressesAndRoutes) {
  // The sandbox's own tap lives next to the veth and must not be taken for the pod interface.
  absl::StatusOr<net::Tap> tap = net::Tap::Open("vtap0", pod_path_);
  ASSERT_TRUE(tap.ok()) << tap.status();

  absl::StatusOr<PodNetwork> pod = InspectPodNetwork(pod_path_);
  ASSERT_TRUE(pod.ok()) << pod.status();

  EXPECT_EQ(pod->link.name, "eth0");
  EXPECT_EQ(pod->link.ifindex, IfIndexIn(pod_path_, "eth0").value_or(-1));
  EXPECT_EQ(net::FormatMac(pod->link.mac), kPodMac);
  EXPECT_EQ(pod->link.mtu, 1400u);

  EXPECT_EQ(pod->interface.name(), "eth0");
  EXPECT_EQ(pod->interface.mac(), kPodMac);
  EXPECT_EQ(pod->interface.mtu(), 1400u);
  std::vector<std::string> addresses;
  for (const auto& a : pod->interface.addresses()) {
    addresses.push_back(absl::StrCat(a.address(), "/", a.prefix_length()));
  }
  // Global addresses only: the kernel's fe80:: address is not the pod's.
  EXPECT_THAT(addresses, ElementsAre("10.77.0.5/24", "fd77::5/64"));

  std::vector<std::string> routes;
  for (const auto& r : pod->routes) routes.push_back(RouteText(r));
  // On-link before gateway routes, IPv4 before IPv6; the kernel's own prefix routes left out.
  EXPECT_THAT(routes, ElementsAre("10.99.0.0/16 gw= dev=eth0 src= scope=253",
                                  "default gw=10.77.0.1 dev=eth0 src= scope=0",
                                  "192.168.50.0/24 gw=10.77.0.1 dev=eth0 src=10.77.0.5 scope=0",
                                  "default gw=fd77::1 dev=eth0 src= scope=0"));
}

TEST_F(PodNetworkTest, MirrorsFramesBothWaysAndRemovesItsQdiscs) {
  absl::StatusOr<PodNetwork> pod = InspectPodNetwork(pod_path_);
  ASSERT_TRUE(pod.ok()) << pod.status();
  absl::StatusOr<net::Tap> tap = net::Tap::Open("vtap0", pod_path_);
  ASSERT_TRUE(tap.ok()) << tap.status();
  absl::StatusOr<ScopedFd> peer = PacketSocketIn(host_path_, "hostend");
  ASSERT_TRUE(peer.ok()) << peer.status();

  std::optional<TcMirror> mirror;
  {
    absl::StatusOr<TcMirror> created = TcMirror::Create(pod_path_, pod->link.name, "vtap0");
    ASSERT_TRUE(created.ok()) << created.status();
    mirror.emplace(std::move(*created));
  }
  EXPECT_EQ(mirror->veth_ifindex(), pod->link.ifindex);

  // What `tc` sees is what its own command line would have made.
  EXPECT_THAT(Tc("qdisc show dev eth0"), HasSubstr("qdisc ingress ffff:"));
  EXPECT_THAT(Tc("qdisc show dev vtap0"), HasSubstr("qdisc ingress ffff:"));
  EXPECT_THAT(Tc("filter show dev eth0 ingress"),
              HasSubstr("mirred (Egress Redirect to device vtap0)"));
  EXPECT_THAT(Tc("filter show dev vtap0 ingress"),
              HasSubstr("mirred (Egress Redirect to device eth0)"));
  // The tap is up with the veth's MTU.
  absl::StatusOr<std::string> link = Shell(absl::StrCat("ip -n ", pod_ns_, " link show vtap0"));
  ASSERT_TRUE(link.ok()) << link.status();
  EXPECT_THAT(*link, HasSubstr("mtu 1400"));
  EXPECT_THAT(*link, HasSubstr(",UP"));

  net::MacAddress peer_mac = *net::ParseMac(kPeerMac);

  // Guest → pod network: a frame written to the tap leaves through eth0 and reaches its peer.
  {
    const std::vector<uint8_t> payload = net::testing::Pattern(200, 1);
    const std::vector<uint8_t> frame =
        net::testing::EthernetFrame(peer_mac, pod->link.mac, net::testing::kTestEtherType, payload);
    std::vector<uint8_t> with_header(net::Tap::kVnetHdrSize, 0);
    with_header.insert(with_header.end(), frame.begin(), frame.end());
    ASSERT_TRUE(tap->Write(with_header).ok());
    auto got = net::testing::RecvFrame(peer->get(), kFrameTimeout, net::testing::kTestEtherType);
    ASSERT_TRUE(got.has_value()) << "the frame written to the tap never reached the veth's peer";
    EXPECT_EQ(*got, frame);
  }
  // Pod network → guest: a frame the peer sends arrives on eth0 and comes out of the tap.
  {
    const std::vector<uint8_t> payload = net::testing::Pattern(300, 2);
    const std::vector<uint8_t> frame =
        net::testing::EthernetFrame(pod->link.mac, peer_mac, net::testing::kTestEtherType, payload);
    ASSERT_EQ(::send(peer->get(), frame.data(), frame.size(), 0),
              static_cast<ssize_t>(frame.size()));
    auto got = ReadTapFrameOfType(tap->fd(), net::testing::kTestEtherType);
    ASSERT_TRUE(got.has_value()) << "the frame sent into the veth never came out of the tap";
    EXPECT_EQ(*got, frame);
  }

  mirror.reset();
  EXPECT_THAT(Tc("qdisc show dev eth0"), Not(HasSubstr("ingress")));
  EXPECT_THAT(Tc("qdisc show dev vtap0"), Not(HasSubstr("ingress")));
  // Without the mirror, the peer's frames stay in the pod namespace: nothing reaches the tap.
  {
    const std::vector<uint8_t> frame = net::testing::EthernetFrame(
        pod->link.mac, peer_mac, net::testing::kTestEtherType, net::testing::Pattern(64, 3));
    ASSERT_EQ(::send(peer->get(), frame.data(), frame.size(), 0),
              static_cast<ssize_t>(frame.size()));
    EXPECT_FALSE(ReadTapFrameOfType(tap->fd(), net::testing::kTestEtherType).has_value());
  }
}

TEST_F(PodNetworkTest, RemovalToleratesTheTapAlreadyGone) {
  absl::StatusOr<net::Tap> tap = net::Tap::Open("vtap0", pod_path_);
  ASSERT_TRUE(tap.ok()) << tap.status();
  absl::StatusOr<TcMirror> mirror = TcMirror::Create(pod_path_, "eth0", "vtap0");
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  // The VMM closes the tap (non-persistent: the interface and its qdisc vanish) before the
  // sandbox drops the mirror.
  tap = absl::CancelledError("closed");
  EXPECT_TRUE(mirror->Remove().ok());
  EXPECT_THAT(Tc("qdisc show dev eth0"), Not(HasSubstr("ingress")));
  EXPECT_TRUE(mirror->Remove().ok()) << "Remove() is idempotent";
}

TEST_F(PodNetworkTest, ASecondMirrorOnTheSameVethFailsAndLeavesTheFirstWorking) {
  absl::StatusOr<net::Tap> tap = net::Tap::Open("vtap0", pod_path_);
  ASSERT_TRUE(tap.ok()) << tap.status();
  absl::StatusOr<net::Tap> tap2 = net::Tap::Open("vtap1", pod_path_);
  ASSERT_TRUE(tap2.ok()) << tap2.status();
  absl::StatusOr<TcMirror> first = TcMirror::Create(pod_path_, "eth0", "vtap0");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<TcMirror> second = TcMirror::Create(pod_path_, "eth0", "vtap1");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("eth0 already has an ingress qdisc"));
  // The failed attempt touched nothing of the first mirror's.
  EXPECT_THAT(Tc("filter show dev eth0 ingress"),
              HasSubstr("mirred (Egress Redirect to device vtap0)"));
  EXPECT_THAT(Tc("qdisc show dev vtap1"), Not(HasSubstr("ingress")));
}

TEST_F(PodNetworkTest, UnknownTapIsNotFound) {
  absl::StatusOr<TcMirror> mirror = TcMirror::Create(pod_path_, "eth0", "nosuchtap0");
  ASSERT_FALSE(mirror.ok());
  EXPECT_EQ(mirror.status().code(), absl::StatusCode::kNotFound) << mirror.status();
  EXPECT_THAT(mirror.status().message(), HasSubstr("nosuchtap0"));
  EXPECT_THAT(mirror.status().message(), HasSubstr(pod_path_));
  EXPECT_THAT(mirror.status().message(), HasSubstr("open the tap"));
  EXPECT_THAT(Tc("qdisc show dev eth0"), Not(HasSubstr("ingress")));
}

TEST_F(PodNetworkTest, MissingNetnsIsNotFound) {
  const std::string path = "/var/run/netns/vessel-nettest-does-not-exist";
  absl::StatusOr<PodNetwork> pod = InspectPodNetwork(path);
  ASSERT_FALSE(pod.ok());
  EXPECT_EQ(pod.status().code(), absl::StatusCode::kNotFound) << pod.status();
  EXPECT_THAT(pod.status().message(), HasSubstr(path));
  absl::StatusOr<TcMirror> mirror = TcMirror::Create(path, "eth0", "vtap0");
  ASSERT_FALSE(mirror.ok());
  EXPECT_EQ(mirror.status().code(), absl::StatusCode::kNotFound) << mirror.status();
}

TEST_F(PodNetworkTest, NetnsWithOnlyLoopbackAndATapHasNoPodInterface) {
  empty_ns_ = absl::StrCat("vessel-nettest-", ::getpid(), "-empty");
  ASSERT_TRUE(Shell(absl::StrCat("ip netns add ", empty_ns_)).ok());
  const std::string path = "/var/run/netns/" + empty_ns_;
  absl::StatusOr<net::Tap> tap = net::Tap::Open("vtap0", path);
  ASSERT_TRUE(tap.ok()) << tap.status();
  absl::StatusOr<PodNetwork> pod = InspectPodNetwork(path);
  ASSERT_FALSE(pod.ok());
  EXPECT_EQ(pod.status().code(), absl::StatusCode::kFailedPrecondition) << pod.status();
  EXPECT_THAT(pod.status().message(),
              HasSubstr(absl::StrCat("network namespace ", path,
                                     " has no interface besides lo: the CNI plugin did not set "
                                     "it up")));
}

}  // namespace
}  // namespace vessel::sandbox::network
