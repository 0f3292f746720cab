#include "tests/devices/net_test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "devices/net/netns.h"
#include "vmm/base/errors.h"

namespace vessel::net::testing {
namespace {

ifreq Ifr(const std::string& ifname) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  return ifr;
}

absl::Status WriteFile(const std::string& path, const std::string& value) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return ErrnoStatus(absl::StrCat("write ", path));
  }
  return absl::OkStatus();
}

void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void PutBe32(uint8_t* p, uint32_t v) {
  PutBe16(p, static_cast<uint16_t>(v >> 16));
  PutBe16(p + 2, static_cast<uint16_t>(v));
}
uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

uint32_t PseudoSum(Ipv4Addr s, Ipv4Addr d, uint8_t proto, uint16_t len) {
  uint32_t sum = 0;
  sum += static_cast<uint32_t>(s.b[0] << 8 | s.b[1]) + static_cast<uint32_t>(s.b[2] << 8 | s.b[3]);
  sum += static_cast<uint32_t>(d.b[0] << 8 | d.b[1]) + static_cast<uint32_t>(d.b[2] << 8 | d.b[3]);
  sum += proto;
  sum += len;
  return sum;
}

uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

}  // namespace

ScratchNetns::ScratchNetns(ScopedFd ns, ScopedFd ctl)
    : ns_(std::move(ns)), ctl_(std::move(ctl)), path_(absl::StrCat("/proc/self/fd/", ns_.get())) {}

absl::StatusOr<std::unique_ptr<ScratchNetns>> ScratchNetns::Create() {
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "/dev/net/tun is not usable (", std::strerror(errno), "): no tap devices here"));
  }
  ScopedFd ns, ctl;
  absl::Status status;
  std::thread helper([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      status =
          absl::PermissionDeniedError(absl::StrCat("unshare(CLONE_NEWNET): ", std::strerror(errno),
                                                   ": creating a scratch network namespace "
                                                   "needs CAP_SYS_ADMIN (run as root)"));
      return;
    }
    ns.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) {
      status = ErrnoStatus("open /proc/thread-self/ns/net");
      return;
    }
    ctl.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!ctl.valid()) {
      status = ErrnoStatus("socket(AF_INET) in the scratch namespace");
      return;
    }
    // Best effort: quiet interfaces (no IPv6 autoconfiguration traffic).
    WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1").IgnoreError();
    WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").IgnoreError();
  });
  helper.join();
  if (!status.ok()) return status;
  return std::unique_ptr<ScratchNetns>(new ScratchNetns(std::move(ns), std::move(ctl)));
}

absl::Status ScratchNetns::Run(absl::FunctionRef<absl::Status()> fn) const {
  return RunInNetns(path_, fn);
}

