#include "devices/net/net_config.h"

#include <net/if.h>

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vessel::net {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<MacAddress> ParseMac(absl::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "MAC address '", text, "' is not six two-digit hex groups like 52:54:00:12:34:56"));
  };
  // "xx:xx:xx:xx:xx:xx": 17 characters.
  if (text.size() != 17) return bad();
  const char sep = text[2];
  if (sep != ':' && sep != '-') return bad();
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); ++i) {
    const size_t at = i * 3;
    if (i > 0 && text[at - 1] != sep) return bad();
    const int hi = HexDigit(text[at]);
    const int lo = HexDigit(text[at + 1]);
    if (hi < 0 || lo < 0) return bad();
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

std::string FormatMac(const MacAddress& mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
                         mac[5]);
}

MacAddress RandomMac() {
  std::random_device rd;
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); i += 2) {
    const uint32_t r = rd();
    mac[i] = static_cast<uint8_t>(r);
    mac[i + 1] = static_cast<uint8_t>(r >> 8);
  }
  mac[0] = static_cast<uint8_t>((mac[0] & 0xfc) | 0x02);  // locally administered, unicast
  return mac;
}

absl::Status ValidateNetConfig(const NetConfig& config) {
  const std::string& name = config.tap_name;
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "virtio-net: no tap name: give the host tap interface to attach, e.g. tap0");
  }
  if (name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-net: tap name '", name, "' is ", name.size(),
                     " bytes; interface names have at most ", IFNAMSIZ - 1));
  }
  for (char c : name) {
    if (c == '/' || c == ':' || absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        !absl::ascii_isprint(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("virtio-net: tap name '", name,
                       "' has a character interface names cannot have ('/', ':', "
                       "whitespace or a control character)"));
    }
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-net: '", name, "' is not a valid interface name"));
  }
  if (config.mac.has_value()) {
    const MacAddress& mac = *config.mac;
    if (mac[0] & 0x01) {
      return absl::InvalidArgumentError(absl::StrCat(
          "virtio-net: MAC ", FormatMac(mac),
          " is a multicast address; the guest's address must be unicast (even first octet), e.g. "
          "52:54:00:12:34:56"));
    }
    if (mac == MacAddress{}) {
      return absl::InvalidArgumentError(
          "virtio-net: MAC 00:00:00:00:00:00 is not a usable address");
    }
  }
  return absl::OkStatus();
}

}  // namespace vessel::net
