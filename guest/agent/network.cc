#include "guest/agent/network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {
namespace {

// An address as the kernel takes it.
struct IpAddr {
  int family = 0;  // AF_INET or AF_INET6
  unsigned char bytes[16] = {};
  size_t size() const { return family == AF_INET ? 4 : 16; }
};

absl::StatusOr<IpAddr> ParseIp(absl::string_view what, const std::string& text) {
  IpAddr a;
  if (::inet_pton(AF_INET, text.c_str(), a.bytes) == 1) {
    a.family = AF_INET;
  } else if (::inet_pton(AF_INET6, text.c_str(), a.bytes) == 1) {
    a.family = AF_INET6;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", absl::CEscape(text), "' is not an IPv4 or IPv6 address"));
  }
  return a;
}

unsigned MaxPrefix(const IpAddr& a) { return a.family == AF_INET ? 32 : 128; }

absl::StatusOr<std::array<unsigned char, 6>> ParseMac(absl::string_view what,
                                                      const std::string& text) {
  std::array<unsigned char, 6> mac{};
  unsigned v[6];
  char extra;
  if (text.size() != 17 || std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1],
                                       &v[2], &v[3], &v[4], &v[5], &extra) != 6) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": MAC '", absl::CEscape(text), "' is not aa:bb:cc:dd:ee:ff"));
  }
  for (int i = 0; i < 6; ++i) mac[i] = static_cast<unsigned char>(v[i]);
  return mac;
}

std::string FormatMac(const unsigned char* mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                         mac[5]);
}

absl::Status ValidateIfName(absl::string_view what, const std::string& name) {
  bool bad = name.size() >= IFNAMSIZ || name == "." || name == "..";
  for (char c : name) {
    if (c == '/' || c == ':' || c == '\0' || absl::ascii_isspace(static_cast<unsigned char>(c)))
      bad = true;
  }
  if (bad) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": interface name '", absl::CEscape(name),
        "' is not valid (at most 15 characters, no '/', ':' or spaces, not '.' or '..')"));
  }
  return absl::OkStatus();
}

// A route's parsed form.
struct RoutePlan {
  std::string label;  // "route 10.96.0.0/12 via 10.88.0.1 dev eth0", for errors
  int family = AF_INET;
  IpAddr dst;
  unsigned dst_len = 0;
  bool has_gateway = false;
  IpAddr gateway;
  bool has_source = false;
  IpAddr source;
  unsigned char scope = RT_SCOPE_UNIVERSE;
};

std::string RouteLabel(const v1::Route& r) {
  std::string label =
      absl::StrCat("route ", r.destination().empty() ? "default" : absl::CEscape(r.destination()));
  if (!r.gateway().empty()) absl::StrAppend(&label, " via ", absl::CEscape(r.gateway()));
  if (!r.device().empty()) absl::StrAppend(&label, " dev ", absl::CEscape(r.device()));
  return label;
}

absl::StatusOr<RoutePlan> PlanRoute(const v1::Route& r) {
  RoutePlan p;
  p.label = RouteLabel(r);
  if (!r.device().empty()) VESSEL_RETURN_IF_ERROR(ValidateIfName(p.label, r.device()));
  if (!r.gateway().empty()) {
    VESSEL_ASSIGN_OR_RETURN(p.gateway, ParseIp(absl::StrCat(p.label, ": gateway"), r.gateway()));
    p.has_gateway = true;
    p.family = p.gateway.family;
  }
  if (!r.destination().empty() && r.destination() != "default") {
    std::string addr = r.destination();
    size_t slash = addr.find('/');
    std::string prefix;
    if (slash != std::string::npos) {
      prefix = addr.substr(slash + 1);
      addr.resize(slash);
    }
    VESSEL_ASSIGN_OR_RETURN(p.dst, ParseIp(absl::StrCat(p.label, ": destination"), addr));
    p.dst_len = MaxPrefix(p.dst);
    if (!prefix.empty() &&
        (!absl::SimpleAtoi(prefix, &p.dst_len) || p.dst_len > MaxPrefix(p.dst))) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.label, ": prefix length '", absl::CEscape(prefix), "' is not 0-", MaxPrefix(p.dst)));
    }
    if (p.has_gateway && p.gateway.family != p.dst.family) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.label, ": the gateway and the destination are different IP versions"));
    }
    p.family = p.dst.family;
  } else if (!p.has_gateway && r.device().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(p.label, ": a default route needs a gateway or a device"));
  }
  if (!r.source().empty()) {
    VESSEL_ASSIGN_OR_RETURN(p.source, ParseIp(absl::StrCat(p.label, ": source"), r.source()));
    if (p.source.family != p.family) {
      return absl::InvalidArgumentError(
          absl::StrCat(p.label, ": the source and the destination are different IP versions"));
    }
    p.has_source = true;
  }
  if (r.scope() > 255) {
    return absl::InvalidArgumentError(absl::StrCat(p.label, ": scope ", r.scope(), " is over 255"));
  }
  p.scope = p.has_gateway ? static_cast<unsigned char>(RT_SCOPE_UNIVERSE)
                          : static_cast<unsigned char>(r.scope());
  return p;
}