absl::Status ScratchNetns::SetUp(const std::string& ifname) const {
  ifreq ifr = Ifr(ifname);
  if (::ioctl(ctl_.get(), SIOCGIFFLAGS, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCGIFFLAGS ", ifname));
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(ctl_.get(), SIOCSIFFLAGS, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCSIFFLAGS ", ifname));
  return absl::OkStatus();
}

absl::Status ScratchNetns::SetMtu(const std::string& ifname, int mtu) const {
  ifreq ifr = Ifr(ifname);
  ifr.ifr_mtu = mtu;
  if (::ioctl(ctl_.get(), SIOCSIFMTU, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCSIFMTU ", ifname));
  return absl::OkStatus();
}

absl::StatusOr<int> ScratchNetns::IfIndex(const std::string& ifname) const {
  ifreq ifr = Ifr(ifname);
  if (::ioctl(ctl_.get(), SIOCGIFINDEX, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCGIFINDEX ", ifname));
  return ifr.ifr_ifindex;
}

absl::StatusOr<MacAddress> ScratchNetns::HwAddr(const std::string& ifname) const {
  ifreq ifr = Ifr(ifname);
  if (::ioctl(ctl_.get(), SIOCGIFHWADDR, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCGIFHWADDR ", ifname));
  MacAddress mac;
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, mac.size());
  return mac;
}

absl::Status ScratchNetns::AddIpv4(const std::string& ifname, const char* addr,
                                   const char* netmask) const {
  ifreq ifr = Ifr(ifname);
  auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
  sin->sin_family = AF_INET;
  if (::inet_pton(AF_INET, addr, &sin->sin_addr) != 1) return absl::InvalidArgumentError(addr);
  if (::ioctl(ctl_.get(), SIOCSIFADDR, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCSIFADDR ", ifname));
  ifr = Ifr(ifname);
  sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_netmask);
  sin->sin_family = AF_INET;
  if (::inet_pton(AF_INET, netmask, &sin->sin_addr) != 1)
    return absl::InvalidArgumentError(netmask);
  if (::ioctl(ctl_.get(), SIOCSIFNETMASK, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCSIFNETMASK ", ifname));
  return absl::OkStatus();
}

absl::Status ScratchNetns::AddNeighbor(const std::string& ifname, const char* ip,
                                       const MacAddress& mac) const {
  arpreq req{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&req.arp_pa);
  sin->sin_family = AF_INET;
  if (::inet_pton(AF_INET, ip, &sin->sin_addr) != 1) return absl::InvalidArgumentError(ip);
  req.arp_ha.sa_family = ARPHRD_ETHER;
  std::memcpy(req.arp_ha.sa_data, mac.data(), mac.size());
  req.arp_flags = ATF_COM | ATF_PERM;
  std::strncpy(req.arp_dev, ifname.c_str(), sizeof(req.arp_dev) - 1);
  if (::ioctl(ctl_.get(), SIOCSARP, &req) != 0) return ErrnoStatus(absl::StrCat("SIOCSARP ", ip));
  return absl::OkStatus();
}

absl::Status ScratchNetns::WriteSysctl(const std::string& key, const std::string& value) const {
  return Run([&] { return WriteFile(absl::StrCat("/proc/sys/", key), value); });
}

absl::StatusOr<uint32_t> ScratchNetns::Ethtool(const std::string& ifname, uint32_t cmd) const {
  ethtool_value value{};
  value.cmd = cmd;
  ifreq ifr = Ifr(ifname);
  ifr.ifr_data = reinterpret_cast<char*>(&value);
  if (::ioctl(ctl_.get(), SIOCETHTOOL, &ifr) != 0)
    return ErrnoStatus(absl::StrCat("SIOCETHTOOL ", ifname));
  return value.data;
}

absl::StatusOr<ScopedFd> ScratchNetns::OpenPacketSocket(const std::string& ifname) const {
  VESSEL_ASSIGN_OR_RETURN(int ifindex, IfIndex(ifname));
  ScopedFd fd;
  VESSEL_RETURN_IF_ERROR(Run([&] {
    fd.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    if (!fd.valid()) return ErrnoStatus("socket(AF_PACKET)");
    return absl::OkStatus();
  }));
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
    return ErrnoStatus(absl::StrCat("bind AF_PACKET to ", ifname));
  }
  // Frames that arrived before the bind (from other interfaces) are of no interest.
  uint8_t junk[65536];
  while (::recv(fd.get(), junk, sizeof(junk), 0) > 0) {
  }
  return fd;
}

std::optional<std::vector<uint8_t>> RecvFrame(int fd, std::chrono::milliseconds timeout,
                                              std::optional<uint16_t> ethertype) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<uint8_t> buf(70000);
  for (;;) {
    sockaddr_ll from{};
    socklen_t from_len = sizeof(from);
    const ssize_t n =
        ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n > 0) {
      if (from.sll_pkttype == PACKET_OUTGOING) continue;
      if (ethertype.has_value() && (n < 14 || Be16(&buf[12]) != *ethertype)) continue;
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

std::optional<std::vector<uint8_t>> ReadTapFrame(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<uint8_t> buf(70000);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n > 0) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

std::vector<uint8_t> EthernetFrame(const MacAddress& dst, const MacAddress& src, uint16_t type,
                                   absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> f(14 + payload.size());
  std::memcpy(f.data(), dst.data(), 6);
  std::memcpy(f.data() + 6, src.data(), 6);
  PutBe16(&f[12], type);
  if (!payload.empty()) std::memcpy(f.data() + 14, payload.data(), payload.size());
  return f;
}

std::vector<uint8_t> Ipv4Frame(const MacAddress& dst, const MacAddress& src, Ipv4Addr saddr,
                               Ipv4Addr daddr, uint8_t proto, absl::Span<const uint8_t> l4) {
  std::vector<uint8_t> ip(20 + l4.size());
  ip[0] = 0x45;
  PutBe16(&ip[2], static_cast<uint16_t>(ip.size()));
  PutBe16(&ip[4], 0x1234);  // id
  PutBe16(&ip[6], 0x4000);  // DF
  ip[8] = 64;
  ip[9] = proto;
  std::memcpy(&ip[12], saddr.b, 4);
  std::memcpy(&ip[16], daddr.b, 4);
  PutBe16(&ip[10], static_cast<uint16_t>(~FoldedSum(absl::MakeConstSpan(ip.data(), 20))));
  std::memcpy(ip.data() + 20, l4.data(), l4.size());
  return EthernetFrame(dst, src, ETHERTYPE_IP, ip);
}

std::vector<uint8_t> UdpPartial(Ipv4Addr saddr, Ipv4Addr daddr, uint16_t sport, uint16_t dport,
                                absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> u(8 + payload.size());
  PutBe16(&u[0], sport);
  PutBe16(&u[2], dport);
  PutBe16(&u[4], static_cast<uint16_t>(u.size()));
  PutBe16(&u[6], Fold(PseudoSum(saddr, daddr, IPPROTO_UDP, static_cast<uint16_t>(u.size()))));
  std::memcpy(u.data() + 8, payload.data(), payload.size());
  return u;
}

std::vector<uint8_t> TcpPartial(Ipv4Addr saddr, Ipv4Addr daddr, uint16_t sport, uint16_t dport,
                                uint32_t seq, absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> t(20 + payload.size());
  PutBe16(&t[0], sport);
  PutBe16(&t[2], dport);
  PutBe32(&t[4], seq);
  PutBe32(&t[8], 1);       // ack
  t[12] = 5 << 4;          // data offset
  t[13] = 0x18;            // ACK | PSH
  PutBe16(&t[14], 65535);  // window
  PutBe16(&t[16], Fold(PseudoSum(saddr, daddr, IPPROTO_TCP, static_cast<uint16_t>(t.size()))));
  std::memcpy(t.data() + 20, payload.data(), payload.size());
  return t;
}

uint16_t FoldedSum(absl::Span<const uint8_t> data, uint32_t initial) {
  uint64_t sum = initial;
  size_t i = 0;
  for (; i + 1 < data.size(); i += 2) sum += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (i < data.size()) sum += static_cast<uint32_t>(data[i] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

bool Ipv4ChecksumsValid(absl::Span<const uint8_t> frame) {
  if (frame.size() < 34 || Be16(&frame[12]) != ETHERTYPE_IP) return false;
  const uint8_t* ip = frame.data() + 14;
  const size_t ihl = (ip[0] & 0xf) * 4u;
  const size_t tot = Be16(&ip[2]);
  if (ihl < 20 || tot < ihl || 14 + tot > frame.size()) return false;
  if (FoldedSum(absl::MakeConstSpan(ip, ihl)) != 0xffff) return false;
  const uint8_t proto = ip[9];
  if (proto != IPPROTO_UDP && proto != IPPROTO_TCP) return true;
  Ipv4Addr s, d;
  std::memcpy(s.b, &ip[12], 4);
  std::memcpy(d.b, &ip[16], 4);
  const uint16_t l4_len = static_cast<uint16_t>(tot - ihl);
  return FoldedSum(absl::MakeConstSpan(ip + ihl, l4_len), PseudoSum(s, d, proto, l4_len)) == 0xffff;
}

std::vector<uint8_t> Pattern(size_t len, uint8_t seed) {
  std::vector<uint8_t> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = static_cast<uint8_t>(i * 7 + seed + (i >> 8));
  return v;
}

}  // namespace vessel::net::testing
