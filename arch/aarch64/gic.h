// The guest's interrupt controller: GICv3 (distributor + one redistributor frame pair per vCPU) or
// GICv2 (distributor + CPU interface), at the addresses of layout.h. Pure: the regions KVM is told
// (KVM_DEV_ARM_VGIC_GRP_ADDR) and the device tree describes come from here, so they cannot differ.
#ifndef VESSEL_ARCH_AARCH64_GIC_H_
#define VESSEL_ARCH_AARCH64_GIC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vessel::aarch64 {

enum class GicVersion { kV2, kV3 };
absl::string_view GicName(GicVersion version);

struct MmioRegion {
  uint64_t base = 0;
  uint64_t size = 0;
};

struct GicLayout {
  GicVersion version = GicVersion::kV3;
  MmioRegion distributor;
  // GICv3: the redistributor region (vcpus * 128 KiB); GICv2: the CPU interface.
  MmioRegion cpu;
};

// Fails when `vcpus` is 0 or more than the version addresses (GICv2: 8, GICv3: 123).
absl::StatusOr<GicLayout> GicLayoutFor(GicVersion version, uint32_t vcpus);

// Device-tree interrupt specifiers (#interrupt-cells = 3): <type number flags>.
inline constexpr uint32_t kFdtGicSpi = 0;
inline constexpr uint32_t kFdtGicPpi = 1;
inline constexpr uint32_t kIrqTypeEdgeRising = 1;
inline constexpr uint32_t kIrqTypeLevelHigh = 4;
// Arch timer PPIs (booting.rst / arm,armv8-timer): secure phys, non-secure phys, virtual, hyp.
inline constexpr uint32_t kTimerPpis[4] = {13, 14, 11, 10};

// Flags cell for the timer PPIs: level-high, plus on GICv2 the mask of CPUs the PPI targets.
uint32_t TimerPpiFlags(GicVersion version, uint32_t vcpus);

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_GIC_H_