// One rtnetlink request under construction: header, family struct, attributes.
class NlMessage {
 public:
  NlMessage(uint16_t type, uint16_t flags) {
    auto* h = Header();
    h->nlmsg_len = NLMSG_HDRLEN;
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  }
  template <typename T>
  T* Append() {
    T* p = reinterpret_cast<T*>(Tail(NLMSG_ALIGN(sizeof(T))));
    return p;
  }
  void Attr(uint16_t type, const void* data, size_t len) {
    auto* rta = reinterpret_cast<rtattr*>(Tail(RTA_SPACE(len)));
    rta->rta_type = type;
    rta->rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(rta), data, len);
  }
  void AttrU32(uint16_t type, uint32_t v) { Attr(type, &v, sizeof(v)); }
  void AttrString(uint16_t type, const std::string& s) { Attr(type, s.c_str(), s.size() + 1); }
  nlmsghdr* Header() { return reinterpret_cast<nlmsghdr*>(buf_); }

 private:
  // Zeroed room at the end; the message is far below the buffer (names, a few addresses).
  char* Tail(size_t len) {
    char* p = buf_ + Header()->nlmsg_len;
    Header()->nlmsg_len += static_cast<uint32_t>(len);
    return p;
  }
  alignas(nlmsghdr) char buf_[512] = {};
};

struct Link {
  int index = 0;
  std::string name;
  std::string mac;  // lower-case aa:bb:..., empty if none
};

class Rtnetlink {
 public:
  static absl::StatusOr<Rtnetlink> Open() {
    ScopedFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd.valid()) return ErrnoStatus("socket(AF_NETLINK, NETLINK_ROUTE)");
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0)
      return ErrnoStatus("bind the rtnetlink socket");
    timeval tv{5, 0};  // the kernel always answers; never hang the agent on it
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    Rtnetlink nl;
    nl.fd_ = std::move(fd);
    return nl;
  }

  // Sends `msg` asking for an ACK; 0 or the kernel's errno.
  int Request(NlMessage& msg) {
    nlmsghdr* h = msg.Header();
    h->nlmsg_flags |= NLM_F_ACK;
    h->nlmsg_seq = ++seq_;
    if (int err = Send(h); err != 0) return err;
    return Receive(h->nlmsg_seq, nullptr);
  }

  absl::StatusOr<std::vector<Link>> Links() {
    NlMessage msg(RTM_GETLINK, NLM_F_DUMP);
    msg.Append<ifinfomsg>()->ifi_family = AF_UNSPEC;
    nlmsghdr* h = msg.Header();
    h->nlmsg_seq = ++seq_;
    std::vector<Link> links;
    int err = Send(h);
    if (err == 0) err = Receive(h->nlmsg_seq, &links);
    if (err != 0) return ErrnoStatus("rtnetlink: list the network interfaces", err);
    return links;
  }

 private:
  int Send(nlmsghdr* h) {
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t n;
    do {
      n = ::sendto(fd_.get(), h, h->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
                   sizeof(kernel));
    } while (n < 0 && errno == EINTR);
    return n < 0 ? errno : 0;
  }

  // Reads answers to `seq` until its ACK/error or, for a dump, NLMSG_DONE.
  int Receive(uint32_t seq, std::vector<Link>* links) {
    std::vector<char> buf(32768);
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? ETIMEDOUT : errno;
      }
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
           h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != seq) continue;
        if (h->nlmsg_type == NLMSG_DONE) return 0;
        if (h->nlmsg_type == NLMSG_ERROR) {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return EPROTO;
          auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
          return -e->error;
        }
        if (h->nlmsg_type == RTM_NEWLINK && links != nullptr) ParseLink(h, *links);
      }
    }
  }

  static void ParseLink(nlmsghdr* h, std::vector<Link>& links) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) return;
    auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
    Link link;
    link.index = ifi->ifi_index;
    int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(ifinfomsg)));
    for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      size_t size = RTA_PAYLOAD(a);
      if (a->rta_type == IFLA_IFNAME && size > 0) {
        link.name.assign(static_cast<const char*>(RTA_DATA(a)),
                         strnlen(static_cast<const char*>(RTA_DATA(a)), size));
      } else if (a->rta_type == IFLA_ADDRESS && size == 6) {
        link.mac = FormatMac(static_cast<const unsigned char*>(RTA_DATA(a)));
      }
    }
    links.push_back(std::move(link));
  }

  ScopedFd fd_;
  uint32_t seq_ = 0;
};

