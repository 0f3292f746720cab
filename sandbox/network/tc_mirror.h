// TcMirror: joins a pod's veth and the sandbox's tap inside the pod's network namespace the way
// Kata Containers' "tcfilter" internetworking model does: both get an ingress qdisc, and a u32
// match-all filter on each redirects every frame it receives to the other's egress (mirred egress
// redirect). Frames the pod's network sends to the veth come out of the tap (into the guest);
// frames the guest writes to the tap leave through the veth. The namespace's own stack sees none
// of them, so the guest owns the pod's IP and MAC.
//
//   tc qdisc add dev VETH ingress
//   tc filter add dev VETH parent ffff: protocol all u32 match u32 0 0
//       action mirred egress redirect dev TAP
//   (and the same from TAP to VETH)
//
// Done over rtnetlink (see README.md), with a socket opened inside the namespace once: the object
// works from any thread and never changes a thread's namespace.
#ifndef VESSEL_SANDBOX_NETWORK_TC_MIRROR_H_
#define VESSEL_SANDBOX_NETWORK_TC_MIRROR_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sandbox/network/netlink.h"

namespace vessel::sandbox::network {

class TcMirror {
 public:
  // In the network namespace at `netns_path` (empty: this process's): sets `tap_name` up with the
  // MTU of `veth_name`, then adds the ingress qdiscs and redirect filters both ways. The tap must
  // exist already (the virtio-net device opens it). On failure no qdisc or filter stays behind
  // (the tap stays up). Errors name
  // the device, the operation and the fix: missing namespace, unknown interface (NotFound), an
  // ingress qdisc someone else already put there (AlreadyExists), a kernel without u32 / mirred /
  // ingress support, no CAP_NET_ADMIN.
  static absl::StatusOr<TcMirror> Create(const std::string& netns_path,
                                         const std::string& veth_name,
                                         const std::string& tap_name);

  TcMirror(TcMirror&& other) noexcept;
  TcMirror& operator=(TcMirror&& other) noexcept;
  TcMirror(const TcMirror&) = delete;
  TcMirror& operator=(const TcMirror&) = delete;
  // Remove(), errors ignored (logged).
  ~TcMirror();

  // Deletes both ingress qdiscs (their filters go with them). An interface or namespace that is
  // already gone counts as removed (the tap vanishes when the VMM closes it). Idempotent.
  absl::Status Remove();

  const std::string& veth_name() const { return veth_name_; }
  const std::string& tap_name() const { return tap_name_; }
  int veth_ifindex() const { return veth_ifindex_; }
  int tap_ifindex() const { return tap_ifindex_; }

 private:
  TcMirror(NetlinkSocket socket, std::string veth_name, int veth_ifindex, std::string tap_name,
           int tap_ifindex)
      : socket_(std::move(socket)),
        veth_name_(std::move(veth_name)),
        veth_ifindex_(veth_ifindex),
        tap_name_(std::move(tap_name)),
        tap_ifindex_(tap_ifindex) {}

  // Adds the ingress qdisc on `from` and the filter redirecting to `to`; marks the qdisc as ours
  // as soon as it exists so Remove() deletes it even when the filter fails.
  absl::Status AddRedirect(const std::string& from_name, int from_ifindex, bool& qdisc_added,
                           const std::string& to_name, int to_ifindex);
  absl::Status DeleteIngress(const std::string& name, int ifindex);

  std::optional<NetlinkSocket> socket_;  // empty once moved from
  std::string veth_name_;
  int veth_ifindex_ = 0;
  std::string tap_name_;
  int tap_ifindex_ = 0;
  bool veth_qdisc_ = false;
  bool tap_qdisc_ = false;
};

}  // namespace vessel::sandbox::network

#endif  // VESSEL_SANDBOX_NETWORK_TC_MIRROR_H_
