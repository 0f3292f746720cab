#include "arch/aarch64/boot_layout.h"

#include "absl/strings/str_format.h"
#include "arch/aarch64/layout.h"

namespace vessel::aarch64 {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t AlignDown(uint64_t v, uint64_t a) { return v & ~(a - 1); }
uint64_t MibUp(uint64_t bytes) { return (bytes + (1 << 20) - 1) >> 20; }

}  // namespace

absl::StatusOr<BootLayout> PlaceBoot(const ImageHeader& image, uint64_t ram_base,
                                     uint64_t ram_size, uint64_t initrd_size) {
  if (ram_base % kKernelAlign != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RAM base %#x is not 2 MiB aligned; the arm64 boot protocol needs it", ram_base));
  }
  if (ram_size > kMaxRamEnd - ram_base) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d MiB of RAM from %#x ends above the 40-bit guest-physical space; lower --mem-mib",
        ram_size >> 20, ram_base));
  }
  const uint64_t ram_end = ram_base + ram_size;
  BootLayout l;
  l.kernel_addr = ram_base + image.text_offset;
  l.kernel_end = l.kernel_addr + image.image_size;  // both bounded by ParseImageHeader: no wrap
  if (ram_end < kFdtMaxSize || AlignDown(ram_end - kFdtMaxSize, kKernelAlign) < l.kernel_end) {
    const uint64_t need = l.kernel_end - ram_base + 2 * kFdtMaxSize;
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d MiB of RAM cannot hold the kernel (%d MiB with its text_offset) and the 2 MiB device "
        "tree block above it; raise --mem-mib to at least %d",
        ram_size >> 20, MibUp(l.kernel_end - ram_base), MibUp(need)));
  }
  l.fdt_addr = AlignDown(ram_end - kFdtMaxSize, kKernelAlign);
  if (initrd_size > 0) {
    if (initrd_size > l.fdt_addr - l.kernel_end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the initrd (%d bytes) does not fit between the kernel (ends at %#x) and the device tree "
          "(at %#x): %d bytes free; raise --mem-mib by at least %d",
          initrd_size, l.kernel_end, l.fdt_addr, l.fdt_addr - l.kernel_end,
          MibUp(initrd_size - (l.fdt_addr - l.kernel_end)) + 2));
    }
    l.initrd_addr = AlignDown(l.fdt_addr - initrd_size, kPage);
    if (l.initrd_addr < l.kernel_end) {  // only when alignment pushed it down into the kernel
      return absl::InvalidArgumentError(absl::StrFormat(
          "the initrd (%d bytes) overlaps the kernel once page-aligned; raise --mem-mib by 2",
          initrd_size));
    }
    l.initrd_size = initrd_size;
  }
  return l;
}

}  // namespace vessel::aarch64