absl::Status Failed(absl::string_view what, int err) { return ErrnoStatus(what, err); }

// RTM_NEWLINK on `index`: optional new name and MTU, and the IFF_UP flag when `change_up`.
int SetLink(Rtnetlink& nl, int index, const std::string& name, uint32_t mtu, bool change_up,
            bool up) {
  NlMessage msg(RTM_NEWLINK, 0);
  auto* ifi = msg.Append<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  if (change_up) {
    ifi->ifi_change = IFF_UP;
    ifi->ifi_flags = up ? IFF_UP : 0;
  }
  if (!name.empty()) msg.AttrString(IFLA_IFNAME, name);
  if (mtu != 0) msg.AttrU32(IFLA_MTU, mtu);
  return nl.Request(msg);
}

// RTM_NEWLINK on `index` setting its hardware address (the device must be down).
int SetLinkAddress(Rtnetlink& nl, int index, const std::array<unsigned char, 6>& mac) {
  NlMessage msg(RTM_NEWLINK, 0);
  auto* ifi = msg.Append<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  msg.Attr(IFLA_ADDRESS, mac.data(), mac.size());
  return nl.Request(msg);
}

}  // namespace

absl::Status ValidateNetwork(const google::protobuf::RepeatedPtrField<v1::Interface>& interfaces,
                             const google::protobuf::RepeatedPtrField<v1::Route>& routes) {
  if (interfaces.size() > 64 || routes.size() > 1024) {
    return absl::InvalidArgumentError("more than 64 interfaces or 1024 routes");
  }
  for (const v1::Interface& i : interfaces) {
    std::string what =
        absl::StrCat("interface '", absl::CEscape(i.name()), "' (", absl::CEscape(i.mac()), ")");
    VESSEL_RETURN_IF_ERROR(ParseMac(what, i.mac()).status());
    if (!i.device_mac().empty()) VESSEL_RETURN_IF_ERROR(ParseMac(what + " device_mac", i.device_mac()).status());
    VESSEL_RETURN_IF_ERROR(ValidateIfName(what, i.name()));
    if (i.mtu() != 0 && (i.mtu() < 68 || i.mtu() > 65535)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": MTU ", i.mtu(), " is not 68-65535"));
    }
    if (i.addresses_size() > 64) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": more than 64 addresses"));
    }
    for (const v1::IPAddress& a : i.addresses()) {
      VESSEL_ASSIGN_OR_RETURN(IpAddr ip, ParseIp(what, a.address()));
      if (a.prefix_length() > MaxPrefix(ip)) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": prefix length ", a.prefix_length(),
                                                       " of ", a.address(), " is over ",
                                                       MaxPrefix(ip)));
      }
    }
  }
  for (const v1::Route& r : routes) VESSEL_RETURN_IF_ERROR(PlanRoute(r).status());
  return absl::OkStatus();
}

