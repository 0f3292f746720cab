#include "sandbox/network/netlink.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "devices/net/netns.h"
#include "vmm/base/errors.h"

namespace vessel::sandbox::network {
namespace {

constexpr size_t kNlaHeader = NLA_HDRLEN;
constexpr int kAnswerTimeoutSeconds = 10;

// The status for an errno the kernel answered, with its extended-ACK text when there is one.
absl::Status KernelError(const std::string& where, int err, const std::string& kernel_text) {
  absl::Status status = ErrnoStatus(where, err);
  if (kernel_text.empty()) return status;
  return absl::Status(status.code(), absl::StrCat(status.message(), ": kernel says \"",
                                                  kernel_text, "\""));
}

// The errno of an NLMSG_ERROR message (0 = ACK) and, with NLM_F_ACK_TLVS, the kernel's message.
std::pair<int, std::string> ParseError(const nlmsghdr& message) {
  if (message.nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return {EPROTO, ""};
  nlmsgerr err;
  std::memcpy(&err, NLMSG_DATA(&message), sizeof(err));
  std::string text;
  if ((message.nlmsg_flags & NLM_F_ACK_TLVS) != 0) {
    // NETLINK_CAP_ACK is set: the request is not echoed back, the TLVs follow the nlmsgerr.
    size_t offset = sizeof(err);
    if ((message.nlmsg_flags & NLM_F_CAPPED) == 0) offset += err.msg.nlmsg_len - NLMSG_HDRLEN;
    const absl::Span<const uint8_t> tlvs = AttrsAfter(message, offset);
    AttrTable table(tlvs);
    text = table.GetString(NLMSGERR_ATTR_MSG).value_or("");
  }
  return {-err.error, text};
}

}  // namespace

// --- NetlinkMessage ---

NetlinkMessage::NetlinkMessage(uint16_t type, uint16_t flags) {
  nlmsghdr header{};
  header.nlmsg_type = type;
  header.nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST);
  Append(&header, sizeof(header));
}

void NetlinkMessage::Append(const void* data, size_t len) {
  const size_t start = buffer_.size();
  buffer_.resize(start + NLMSG_ALIGN(len), 0);
  if (len > 0) std::memcpy(buffer_.data() + start, data, len);
}

void NetlinkMessage::PutAttr(uint16_t type, const void* data, size_t len) {
  nlattr attr{};
  attr.nla_type = type;
  attr.nla_len = static_cast<uint16_t>(kNlaHeader + len);
  Append(&attr, sizeof(attr));
  Append(data, len);
}

void NetlinkMessage::PutString(uint16_t type, absl::string_view value) {
  std::string copy(value);
  PutAttr(type, copy.c_str(), copy.size() + 1);
}

size_t NetlinkMessage::BeginNested(uint16_t type) {
  const size_t token = buffer_.size();
  nlattr attr{};
  attr.nla_type = static_cast<uint16_t>(type | NLA_F_NESTED);
  Append(&attr, sizeof(attr));
  return token;
}

void NetlinkMessage::EndNested(size_t token) {
  const uint16_t len = static_cast<uint16_t>(buffer_.size() - token);
  std::memcpy(buffer_.data() + token + offsetof(nlattr, nla_len), &len, sizeof(len));
}

void NetlinkMessage::AddFlags(uint16_t flags) {
  uint16_t current;
  std::memcpy(&current, buffer_.data() + offsetof(nlmsghdr, nlmsg_flags), sizeof(current));
  current = static_cast<uint16_t>(current | flags);
  std::memcpy(buffer_.data() + offsetof(nlmsghdr, nlmsg_flags), &current, sizeof(current));
}

absl::Span<const uint8_t> NetlinkMessage::Finish(uint32_t seq) {
  const uint32_t len = static_cast<uint32_t>(buffer_.size());
  std::memcpy(buffer_.data() + offsetof(nlmsghdr, nlmsg_len), &len, sizeof(len));
  std::memcpy(buffer_.data() + offsetof(nlmsghdr, nlmsg_seq), &seq, sizeof(seq));
  return buffer_;
}

// --- AttrTable ---

AttrTable::AttrTable(absl::Span<const uint8_t> data) {
  size_t offset = 0;
  while (offset + kNlaHeader <= data.size()) {
    nlattr attr;
    std::memcpy(&attr, data.data() + offset, sizeof(attr));
    if (attr.nla_len < kNlaHeader || offset + attr.nla_len > data.size()) break;
    const uint16_t type = attr.nla_type & NLA_TYPE_MASK;
    if (type <= kMaxType) {
      attrs_[type] = data.subspan(offset + kNlaHeader, attr.nla_len - kNlaHeader);
    }
    offset += NLA_ALIGN(attr.nla_len);
  }
}

std::optional<absl::Span<const uint8_t>> AttrTable::Get(uint16_t type) const {
  if (type > kMaxType) return std::nullopt;
  return attrs_[type];
}

std::optional<uint32_t> AttrTable::GetU32(uint16_t type) const {
  const auto attr = Get(type);
  if (!attr.has_value() || attr->size() < sizeof(uint32_t)) return std::nullopt;
  uint32_t value;
  std::memcpy(&value, attr->data(), sizeof(value));
  return value;
}

std::optional<std::string> AttrTable::GetString(uint16_t type) const {
  const auto attr = Get(type);
  if (!attr.has_value()) return std::nullopt;
  std::string value(reinterpret_cast<const char*>(attr->data()), attr->size());
  const size_t nul = value.find('\0');
  if (nul != std::string::npos) value.resize(nul);
  return value;
}

absl::Span<const uint8_t> AttrsAfter(const nlmsghdr& message, size_t header_size) {
  const size_t start = NLMSG_HDRLEN + NLMSG_ALIGN(header_size);
  if (message.nlmsg_len <= start) return {};
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&message) + start,
                             message.nlmsg_len - start);
}

