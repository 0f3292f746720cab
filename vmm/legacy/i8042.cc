#include "vmm/legacy/i8042.h"

namespace vessel {

void I8042::Read(uint64_t offset, absl::Span<uint8_t> data) {
  for (uint8_t& b : data) b = 0xff;
  if (data.empty()) return;
  // Status (0x64): output buffer empty, input buffer empty, system flag set.
  if (offset == kCommandPort - kDataPort) data[0] = 0x04;
  if (offset == 0) data[0] = 0x00;
}

void I8042::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (data.empty()) return;
  if (offset == kCommandPort - kDataPort && data[0] == kResetCommand && on_reset_) on_reset_();
}

}  // namespace vessel
