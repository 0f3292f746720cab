#include "vmm/legacy/power_port.h"

namespace vessel {

void PowerPort::Read(uint64_t, absl::Span<uint8_t> data) {
  for (uint8_t& b : data) b = 0;
}

void PowerPort::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (offset != 0 || data.empty()) return;
  if (data[0] == kPowerOff && on_poweroff_) on_poweroff_();
  if (data[0] == kReset && on_reset_) on_reset_();
}

}  // namespace vessel
