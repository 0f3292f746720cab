// I8042: just enough of the PC keyboard controller for the guest to reset the machine.
// Writing command 0xFE (pulse reset line) to port 0x64 calls the reset callback; everything else
// reads as an idle controller with empty buffers.
#ifndef VESSEL_VMM_LEGACY_I8042_H_
#define VESSEL_VMM_LEGACY_I8042_H_

#include <functional>

#include "vmm/bus/bus.h"

namespace vessel {

class I8042 : public BusDevice {
 public:
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;
  static constexpr uint8_t kResetCommand = 0xfe;

  explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}
  // Inserted at port 0x60 with length 5 (0x60..0x64); 0x61-0x63 are not ours and read as 0xff.
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

 private:
  std::function<void()> on_reset_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_LEGACY_I8042_H_
