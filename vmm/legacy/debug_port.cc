#include "vmm/legacy/debug_port.h"

namespace vessel {

void DebugPort::Read(uint64_t, absl::Span<uint8_t> data) {
  for (uint8_t& b : data) b = 0xff;
}

void DebugPort::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (seen_[data[0]]) return;
  seen_[data[0]] = true;
  marks_.push_back(Mark{data[0], std::chrono::duration_cast<std::chrono::nanoseconds>(now - start_)});
}

std::vector<DebugPort::Mark> DebugPort::marks() const {
  std::lock_guard lock(mu_);
  return marks_;
}

std::string DebugPort::RangeName(uint8_t code) {
  if (code < 0x20) return "firmware";
  if (code < 0x40) return "bootloader";
  if (code < 0x60) return "kernel";
  if (code < 0x80) return "userspace";
  return "other";
}

}  // namespace vessel
