// The sandbox's network and DNS (CreateSandbox): interfaces found by MAC, renamed, given an MTU
// and addresses and set up; routes in the main table; /etc/resolv.conf. rtnetlink by hand (the
// kernel UAPI headers, no libnl/libmnl: the agent is static and small). Works on the network
// namespace the agent runs in (the VM's; in host-mode tests a scratch namespace).
#ifndef VESSEL_GUEST_AGENT_NETWORK_H_
#define VESSEL_GUEST_AGENT_NETWORK_H_

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {

// Checks every interface and route (MAC, name, addresses, CIDRs) without changing anything:
// InvalidArgument naming the bad entry.
absl::Status ValidateNetwork(const google::protobuf::RepeatedPtrField<v1::Interface>& interfaces,
                             const google::protobuf::RepeatedPtrField<v1::Route>& routes);

// Brings `lo` up, then configures each interface in order (NotFound naming the MAC when no
// device has it), then adds the routes (replacing a same-destination route). Errors name the
// interface or route and the errno. Call ValidateNetwork first.
absl::Status ConfigureNetwork(const google::protobuf::RepeatedPtrField<v1::Interface>& interfaces,
                              const google::protobuf::RepeatedPtrField<v1::Route>& routes);

// Writes `lines` (one per line) to <root>/etc/resolv.conf atomically (temp file + rename).
// InvalidArgument for a line with a newline or NUL, more than 64 lines or 4 KiB in all.
absl::Status WriteResolvConf(const std::string& root,
                             const google::protobuf::RepeatedPtrField<std::string>& lines);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_NETWORK_H_
