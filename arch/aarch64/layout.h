// The aarch64 guest-physical memory map vessel builds. One place for every fixed address.
//
//   0x0800_0000  GIC distributor (64 KiB)
//   0x0801_0000  GICv2 CPU interface (8 KiB)           [GICv2 only]
//   0x080a_0000  GICv3 redistributors, 128 KiB per vCPU, up to 0x0900_0000 (123 vCPUs)
//   0x0900_0000  16550 UART (4 KiB window, 8 byte-wide registers), SPI 1
//   0x0a00_0000  virtio-mmio windows, 4 KiB each, SPIs 16..
//   0x4000_0000  RAM (kernel at the start, DTB in the last 2 MiB, initrd just below it)
// Everything below RAM is MMIO: a guest access there exits to the VMM (or is served by the GIC).
#ifndef VESSEL_ARCH_AARCH64_LAYOUT_H_
#define VESSEL_ARCH_AARCH64_LAYOUT_H_

#include <cstdint>

namespace vessel::aarch64 {

inline constexpr uint64_t kGicDistBase = 0x08000000;
inline constexpr uint64_t kGicDistSize = 0x10000;
inline constexpr uint64_t kGicV2CpuBase = 0x08010000;
inline constexpr uint64_t kGicV2CpuSize = 0x2000;
inline constexpr uint64_t kGicV3RedistBase = 0x080a0000;
inline constexpr uint64_t kGicV3RedistSizePerCpu = 0x20000;  // RD_base + SGI_base frames
inline constexpr uint64_t kGicV3RedistLimit = 0x09000000;

inline constexpr uint64_t kUartBase = 0x09000000;
inline constexpr uint64_t kUartSize = 0x1000;
inline constexpr uint32_t kUartSpi = 1;
inline constexpr uint32_t kUartClockHz = 1843200;  // the classic 16550 crystal; baud = clk / 16 / div

inline constexpr uint64_t kVirtioMmioBase = 0x0a000000;
inline constexpr uint64_t kVirtioMmioWindowSize = 0x1000;
inline constexpr uint32_t kFirstVirtioSpi = 16;
inline constexpr uint32_t kMaxVirtioDevices = 32;  // SPIs 16..47, windows up to 0x0a02_0000

inline constexpr uint64_t kRamBase = 0x40000000;
// KVM's default IPA space is 40 bits: RAM must end at or below 1 TiB.
inline constexpr uint64_t kMaxRamEnd = 1ull << 40;
// Documentation/arm64/booting.rst: the DTB is at most 2 MiB, 8-byte aligned, in a 2 MiB block of
// its own; the kernel's base is 2 MiB aligned.
inline constexpr uint64_t kFdtMaxSize = 2ull << 20;
inline constexpr uint64_t kKernelAlign = 2ull << 20;

// GICv3 with 1020 interrupt IDs minus the 32 private ones gives 988 SPIs; vessel asks the GIC for
// 128 (SPI 0..95 usable) which covers the UART and every virtio window.
inline constexpr uint32_t kGicNrIrqs = 128;
inline constexpr uint32_t kGicSpiBase = 32;  // interrupt ID of SPI 0

// GICv2 addresses at most 8 CPUs; GICv3's redistributor region above fits 123.
inline constexpr uint32_t kMaxVcpusGicV2 = 8;
inline constexpr uint32_t kMaxVcpus =
    static_cast<uint32_t>((kGicV3RedistLimit - kGicV3RedistBase) / kGicV3RedistSizePerCpu);
static_assert(kMaxVcpus == 123);
static_assert(kVirtioMmioBase + kMaxVirtioDevices * kVirtioMmioWindowSize <= kRamBase);
static_assert(kFirstVirtioSpi + kMaxVirtioDevices <= kGicNrIrqs - kGicSpiBase);

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_LAYOUT_H_
