// Intel MultiProcessor Specification 1.4 tables: every vCPU, one ISA bus, the IOAPIC and its 24
// pins, LINT0 = ExtINT and LINT1 = NMI. Linux finds the floating pointer in the last KiB of base
// memory, which also spares it the slow scan of the BIOS area.
#ifndef VESSEL_ARCH_X86_64_MPTABLE_H_
#define VESSEL_ARCH_X86_64_MPTABLE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {

inline constexpr uint32_t kIoapicPins = 24;

// The table bytes: floating pointer (at fp_addr) and configuration table (at table_addr).
struct MpTableBytes {
  std::vector<uint8_t> floating_pointer;
  std::vector<uint8_t> config_table;
};
absl::StatusOr<MpTableBytes> BuildMpTable(uint32_t vcpu_count, uint64_t table_addr);
absl::Status WriteMpTable(GuestMemory& memory, uint32_t vcpu_count);

// Byte sum (mod 256) of `data`; a valid MP structure sums to 0.
uint8_t MpChecksum(const std::vector<uint8_t>& data);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_MPTABLE_H_
