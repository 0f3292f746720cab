// Test support for virtio-net: a scratch network namespace with ioctl helpers (link up, MTU,
// addresses, neighbours, sysctls, ethtool), AF_PACKET endpoints bound to an interface inside it,
// and Ethernet/IPv4/UDP/TCP frame builders and checksum checks. Shared by tests/ and bench/.
#ifndef VESSEL_TESTS_DEVICES_NET_TEST_ENV_H_
#define VESSEL_TESTS_DEVICES_NET_TEST_ENV_H_

#include <time.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "devices/net/net_config.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::net::testing {

// A network namespace of its own, made with unshare(CLONE_NEWNET) on a helper thread and kept
// alive by an fd: it and every interface in it vanish with the object. IPv6 is disabled in it so
// no router solicitations or DAD frames show up on its taps.
class ScratchNetns {
 public:
  // FailedPrecondition / PermissionDenied (the reason to skip a test) when the host has no
  // /dev/net/tun or the process may not create namespaces (CAP_SYS_ADMIN) or taps (CAP_NET_ADMIN).
  static absl::StatusOr<std::unique_ptr<ScratchNetns>> Create();

  // A path naming the namespace (/proc/self/fd/N), for NetConfig::netns_path.
  const std::string& path() const { return path_; }
  // Runs `fn` on a thread inside the namespace.
  absl::Status Run(absl::FunctionRef<absl::Status()> fn) const;

  absl::Status SetUp(const std::string& ifname) const;
  absl::Status SetMtu(const std::string& ifname, int mtu) const;
  absl::StatusOr<int> IfIndex(const std::string& ifname) const;
  absl::StatusOr<MacAddress> HwAddr(const std::string& ifname) const;
  absl::Status AddIpv4(const std::string& ifname, const char* addr, const char* netmask) const;
  // A permanent ARP entry: `ip` is at `mac` on `ifname`.
  absl::Status AddNeighbor(const std::string& ifname, const char* ip, const MacAddress& mac) const;
  // Writes `value` to /proc/sys/`key` (e.g. "net/ipv4/ip_forward") inside the namespace.
  absl::Status WriteSysctl(const std::string& key, const std::string& value) const;
  // An ETHTOOL_G* value (e.g. ETHTOOL_GTXCSUM, ETHTOOL_GTSO) of `ifname`.
  absl::StatusOr<uint32_t> Ethtool(const std::string& ifname, uint32_t cmd) const;
  // A non-blocking AF_PACKET raw socket bound to `ifname` (all protocols): send() puts a frame on
  // the interface's transmit path (towards a tap's reader), RecvFrame() sees what it receives.
  absl::StatusOr<ScopedFd> OpenPacketSocket(const std::string& ifname) const;

 private:
  ScratchNetns(ScopedFd ns, ScopedFd ctl);
  ScopedFd ns_;
  ScopedFd ctl_;  // AF_INET datagram socket inside the namespace, for interface ioctls
  std::string path_;
};

// The next frame `fd` (an AF_PACKET socket) receives, skipping frames the interface sent itself
// and, when `ethertype` is set, frames of other types; nullopt after `timeout`.
std::optional<std::vector<uint8_t>> RecvFrame(int fd, std::chrono::milliseconds timeout,
                                              std::optional<uint16_t> ethertype);
// The next frame read from a tap fd (vnet header first); nullopt after `timeout`.
std::optional<std::vector<uint8_t>> ReadTapFrame(int fd, std::chrono::milliseconds timeout);

// --- Frames ---
constexpr uint16_t kTestEtherType = 0x88b5;  // IEEE local experimental
struct Ipv4Addr {
  uint8_t b[4];
};
// dst, src, ethertype, payload.
std::vector<uint8_t> EthernetFrame(const MacAddress& dst, const MacAddress& src, uint16_t type,
                                   absl::Span<const uint8_t> payload);
// Ethernet + IPv4 (no options, TTL 64, DF, header checksum filled) + `l4` (protocol `proto`).
std::vector<uint8_t> Ipv4Frame(const MacAddress& dst, const MacAddress& src, Ipv4Addr saddr,
                               Ipv4Addr daddr, uint8_t proto, absl::Span<const uint8_t> l4);
// A UDP header + payload, checksum field = the pseudo-header sum (what a driver leaves for
// NEEDS_CSUM), for Ipv4Frame.
std::vector<uint8_t> UdpPartial(Ipv4Addr saddr, Ipv4Addr daddr, uint16_t sport, uint16_t dport,
                                absl::Span<const uint8_t> payload);
// A TCP header (20 bytes, ACK|PSH) + payload, checksum field = the pseudo-header sum.
std::vector<uint8_t> TcpPartial(Ipv4Addr saddr, Ipv4Addr daddr, uint16_t sport, uint16_t dport,
                                uint32_t seq, absl::Span<const uint8_t> payload);
// One's-complement sum folded to 16 bits (not inverted), starting from `initial`.
uint16_t FoldedSum(absl::Span<const uint8_t> data, uint32_t initial = 0);
// For an Ethernet + IPv4 frame: the IPv4 header checksum and the UDP/TCP checksum are valid.
bool Ipv4ChecksumsValid(absl::Span<const uint8_t> frame);
// Deterministic bytes for payloads.
std::vector<uint8_t> Pattern(size_t len, uint8_t seed);

// Polls `pred` every millisecond until it is true or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

}  // namespace vessel::net::testing

#endif  // VESSEL_TESTS_DEVICES_NET_TEST_ENV_H_