absl::Status ConfigureNetwork(const google::protobuf::RepeatedPtrField<v1::Interface>& interfaces,
                              const google::protobuf::RepeatedPtrField<v1::Route>& routes) {
  VESSEL_ASSIGN_OR_RETURN(Rtnetlink nl, Rtnetlink::Open());
  VESSEL_ASSIGN_OR_RETURN(std::vector<Link> links, nl.Links());
  for (const Link& l : links) {
    if (l.name == "lo") {
      if (int err = SetLink(nl, l.index, "", 0, true, true); err != 0)
        return Failed("set interface lo up", err);
    }
  }
  for (const v1::Interface& i : interfaces) {
    const std::string mac = absl::AsciiStrToLower(i.mac());
    const std::string device_mac =
        i.device_mac().empty() ? mac : absl::AsciiStrToLower(i.device_mac());
    const Link* found = nullptr;
    for (const Link& l : links) {
      if (l.mac == device_mac) found = &l;
    }
    if (found == nullptr) {
      std::vector<std::string> have;
      for (const Link& l : links) {
        if (!l.mac.empty()) have.push_back(absl::StrCat(l.name, "=", l.mac));
      }
      return absl::NotFoundError(absl::StrCat("no network interface has MAC ", device_mac, " (for '",
                                              absl::CEscape(i.name()), "'; the guest has ",
                                              have.empty() ? "none" : absl::StrJoin(have, ", "),
                                              "): check the VMM's --net mac="));
    }
    const std::string name = i.name().empty() ? found->name : i.name();
    const std::string what = absl::StrCat("interface ", name, " (", mac, ")");
    if (device_mac != mac) {
      VESSEL_ASSIGN_OR_RETURN(auto bytes, ParseMac(what, mac));
      if (int err = SetLink(nl, found->index, "", 0, true, false); err != 0)
        return Failed(absl::StrCat(what, ": set ", found->name, " down to change its MAC"), err);
      if (int err = SetLinkAddress(nl, found->index, bytes); err != 0)
        return Failed(absl::StrCat(what, ": change MAC ", device_mac, " to ", mac), err);
    }
    if (name != found->name) {
      // A device is renamed only while down.
      if (int err = SetLink(nl, found->index, "", 0, true, false); err != 0)
        return Failed(absl::StrCat(what, ": set ", found->name, " down to rename it"), err);
      if (int err = SetLink(nl, found->index, name, 0, false, false); err != 0)
        return Failed(absl::StrCat(what, ": rename ", found->name, " to ", name), err);
    }
    if (i.mtu() != 0) {
      if (int err = SetLink(nl, found->index, "", i.mtu(), false, false); err != 0)
        return Failed(absl::StrCat(what, ": set MTU ", i.mtu()), err);
    }
    for (const v1::IPAddress& a : i.addresses()) {
      VESSEL_ASSIGN_OR_RETURN(IpAddr ip, ParseIp(what, a.address()));
      NlMessage msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
      auto* ifa = msg.Append<ifaddrmsg>();
      ifa->ifa_family = static_cast<unsigned char>(ip.family);
      ifa->ifa_prefixlen = static_cast<unsigned char>(a.prefix_length());
      ifa->ifa_scope = RT_SCOPE_UNIVERSE;
      ifa->ifa_index = static_cast<uint32_t>(found->index);
      msg.Attr(IFA_LOCAL, ip.bytes, ip.size());
      msg.Attr(IFA_ADDRESS, ip.bytes, ip.size());
      if (int err = nl.Request(msg); err != 0) {
        return Failed(absl::StrCat(what, ": add address ", a.address(), "/", a.prefix_length()),
                      err);
      }
    }
    if (int err = SetLink(nl, found->index, "", 0, true, true); err != 0)
      return Failed(absl::StrCat(what, ": set up"), err);
  }
  if (routes.empty()) return absl::OkStatus();
  VESSEL_ASSIGN_OR_RETURN(links, nl.Links());  // names after the renames
  for (const v1::Route& r : routes) {
    VESSEL_ASSIGN_OR_RETURN(RoutePlan p, PlanRoute(r));
    int oif = 0;
    if (!r.device().empty()) {
      for (const Link& l : links) {
        if (l.name == r.device()) oif = l.index;
      }
      if (oif == 0) {
        return absl::NotFoundError(absl::StrCat(p.label, ": no interface named '",
                                                absl::CEscape(r.device()),
                                                "' (name it in CreateSandbox.interfaces)"));
      }
    }
    NlMessage msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    auto* rtm = msg.Append<rtmsg>();
    rtm->rtm_family = static_cast<unsigned char>(p.family);
    rtm->rtm_dst_len = static_cast<unsigned char>(p.dst_len);
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_scope = p.scope;
    rtm->rtm_type = RTN_UNICAST;
    if (p.dst_len > 0) msg.Attr(RTA_DST, p.dst.bytes, p.dst.size());
    if (p.has_gateway) msg.Attr(RTA_GATEWAY, p.gateway.bytes, p.gateway.size());
    if (p.has_source) msg.Attr(RTA_PREFSRC, p.source.bytes, p.source.size());
    if (oif != 0) msg.AttrU32(RTA_OIF, static_cast<uint32_t>(oif));
    if (int err = nl.Request(msg); err != 0) return Failed(p.label, err);
  }
  return absl::OkStatus();
}

absl::Status WriteResolvConf(const std::string& root,
                             const google::protobuf::RepeatedPtrField<std::string>& lines) {
  if (lines.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns: ", lines.size(), " resolv.conf lines (at most 64)"));
  }
  std::string content;
  for (const std::string& line : lines) {
    if (line.find_first_of(std::string("\n\r\0", 3)) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dns: line '", absl::CEscape(line), "' contains a newline or NUL: one line per entry"));
    }
    absl::StrAppend(&content, line, "\n");
  }
  if (content.size() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("dns: resolv.conf would be ", content.size(), " bytes (at most 4096)"));
  }
  const std::string dir = UnderRoot(root, "/etc");
  VESSEL_RETURN_IF_ERROR(MkdirAll(dir));
  const std::string tmp = dir + "/.resolv.conf.vessel";
  const std::string path = dir + "/resolv.conf";
  {
    ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd.valid()) return ErrnoStatus(absl::StrCat("create ", tmp));
    size_t done = 0;
    while (done < content.size()) {
      ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(absl::StrCat("write ", tmp));
      done += static_cast<size_t>(n);
    }
    if (::fchmod(fd.get(), 0644) != 0) return ErrnoStatus(absl::StrCat("chmod ", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status status = ErrnoStatus(absl::StrCat("rename ", tmp, " to ", path));
    ::unlink(tmp.c_str());
    return status;
  }
  return absl::OkStatus();
}

}  // namespace vessel::agent
