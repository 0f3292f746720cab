#include "sandbox/network/tc_mirror.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox::network {
namespace {

// The ingress qdisc's handle (ffff:) and the filters' priority on it.
constexpr uint32_t kIngressHandle = TC_H_MAKE(TC_H_INGRESS, 0);
constexpr uint32_t kFilterPriority = 1;

struct LinkState {
  int ifindex = 0;
  uint32_t mtu = 0;
};

absl::StatusOr<LinkState> LookUpLink(NetlinkSocket& socket, const std::string& name,
                                     absl::string_view role, absl::string_view fix) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(absl::StrCat(
        role, " name \"", name, "\" is not an interface name: 1 to ", IFNAMSIZ - 1, " bytes"));
  }
  NetlinkMessage message(RTM_GETLINK, 0);
  message.PutHeader(ifinfomsg{});
  message.PutString(IFLA_IFNAME, name);
  LinkState state;
  int err = 0;
  const absl::Status status = socket.Request(
      message, absl::StrCat("looking up ", role, " ", name),
      [&](const nlmsghdr& h) {
        if (h.nlmsg_type != RTM_NEWLINK) return;
        const auto ifi = FamilyHeader<ifinfomsg>(h);
        if (!ifi.has_value()) return;
        state.ifindex = ifi->ifi_index;
        state.mtu = AttrTable(AttrsAfter(h, sizeof(ifinfomsg))).GetU32(IFLA_MTU).value_or(0);
      },
      &err);
  if (err == ENODEV) {
    return absl::NotFoundError(absl::StrCat(
        "no interface ", name, " (", role, ") in network namespace ",
        socket.netns_path().empty() ? "of this process" : socket.netns_path(), ": ", fix));
  }
  VESSEL_RETURN_IF_ERROR(status);
  if (state.ifindex == 0) {
    return absl::InternalError(absl::StrCat("looking up ", role, " ", name,
                                            ": the kernel answered without the interface"));
  }
  return state;
}

// Extra words for the errors a kernel or a caller can cause, by errno.
std::string Hint(int err, absl::string_view kernel_feature) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "; changing interfaces and traffic control needs CAP_NET_ADMIN in the namespace "
             "(run as root)";
    case ENOENT:
    case EOPNOTSUPP:
      if (kernel_feature.empty()) return "";
      return absl::StrCat("; the kernel may lack ", kernel_feature);
    default:
      return "";
  }
}

absl::Status WithHint(absl::Status status, int err, absl::string_view kernel_feature) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(status.message(), Hint(err, kernel_feature)));
}

}  // namespace

absl::StatusOr<TcMirror> TcMirror::Create(const std::string& netns_path,
                                          const std::string& veth_name,
                                          const std::string& tap_name) {
  VESSEL_ASSIGN_OR_RETURN(NetlinkSocket socket, NetlinkSocket::Open(netns_path));
  VESSEL_ASSIGN_OR_RETURN(
      LinkState veth,
      LookUpLink(socket, veth_name, "pod interface",
                 "name the pod's interface as InspectPodNetwork reports it (usually eth0)"));
  VESSEL_ASSIGN_OR_RETURN(
      LinkState tap,
      LookUpLink(socket, tap_name, "tap",
                 "open the tap (the virtio-net device creates it) before mirroring to it"));
  if (veth.ifindex == tap.ifindex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pod interface and tap are the same interface (", veth_name,
        "): mirror the pod's veth to the sandbox's tap"));
  }

  // The tap carries the veth's frames unchanged, so it takes the veth's MTU; it must be up for
  // the redirect to deliver anything.
  {
    NetlinkMessage message(RTM_NEWLINK, 0);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = tap.ifindex;
    ifi.ifi_flags = IFF_UP;
    ifi.ifi_change = IFF_UP;
    message.PutHeader(ifi);
    if (veth.mtu != 0) message.PutU32(IFLA_MTU, veth.mtu);
    int err = 0;
    absl::Status status = socket.Request(
        message, absl::StrCat("setting tap ", tap_name, " up with MTU ", veth.mtu), &err);
    VESSEL_RETURN_IF_ERROR(WithHint(std::move(status), err, ""));
  }

  TcMirror mirror(std::move(socket), veth_name, veth.ifindex, tap_name, tap.ifindex);
  // On failure `mirror` goes out of scope and removes whatever was added.
  VESSEL_RETURN_IF_ERROR(mirror.AddRedirect(veth_name, veth.ifindex, mirror.veth_qdisc_, tap_name,
                                            tap.ifindex));
  VESSEL_RETURN_IF_ERROR(mirror.AddRedirect(tap_name, tap.ifindex, mirror.tap_qdisc_, veth_name,
                                            veth.ifindex));
  return mirror;
}

namespace {

// "tc qdisc add|del dev IFINDEX ingress" as a netlink request.
NetlinkMessage IngressQdiscMessage(uint16_t type, uint16_t flags, int ifindex) {
  NetlinkMessage message(type, flags);
  tcmsg tcm{};
  tcm.tcm_family = AF_UNSPEC;
  tcm.tcm_ifindex = ifindex;
  tcm.tcm_handle = kIngressHandle;
  tcm.tcm_parent = TC_H_INGRESS;
  message.PutHeader(tcm);
  message.PutString(TCA_KIND, "ingress");
  return message;
}

}  // namespace

