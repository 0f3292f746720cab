// The flattened device tree an aarch64 guest boots with, built with libfdt's sequential-write API:
//
//   / (compatible "linux,dummy-virt", #address-cells = #size-cells = 2, interrupt-parent = GIC)
//     cpus/cpu@N      one "arm,arm-v8" per vCPU, reg = its MPIDR, enable-method "psci"
//     psci            "arm,psci-0.2", method "hvc"
//     memory@...      RAM
//     chosen          bootargs, linux,initrd-start/-end, stdout-path
//     aliases         serial0
//     intc@...        GICv3 ("arm,gic-v3") or GICv2 ("arm,cortex-a15-gic"), phandle 1
//     timer           "arm,armv8-timer", PPIs 13, 14, 11, 10
//     uart@...        "ns16550a" (our UART is a 16550), level SPI
//     virtio_mmio@... one "virtio,mmio" per device: reg + edge SPI, dma-coherent
// Pure: bytes in, bytes out; the result never exceeds FdtConfig::max_size.
#ifndef VESSEL_ARCH_AARCH64_FDT_H_
#define VESSEL_ARCH_AARCH64_FDT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arch/aarch64/gic.h"
#include "arch/aarch64/layout.h"

namespace vessel::aarch64 {

inline constexpr uint32_t kGicPhandle = 1;

struct VirtioMmioNode {
  uint64_t base = 0;
  uint64_t size = kVirtioMmioWindowSize;
  uint32_t spi = 0;  // SPI number (interrupt ID - 32)
};

struct FdtConfig {
  uint32_t vcpus = 1;
  uint64_t ram_base = kRamBase;
  uint64_t ram_size = 0;
  std::string bootargs;
  uint64_t initrd_start = 0;  // with initrd_end: [start, end); both 0 without an initrd
  uint64_t initrd_end = 0;
  GicLayout gic;
  MmioRegion uart{kUartBase, 8};
  uint32_t uart_spi = kUartSpi;
  std::vector<VirtioMmioNode> virtio;
  size_t max_size = kFdtMaxSize;
};

// Node names, for the tests and the stdout-path.
std::string UartNodeName(uint64_t base);
std::string VirtioNodeName(uint64_t base);

// Fails when the config is inconsistent (no vCPUs, no RAM, initrd_end < initrd_start, a node
// overlapping RAM) or the tree would exceed max_size (ResourceExhausted, naming the cap).
absl::StatusOr<std::vector<uint8_t>> BuildFdt(const FdtConfig& config);

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_FDT_H_