// --- NetlinkSocket ---

absl::StatusOr<NetlinkSocket> NetlinkSocket::Open(const std::string& netns_path) {
  ScopedFd fd;
  VESSEL_RETURN_IF_ERROR(net::RunInNetns(netns_path, [&]() -> absl::Status {
    fd.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd.valid()) {
      return ErrnoStatus(absl::StrCat("socket(AF_NETLINK, NETLINK_ROUTE) in network namespace ",
                                      netns_path.empty() ? "of this process" : netns_path));
    }
    return absl::OkStatus();
  }));
  // Error answers without the request echoed back, with the kernel's explanation; both are
  // best effort (older kernels simply do not add the text).
  const int one = 1;
  ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  // The kernel answers at once; a bound wait turns a lost answer into an error, not a hang.
  const timeval timeout{kAnswerTimeoutSeconds, 0};
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0) {
    return ErrnoStatus("setsockopt(netlink socket, SO_RCVTIMEO)");
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local), sizeof(local)) != 0) {
    return ErrnoStatus("bind(AF_NETLINK)");
  }
  return NetlinkSocket(std::move(fd), netns_path);
}

std::string NetlinkSocket::Where(absl::string_view what) const {
  if (netns_path_.empty()) return std::string(what);
  return absl::StrCat(what, " in network namespace ", netns_path_);
}

absl::Status NetlinkSocket::Send(absl::Span<const uint8_t> bytes, absl::string_view what) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    const ssize_t n = ::sendto(fd_.get(), bytes.data(), bytes.size(), 0,
                               reinterpret_cast<const sockaddr*>(&kernel), sizeof(kernel));
    if (n == static_cast<ssize_t>(bytes.size())) return absl::OkStatus();
    if (n < 0 && errno == EINTR) continue;
    return ErrnoStatus(absl::StrCat(Where(what), ": sending the netlink request"),
                       n < 0 ? errno : EMSGSIZE);
  }
}

absl::StatusOr<size_t> NetlinkSocket::Receive(absl::string_view what) {
  for (;;) {
    // MSG_TRUNC: the datagram's real length, so a truncated one is noticed, never parsed.
    const ssize_t n = ::recv(fd_.get(), buffer_.data(), buffer_.size(), MSG_TRUNC);
    if (n > static_cast<ssize_t>(buffer_.size())) {
      return absl::InternalError(absl::StrCat(Where(what), ": a netlink answer of ", n,
                                              " bytes did not fit the ", buffer_.size(),
                                              "-byte buffer"));
    }
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::DeadlineExceededError(absl::StrCat(
          Where(what), ": the kernel did not answer the netlink request within ",
          kAnswerTimeoutSeconds, " s"));
    }
    return ErrnoStatus(absl::StrCat(Where(what), ": receiving the kernel's netlink answer"));
  }
}

absl::Status NetlinkSocket::Request(NetlinkMessage& message, absl::string_view what,
                                    int* errno_out) {
  return Request(message, what, [](const nlmsghdr&) {}, errno_out);
}

absl::Status NetlinkSocket::Request(NetlinkMessage& message, absl::string_view what,
                                    absl::FunctionRef<void(const nlmsghdr&)> on_reply,
                                    int* errno_out) {
  if (errno_out != nullptr) *errno_out = 0;
  const uint32_t seq = seq_++;
  message.AddFlags(NLM_F_ACK);
  VESSEL_RETURN_IF_ERROR(Send(message.Finish(seq), what));
  for (;;) {
    VESSEL_ASSIGN_OR_RETURN(size_t len, Receive(what));
    int remaining = static_cast<int>(len);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buffer_.data()); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_seq != seq) continue;  // an answer to an earlier request
      if (h->nlmsg_type != NLMSG_ERROR) {
        on_reply(*h);
        continue;
      }
      auto [err, text] = ParseError(*h);
      if (errno_out != nullptr) *errno_out = err;
      if (err == 0) return absl::OkStatus();
      return KernelError(Where(what), err, text);
    }
  }
}

absl::Status NetlinkSocket::Dump(NetlinkMessage& message, absl::string_view what,
                                 absl::FunctionRef<absl::Status(const nlmsghdr&)> on_message) {
  const uint32_t seq = seq_++;
  message.AddFlags(NLM_F_DUMP);
  VESSEL_RETURN_IF_ERROR(Send(message.Finish(seq), what));
  absl::Status result;
  bool interrupted = false;
  for (;;) {
    VESSEL_ASSIGN_OR_RETURN(size_t len, Receive(what));
    int remaining = static_cast<int>(len);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buffer_.data()); NLMSG_OK(h, remaining);
         h = NLMSG_NEXT(h, remaining)) {
      if (h->nlmsg_seq != seq) continue;
      if ((h->nlmsg_flags & NLM_F_DUMP_INTR) != 0) interrupted = true;
      if (h->nlmsg_type == NLMSG_DONE) {
        if (!result.ok()) return result;
        if (interrupted) {
          return absl::AbortedError(
              absl::StrCat(Where(what), ": the table changed during the dump; try again"));
        }
        return absl::OkStatus();
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto [err, text] = ParseError(*h);
        if (err == 0) continue;
        return KernelError(Where(what), err, text);
      }
      // Keep reading to NLMSG_DONE after a callback error so the socket stays in step.
      if (result.ok()) result = on_message(*h);
    }
  }
}

}  // namespace vessel::sandbox::network
