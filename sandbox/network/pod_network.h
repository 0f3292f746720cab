// InspectPodNetwork: what a pod's network namespace (set up by a CNI plugin or a test) holds, read
// over rtnetlink and put in the shape the sandbox needs: the interface to mirror into the guest
// (for TcMirror and NetConfig) and the agent's Interface / Route messages (for
// CreateSandboxRequest), so the guest's eth0 gets the pod's MAC, MTU, addresses and routes.
#ifndef VESSEL_SANDBOX_NETWORK_POD_NETWORK_H_
#define VESSEL_SANDBOX_NETWORK_POD_NETWORK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/net/net_config.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::sandbox::network {

// The pod's interface in its namespace (usually the CNI plugin's veth, eth0).
struct PodLink {
  std::string name;
  int ifindex = 0;
  // Also the guest NIC's MAC (NetConfig::mac): the guest takes over the pod's identity.
  net::MacAddress mac{};
  uint32_t mtu = 0;
};

struct PodNetwork {
  PodLink link;
  // For CreateSandboxRequest.interfaces: name and MAC (lower case) of `link`, its MTU, its global
  // IPv4/IPv6 addresses with prefix lengths, in the kernel's order.
  vessel::agent::v1::Interface interface;
  // For CreateSandboxRequest.routes: the main table's unicast routes through `link`, IPv4 then
  // IPv6, on-link routes (no gateway) before routes via a gateway, so each gateway is reachable
  // when its route is added. Destination "default" or a CIDR; device = interface.name().
  // Routes the kernel makes by itself (proto kernel: an address's prefix route, fe80::/64) are
  // left out: the guest's kernel makes them too when the agent adds the addresses.
  std::vector<vessel::agent::v1::Route> routes;
};

// Reads the network namespace at `netns_path` (/var/run/netns/NAME, /proc/PID/ns/net, or any
// namespace file; empty = this process's). The pod interface is the first one (lowest ifindex)
// that is not loopback and not a tun/tap (the sandbox's own taps live in the same namespace).
// Errors: the namespace does not exist / is not one (from net::RunInNetns), it holds nothing but lo
// (FailedPrecondition: the CNI plugin did not set it up), a netlink failure (names the dump).
absl::StatusOr<PodNetwork> InspectPodNetwork(const std::string& netns_path);

}  // namespace vessel::sandbox::network

#endif  // VESSEL_SANDBOX_NETWORK_POD_NETWORK_H_
