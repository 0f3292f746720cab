// CmosRtc: the MC146818 real-time clock at ports 0x70/0x71, read-only, showing host UTC time.
// Linux reads it once at boot for the wall clock; without it the guest's clock starts in 1970
// (and an all-ones register file makes the kernel wait on a never-clearing update-in-progress bit).
#ifndef VESSEL_VMM_LEGACY_CMOS_RTC_H_
#define VESSEL_VMM_LEGACY_CMOS_RTC_H_

#include <ctime>
#include <functional>
#include <mutex>

#include "vmm/bus/bus.h"

namespace vessel {

class CmosRtc : public BusDevice {
 public:
  static constexpr uint16_t kPort = 0x70;
  using Clock = std::function<std::time_t()>;

  explicit CmosRtc(Clock clock = [] { return std::time(nullptr); }) : clock_(std::move(clock)) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

 private:
  uint8_t ReadIndexed(uint8_t index) const;

  Clock clock_;
  std::mutex mu_;
  uint8_t index_ = 0;
};

}  // namespace vessel

#endif  // VESSEL_VMM_LEGACY_CMOS_RTC_H_
