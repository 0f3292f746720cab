// DebugPort: the boot-timing port 0x80 (Cloud Hypervisor's convention).
//
// The guest writes a one-byte code; the VMM records the host time since VM creation for the first
// write of each code. Ranges: 0x00-0x1f firmware, 0x20-0x3f bootloader, 0x40-0x5f kernel,
// 0x60-0x7f userspace. vessel boots Linux with io_delay=none, so the kernel's port-0x80 delays
// don't land here.
#ifndef VESSEL_VMM_LEGACY_DEBUG_PORT_H_
#define VESSEL_VMM_LEGACY_DEBUG_PORT_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "vmm/bus/bus.h"

namespace vessel {

class DebugPort : public BusDevice {
 public:
  static constexpr uint16_t kPort = 0x80;
  struct Mark {
    uint8_t code;
    std::chrono::nanoseconds since_start;
  };

  explicit DebugPort(std::chrono::steady_clock::time_point start) : start_(start) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

  std::vector<Mark> marks() const;
  // "kernel", "userspace", ... for a code.
  static std::string RangeName(uint8_t code);

 private:
  std::chrono::steady_clock::time_point start_;
  mutable std::mutex mu_;
  std::vector<Mark> marks_;
  bool seen_[256] = {};
};

}  // namespace vessel

#endif  // VESSEL_VMM_LEGACY_DEBUG_PORT_H_
