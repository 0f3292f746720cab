#include "sandbox/network/pod_network.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_arp.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "sandbox/network/netlink.h"
#include "vmm/base/errors.h"

namespace vessel::sandbox::network {
namespace {

constexpr int kDumpAttempts = 5;

struct LinkInfo {
  PodLink link;
  bool has_mac = false;
  bool loopback = false;
  std::string kind;  // IFLA_INFO_KIND: "veth", "tun", ... ("" for physical devices)
};

// "10.0.0.5" / "fd00::5" from an address attribute of `family`; nullopt when malformed.
std::optional<std::string> FormatAddress(int family, absl::Span<const uint8_t> bytes) {
  const size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
  if (want == 0 || bytes.size() < want) return std::nullopt;
  char text[INET6_ADDRSTRLEN] = {};
  if (::inet_ntop(family, bytes.data(), text, sizeof(text)) == nullptr) return std::nullopt;
  return std::string(text);
}

// Runs a dump again while the kernel reports it was interrupted by a concurrent change.
absl::Status DumpWithRetry(NetlinkSocket& socket, absl::FunctionRef<NetlinkMessage()> make,
                           absl::string_view what, absl::FunctionRef<void()> reset,
                           absl::FunctionRef<absl::Status(const nlmsghdr&)> on_message) {
  absl::Status status;
  for (int attempt = 0; attempt < kDumpAttempts; ++attempt) {
    reset();
    NetlinkMessage message = make();
    status = socket.Dump(message, what, on_message);
    if (!absl::IsAborted(status)) return status;
  }
  return status;
}

absl::StatusOr<std::vector<LinkInfo>> DumpLinks(NetlinkSocket& socket) {
  std::vector<LinkInfo> links;
  VESSEL_RETURN_IF_ERROR(DumpWithRetry(
      socket,
      [] {
        NetlinkMessage message(RTM_GETLINK, 0);
        message.PutHeader(ifinfomsg{});
        return message;
      },
      "listing the interfaces (RTM_GETLINK)", [&] { links.clear(); },
      [&](const nlmsghdr& h) -> absl::Status {
        if (h.nlmsg_type != RTM_NEWLINK) return absl::OkStatus();
        const auto ifi = FamilyHeader<ifinfomsg>(h);
        if (!ifi.has_value()) return absl::OkStatus();
        AttrTable attrs(AttrsAfter(h, sizeof(ifinfomsg)));
        LinkInfo info;
        info.link.ifindex = ifi->ifi_index;
        info.link.name = attrs.GetString(IFLA_IFNAME).value_or("");
        info.link.mtu = attrs.GetU32(IFLA_MTU).value_or(0);
        info.loopback = (ifi->ifi_flags & IFF_LOOPBACK) != 0 || ifi->ifi_type == ARPHRD_LOOPBACK;
        if (const auto mac = attrs.Get(IFLA_ADDRESS);
            mac.has_value() && mac->size() == info.link.mac.size()) {
          std::memcpy(info.link.mac.data(), mac->data(), info.link.mac.size());
          info.has_mac = ifi->ifi_type == ARPHRD_ETHER;
        }
        if (const auto linkinfo = attrs.Get(IFLA_LINKINFO); linkinfo.has_value()) {
          info.kind = AttrTable(*linkinfo).GetString(IFLA_INFO_KIND).value_or("");
        }
        links.push_back(std::move(info));
        return absl::OkStatus();
      }));
  std::sort(links.begin(), links.end(), [](const LinkInfo& a, const LinkInfo& b) {
    return a.link.ifindex < b.link.ifindex;
  });
  return links;
}

absl::Status DumpAddresses(NetlinkSocket& socket, int ifindex,
                           vessel::agent::v1::Interface& interface) {
  return DumpWithRetry(
      socket,
      [] {
        NetlinkMessage message(RTM_GETADDR, 0);
        message.PutHeader(ifaddrmsg{});
        return message;
      },
      "listing the addresses (RTM_GETADDR)", [&] { interface.clear_addresses(); },
      [&](const nlmsghdr& h) -> absl::Status {
        if (h.nlmsg_type != RTM_NEWADDR) return absl::OkStatus();
        const auto ifa = FamilyHeader<ifaddrmsg>(h);
        if (!ifa.has_value() || static_cast<int>(ifa->ifa_index) != ifindex) {
          return absl::OkStatus();
        }
        // Global addresses only: link-local ones (fe80::/64) the guest's kernel makes itself.
        if (ifa->ifa_scope != RT_SCOPE_UNIVERSE) return absl::OkStatus();
        AttrTable attrs(AttrsAfter(h, sizeof(ifaddrmsg)));
        const uint32_t flags = attrs.GetU32(IFA_FLAGS).value_or(ifa->ifa_flags);
        if ((flags & IFA_F_DADFAILED) != 0) return absl::OkStatus();
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point
        // links and the same as IFA_LOCAL elsewhere (IPv6 has only IFA_ADDRESS).
        auto bytes = attrs.Get(IFA_LOCAL);
        if (!bytes.has_value()) bytes = attrs.Get(IFA_ADDRESS);
        if (!bytes.has_value()) return absl::OkStatus();
        const auto text = FormatAddress(ifa->ifa_family, *bytes);
        if (!text.has_value()) return absl::OkStatus();
        auto* address = interface.add_addresses();
        address->set_address(*text);
        address->set_prefix_length(ifa->ifa_prefixlen);
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<vessel::agent::v1::Route>> DumpRoutes(NetlinkSocket& socket,
                                                                 const PodLink& link) {
  // Collected per family and kind, then concatenated in the documented order.
  std::vector<vessel::agent::v1::Route> buckets[4];  // v4 on-link, v4 via, v6 on-link, v6 via
  VESSEL_RETURN_IF_ERROR(DumpWithRetry(
      socket,
      [] {
        NetlinkMessage message(RTM_GETROUTE, 0);
        message.PutHeader(rtmsg{});  // AF_UNSPEC: both families
        return message;
      },
      "listing the routes (RTM_GETROUTE)",
      [&] {
        for (auto& bucket : buckets) bucket.clear();
      },
      [&](const nlmsghdr& h) -> absl::Status {
        if (h.nlmsg_type != RTM_NEWROUTE) return absl::OkStatus();
        const auto rtm = FamilyHeader<rtmsg>(h);
        if (!rtm.has_value()) return absl::OkStatus();
        if (rtm->rtm_family != AF_INET && rtm->rtm_family != AF_INET6) return absl::OkStatus();
        AttrTable attrs(AttrsAfter(h, sizeof(rtmsg)));
        const uint32_t table = attrs.GetU32(RTA_TABLE).value_or(rtm->rtm_table);
        if (table != RT_TABLE_MAIN || rtm->rtm_type != RTN_UNICAST) return absl::OkStatus();
        if (rtm->rtm_protocol == RTPROT_KERNEL) return absl::OkStatus();
        // Multipath routes have no RTA_OIF and are not mirrored (one interface only).
        if (attrs.GetU32(RTA_OIF) != static_cast<uint32_t>(link.ifindex)) {
          return absl::OkStatus();
        }
        vessel::agent::v1::Route route;
        if (rtm->rtm_dst_len == 0) {
          route.set_destination("default");
        } else {
          const auto dst = attrs.Get(RTA_DST);
          if (!dst.has_value()) return absl::OkStatus();
          const auto text = FormatAddress(rtm->rtm_family, *dst);
          if (!text.has_value()) return absl::OkStatus();
          route.set_destination(absl::StrCat(*text, "/", rtm->rtm_dst_len));
        }
        if (const auto gateway = attrs.Get(RTA_GATEWAY); gateway.has_value()) {
          const auto text = FormatAddress(rtm->rtm_family, *gateway);
          if (text.has_value()) route.set_gateway(*text);
        }
        if (const auto source = attrs.Get(RTA_PREFSRC); source.has_value()) {
          const auto text = FormatAddress(rtm->rtm_family, *source);
          if (text.has_value()) route.set_source(*text);
        }
        route.set_device(link.name);
        route.set_scope(rtm->rtm_scope);
        const int bucket =
            (rtm->rtm_family == AF_INET6 ? 2 : 0) + (route.gateway().empty() ? 0 : 1);
        buckets[bucket].push_back(std::move(route));
        return absl::OkStatus();
      }));
  std::vector<vessel::agent::v1::Route> routes;
  for (auto& bucket : buckets) {
    for (auto& route : bucket) routes.push_back(std::move(route));
  }
  return routes;
}

}  // namespace

absl::StatusOr<PodNetwork> InspectPodNetwork(const std::string& netns_path) {
  VESSEL_ASSIGN_OR_RETURN(NetlinkSocket socket, NetlinkSocket::Open(netns_path));
  VESSEL_ASSIGN_OR_RETURN(std::vector<LinkInfo> links, DumpLinks(socket));
  const std::string where =
      netns_path.empty() ? std::string("this process's network namespace")
                         : absl::StrCat("network namespace ", netns_path);
  auto chosen = std::find_if(links.begin(), links.end(), [](const LinkInfo& info) {
    return !info.loopback && info.kind != "tun";
  });
  if (chosen == links.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat(where,
                     " has no interface besides lo: the CNI plugin did not set it up (expected a "
                     "veth such as eth0 with the pod's addresses)"));
  }
  if (!chosen->has_mac) {
    return absl::FailedPreconditionError(absl::StrCat(
        "interface ", chosen->link.name, " in ", where,
        " has no Ethernet MAC address: only Ethernet-like pod interfaces (veth) can be mirrored "
        "into the guest; configure the CNI plugin to create a veth"));
  }

  PodNetwork pod;
  pod.link = chosen->link;
  pod.interface.set_name(pod.link.name);
  pod.interface.set_mac(net::FormatMac(pod.link.mac));
  pod.interface.set_mtu(pod.link.mtu);
  VESSEL_RETURN_IF_ERROR(DumpAddresses(socket, pod.link.ifindex, pod.interface));
  VESSEL_ASSIGN_OR_RETURN(pod.routes, DumpRoutes(socket, pod.link));
  return pod;
}

}  // namespace vessel::sandbox::network
