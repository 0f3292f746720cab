// Where the kernel, initrd and DTB go in aarch64 guest RAM (Documentation/arm64/booting.rst):
// the Image at a 2 MiB-aligned base + text_offset (RAM's start), the DTB in the last 2 MiB-aligned
// 2 MiB block of RAM, the initrd page-aligned just below the DTB. Pure; every range is checked
// against RAM and against the others.
#ifndef VESSEL_ARCH_AARCH64_BOOT_LAYOUT_H_
#define VESSEL_ARCH_AARCH64_BOOT_LAYOUT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "arch/aarch64/image.h"

namespace vessel::aarch64 {

struct BootLayout {
  uint64_t kernel_addr = 0;  // where the Image file is copied; also the entry point (PC)
  uint64_t kernel_end = 0;   // kernel_addr + image_size
  uint64_t initrd_addr = 0;  // 0 without an initrd
  uint64_t initrd_size = 0;
  uint64_t fdt_addr = 0;     // 2 MiB aligned; the DTB may use up to kFdtMaxSize bytes
};

// Fails (naming what does not fit and by how much, and that --mem-mib must grow) when RAM is too
// small for the kernel, the DTB block and the initrd without overlap, or when ram_base is not
// 2 MiB aligned.
absl::StatusOr<BootLayout> PlaceBoot(const ImageHeader& image, uint64_t ram_base,
                                     uint64_t ram_size, uint64_t initrd_size);

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_BOOT_LAYOUT_H_
