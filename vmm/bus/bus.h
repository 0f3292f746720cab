// Bus: an address-range map from guest I/O ports or MMIO addresses to devices.
//
// vCPU exits dispatch through one Bus for port I/O and one for MMIO. Ranges never overlap: an
// insertion that would overlap an existing range is refused.
#ifndef VESSEL_VMM_BUS_BUS_H_
#define VESSEL_VMM_BUS_BUS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace vessel {

// A device reachable through a Bus. `offset` is relative to the base it was inserted at. Calls
// may arrive concurrently from several vCPU threads: a device guards its own state.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual void Read(uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, absl::Span<const uint8_t> data) = 0;
};

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Maps [base, base+len) to `device`. Fails on len == 0, wrap-around or overlap.
  absl::Status Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len,
                      std::string label);
  // Dispatches an access; false when no device covers [addr, addr+size).
  bool Read(uint64_t addr, absl::Span<uint8_t> data) const;
  bool Write(uint64_t addr, absl::Span<const uint8_t> data) const;

 private:
  struct Entry {
    uint64_t len;
    std::shared_ptr<BusDevice> device;
    std::string label;
  };
  // Entry covering the whole access [addr, addr+size), or nullptr; sets *base.
  const Entry* Find(uint64_t addr, uint64_t size, uint64_t* base) const;

  std::string name_;
  mutable std::shared_mutex mu_;
  std::map<uint64_t, Entry> ranges_;  // keyed by base
};

}  // namespace vessel

#endif  // VESSEL_VMM_BUS_BUS_H_
