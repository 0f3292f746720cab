#include "shim/log.h"

#include <unistd.h>

#include "absl/strings/str_format.h"

namespace vessel::shim {

std::string QuoteLogValue(absl::string_view value) {
  std::string out = "\"";
  for (unsigned char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\x%02x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

void ShimLog::set_sandbox(std::string sandbox_id) {
  std::lock_guard<std::mutex> lock(mu_);
  sandbox_ = std::move(sandbox_id);
}

std::string ShimLog::Format(absl::string_view level, absl::string_view msg, absl::Time now) const {
  std::string sandbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sandbox = sandbox_;
  }
  std::string line = absl::StrCat(
      "time=\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", now, absl::UTCTimeZone()), "\" level=", level,
      " msg=", QuoteLogValue(msg), " runtime=io.containerd.vessel.v2 namespace=", QuoteLogValue(ns_),
      " id=", QuoteLogValue(id_));
  if (!sandbox.empty()) absl::StrAppend(&line, " sandbox=", QuoteLogValue(sandbox));
  return line;
}

void ShimLog::Write(absl::string_view level, absl::string_view msg) {
  if (fd_ < 0) return;
  std::string line = Format(level, msg, absl::Now());
  line += '\n';
  ssize_t n = ::write(fd_, line.data(), line.size());  // one write: lines never interleave
  (void)n;
}

}  // namespace vessel::shim