absl::Status TcMirror::AddRedirect(const std::string& from_name, int from_ifindex,
                                   bool& qdisc_added, const std::string& to_name,
                                   int to_ifindex) {
  NetlinkSocket& socket = *socket_;
  // tc qdisc add dev FROM ingress
  {
    NetlinkMessage message = IngressQdiscMessage(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, from_ifindex);
    int err = 0;
    absl::Status status =
        socket.Request(message, absl::StrCat("adding an ingress qdisc to ", from_name), &err);
    if (err == EEXIST) {
      return absl::AlreadyExistsError(absl::StrCat(
          status.message(), "; ", from_name,
          " already has an ingress qdisc: another mirror or tc setup owns it (if it is stale, "
          "remove it with `tc qdisc del dev ",
          from_name, " ingress` in that namespace)"));
    }
    VESSEL_RETURN_IF_ERROR(
        WithHint(std::move(status), err, "the ingress qdisc (CONFIG_NET_SCH_INGRESS)"));
    qdisc_added = true;
  }
  // tc filter add dev FROM parent ffff: protocol all prio 1 u32 match u32 0 0
  //     action mirred egress redirect dev TO
  {
    NetlinkMessage message(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL);
    tcmsg tcm{};
    tcm.tcm_family = AF_UNSPEC;
    tcm.tcm_ifindex = from_ifindex;
    tcm.tcm_handle = 0;
    tcm.tcm_parent = kIngressHandle;
    tcm.tcm_info = TC_H_MAKE(kFilterPriority << 16, htons(ETH_P_ALL));
    message.PutHeader(tcm);
    message.PutString(TCA_KIND, "u32");
    const size_t options = message.BeginNested(TCA_OPTIONS);
    {
      // One key with mask 0: every packet matches; terminal, because it has an action.
      std::vector<uint8_t> selector(sizeof(tc_u32_sel) + sizeof(tc_u32_key), 0);
      tc_u32_sel sel{};
      sel.flags = TC_U32_TERMINAL;
      sel.nkeys = 1;
      std::memcpy(selector.data(), &sel, sizeof(sel));
      tc_u32_key key{};
      std::memcpy(selector.data() + sizeof(sel), &key, sizeof(key));
      message.PutAttr(TCA_U32_SEL, selector.data(), selector.size());

      const size_t actions = message.BeginNested(TCA_U32_ACT);
      const size_t first = message.BeginNested(1);  // action order 1
      message.PutString(TCA_ACT_KIND, "mirred");
      const size_t act_options = message.BeginNested(TCA_ACT_OPTIONS);
      tc_mirred mirred{};
      mirred.action = TC_ACT_STOLEN;  // the frame is gone from FROM's stack
      mirred.eaction = TCA_EGRESS_REDIR;
      mirred.ifindex = static_cast<uint32_t>(to_ifindex);
      message.PutAttr(TCA_MIRRED_PARMS, &mirred, sizeof(mirred));
      message.EndNested(act_options);
      message.EndNested(first);
      message.EndNested(actions);
    }
    message.EndNested(options);
    int err = 0;
    absl::Status status = socket.Request(
        message,
        absl::StrCat("adding a u32 filter redirecting ", from_name, " ingress to ", to_name,
                     " egress (mirred)"),
        &err);
    VESSEL_RETURN_IF_ERROR(WithHint(
        std::move(status), err,
        "the u32 classifier or the mirred action (CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED)"));
  }
  return absl::OkStatus();
}

absl::Status TcMirror::DeleteIngress(const std::string& name, int ifindex) {
  NetlinkMessage message = IngressQdiscMessage(RTM_DELQDISC, 0, ifindex);
  int err = 0;
  absl::Status status =
      socket_->Request(message, absl::StrCat("deleting the ingress qdisc of ", name), &err);
  // Gone already: the interface (ENODEV: the tap closes with the VMM, the CNI plugin deletes the
  // veth) or the qdisc (ENOENT, or EINVAL from kernels that say so for a missing ingress qdisc).
  if (err == ENODEV || err == ENOENT || err == EINVAL) return absl::OkStatus();
  return status;
}

absl::Status TcMirror::Remove() {
  if (!socket_.has_value()) return absl::OkStatus();
  absl::Status result;
  if (veth_qdisc_) {
    absl::Status status = DeleteIngress(veth_name_, veth_ifindex_);
    if (status.ok()) veth_qdisc_ = false;
    result.Update(status);
  }
  if (tap_qdisc_) {
    absl::Status status = DeleteIngress(tap_name_, tap_ifindex_);
    if (status.ok()) tap_qdisc_ = false;
    result.Update(status);
  }
  return result;
}

TcMirror::TcMirror(TcMirror&& other) noexcept
    : socket_(std::move(other.socket_)),
      veth_name_(std::move(other.veth_name_)),
      veth_ifindex_(other.veth_ifindex_),
      tap_name_(std::move(other.tap_name_)),
      tap_ifindex_(other.tap_ifindex_),
      veth_qdisc_(std::exchange(other.veth_qdisc_, false)),
      tap_qdisc_(std::exchange(other.tap_qdisc_, false)) {
  other.socket_.reset();
}

TcMirror& TcMirror::operator=(TcMirror&& other) noexcept {
  if (this != &other) {
    if (absl::Status status = Remove(); !status.ok()) {
      LogWarning("tc mirror ", veth_name_, " <-> ", tap_name_, ": ", status.message());
    }
    socket_ = std::move(other.socket_);
    other.socket_.reset();
    veth_name_ = std::move(other.veth_name_);
    veth_ifindex_ = other.veth_ifindex_;
    tap_name_ = std::move(other.tap_name_);
    tap_ifindex_ = other.tap_ifindex_;
    veth_qdisc_ = std::exchange(other.veth_qdisc_, false);
    tap_qdisc_ = std::exchange(other.tap_qdisc_, false);
  }
  return *this;
}

TcMirror::~TcMirror() {
  if (absl::Status status = Remove(); !status.ok()) {
    LogWarning("tc mirror ", veth_name_, " <-> ", tap_name_, ": ", status.message());
  }
}

}  // namespace vessel::sandbox::network
