// PowerPort: the guest's way to power off or reboot the VM without ACPI.
//
// One byte I/O port at 0x600 with the values of a hardware-reduced ACPI sleep control register
// (as in Cloud Hypervisor's shutdown device): 0x34 (SLP_TYP=5 | SLP_EN) powers off, 0x01 resets.
// vessel's guest init and agent write it through /dev/port. Other values are ignored.
#ifndef VESSEL_VMM_LEGACY_POWER_PORT_H_
#define VESSEL_VMM_LEGACY_POWER_PORT_H_

#include <functional>

#include "vmm/bus/bus.h"

namespace vessel {

class PowerPort : public BusDevice {
 public:
  static constexpr uint16_t kPort = 0x600;
  static constexpr uint8_t kPowerOff = 0x34;
  static constexpr uint8_t kReset = 0x01;

  PowerPort(std::function<void()> on_poweroff, std::function<void()> on_reset)
      : on_poweroff_(std::move(on_poweroff)), on_reset_(std::move(on_reset)) {}
  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

 private:
  std::function<void()> on_poweroff_;
  std::function<void()> on_reset_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_LEGACY_POWER_PORT_H_
