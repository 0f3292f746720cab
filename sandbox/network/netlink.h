// A small rtnetlink client: a NETLINK_ROUTE socket bound to one network namespace, a message
// builder (family header + attributes, nested attributes) and an attribute table for parsing.
//
// Every request asks for the kernel's ACK (NLM_F_ACK) and Request() waits for it, so a failed
// operation comes back as a status carrying the errno and the kernel's extended-ACK text. The
// socket is created inside the namespace (on a helper thread, see net::RunInNetns) and is bound to
// it for good: it may be used from any thread afterwards, and no caller thread ever changes
// namespace. Thread-compatible: one request at a time per socket.
#ifndef VESSEL_SANDBOX_NETWORK_NETLINK_H_
#define VESSEL_SANDBOX_NETWORK_NETLINK_H_

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::sandbox::network {

// One rtnetlink request under construction: nlmsghdr, a family header (ifinfomsg, tcmsg, ...) and
// attributes, each padded to NLA_ALIGNTO.
class NetlinkMessage {
 public:
  NetlinkMessage(uint16_t type, uint16_t flags);

  // Appends the family header; call once, before any attribute.
  template <typename Header>
  void PutHeader(const Header& header) {
    Append(&header, sizeof(header));
  }
  void PutAttr(uint16_t type, const void* data, size_t len);
  void PutU32(uint16_t type, uint32_t value) { PutAttr(type, &value, sizeof(value)); }
  // A NUL-terminated string attribute (what IFNAMSIZ names and TCA_KIND expect).
  void PutString(uint16_t type, absl::string_view value);
  // Starts a nested attribute (NLA_F_NESTED set); returns the token EndNested takes.
  size_t BeginNested(uint16_t type);
  void EndNested(size_t token);

  void AddFlags(uint16_t flags);
  // The finished message with `seq` and the total length filled in.
  absl::Span<const uint8_t> Finish(uint32_t seq);

 private:
  void Append(const void* data, size_t len);
  std::vector<uint8_t> buffer_;
};

// Attributes of one message (or one nested attribute) by type; types above kMaxType are ignored.
class AttrTable {
 public:
  static constexpr uint16_t kMaxType = 128;
  // Parses the attributes in `data` (the bytes after the family header).
  explicit AttrTable(absl::Span<const uint8_t> data);

  bool Has(uint16_t type) const { return Get(type).has_value(); }
  std::optional<absl::Span<const uint8_t>> Get(uint16_t type) const;
  std::optional<uint32_t> GetU32(uint16_t type) const;
  // A string attribute without its terminating NUL.
  std::optional<std::string> GetString(uint16_t type) const;

 private:
  std::array<std::optional<absl::Span<const uint8_t>>, kMaxType + 1> attrs_;
};

// The bytes of a message after nlmsghdr and a family header of `header_size` bytes (empty when
// the message is shorter).
absl::Span<const uint8_t> AttrsAfter(const nlmsghdr& message, size_t header_size);

// Copies the family header at the start of a message's payload; nullopt when it is too short.
template <typename Header>
std::optional<Header> FamilyHeader(const nlmsghdr& message) {
  if (message.nlmsg_len < NLMSG_LENGTH(sizeof(Header))) return std::nullopt;
  Header header;
  std::memcpy(&header, NLMSG_DATA(&message), sizeof(header));
  return header;
}

class NetlinkSocket {
 public:
  // A NETLINK_ROUTE socket inside the network namespace at `netns_path` (empty: the caller's).
  // Errors name the path and what to fix (see net::RunInNetns).
  static absl::StatusOr<NetlinkSocket> Open(const std::string& netns_path);

  NetlinkSocket(NetlinkSocket&&) = default;
  NetlinkSocket& operator=(NetlinkSocket&&) = default;

  // Sends `message` with NLM_F_ACK and waits for the kernel's answer. An error answer becomes a
  // status: "<what> in network namespace <ns>: <strerror> (errno N)[: <kernel's message>]", with
  // the code from the errno; `errno_out` (if given) receives the errno, 0 on success.
  absl::Status Request(NetlinkMessage& message, absl::string_view what, int* errno_out = nullptr);
  // The same for a request the kernel answers with a message before its ACK (a RTM_GET* without
  // NLM_F_DUMP): `on_reply` sees every answer of this request other than the ACK.
  absl::Status Request(NetlinkMessage& message, absl::string_view what,
                       absl::FunctionRef<void(const nlmsghdr&)> on_reply,
                       int* errno_out = nullptr);

  // Sends a dump request (NLM_F_DUMP is added) and calls `on_message` for every answer until
  // NLMSG_DONE. An interrupted dump (NLM_F_DUMP_INTR, the table changed meanwhile) is an Aborted
  // status: the caller may retry.
  absl::Status Dump(NetlinkMessage& message, absl::string_view what,
                    absl::FunctionRef<absl::Status(const nlmsghdr&)> on_message);

  const std::string& netns_path() const { return netns_path_; }

 private:
  NetlinkSocket(ScopedFd fd, std::string netns_path)
      : fd_(std::move(fd)), netns_path_(std::move(netns_path)) {}
  absl::Status Send(absl::Span<const uint8_t> bytes, absl::string_view what);
  // Receives the next datagram into buffer_; returns its length.
  absl::StatusOr<size_t> Receive(absl::string_view what);
  // "<what> in network namespace <ns>" (or just `what` in the caller's namespace).
  std::string Where(absl::string_view what) const;

  ScopedFd fd_;
  std::string netns_path_;
  uint32_t seq_ = 1;
  std::vector<uint8_t> buffer_ = std::vector<uint8_t>(64 * 1024);
};

}  // namespace vessel::sandbox::network

#endif  // VESSEL_SANDBOX_NETWORK_NETLINK_H_
