// NetConfig: what a virtio-net device is built from (tap name, guest MAC, network namespace), and
// the MAC address helpers the VMM's command line uses.
#ifndef VESSEL_DEVICES_NET_NET_CONFIG_H_
#define VESSEL_DEVICES_NET_NET_CONFIG_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vessel::net {

using MacAddress = std::array<uint8_t, 6>;

struct NetConfig {
  // The host tap interface: opened if it exists, created (non-persistent: it disappears when the
  // device closes it) otherwise. At most 15 bytes (IFNAMSIZ - 1), no '/' or whitespace.
  std::string tap_name;
  // The guest's MAC address (virtio_net_config.mac); a random locally administered unicast address
  // when absent.
  std::optional<MacAddress> mac;
  // Network namespace to open the tap in: a namespace file such as /var/run/netns/NAME or
  // /proc/PID/ns/net. Empty: the VMM's own namespace.
  std::string netns_path;
};

// Parses "52:54:00:12:34:56" (six two-digit hex groups separated by ':' or '-', either case).
absl::StatusOr<MacAddress> ParseMac(absl::string_view text);
// "52:54:00:12:34:56" (lower case).
std::string FormatMac(const MacAddress& mac);
// A random locally administered (bit 1 of the first octet set), unicast (bit 0 clear) address.
MacAddress RandomMac();
// OK when the tap name is usable and the MAC (if given) is a non-zero unicast address.
absl::Status ValidateNetConfig(const NetConfig& config);

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_NET_CONFIG_H_
