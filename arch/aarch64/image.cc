#include "arch/aarch64/image.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "arch/aarch64/layout.h"

namespace vessel::aarch64 {
namespace {

uint64_t Le64(absl::Span<const uint8_t> b, size_t off) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}
uint32_t Le32(absl::Span<const uint8_t> b, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | b[off + i];
  return v;
}

constexpr uint64_t kFlagBigEndian = 1ull << 0;
constexpr uint64_t kFlagPageSizeMask = 3ull << 1;
constexpr uint64_t kFlagPhysAnywhere = 1ull << 3;
constexpr uint64_t kKnownFlags = kFlagBigEndian | kFlagPageSizeMask | kFlagPhysAnywhere;

}  // namespace

absl::StatusOr<ImageHeader> ParseImageHeader(absl::Span<const uint8_t> file) {
  if (file.size() < kImageHeaderSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arm64 Image truncated: %d bytes, the header alone is %d; pass the kernel's "
        "arch/arm64/boot/Image",
        file.size(), kImageHeaderSize));
  }
  const uint32_t magic = Le32(file, kImageMagicOffset);
  if (magic != kImageMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not an arm64 Image: magic at 0x38 is %#x, expected %#x (\"ARM\\x64\"); pass the "
        "uncompressed arch/arm64/boot/Image, not Image.gz, vmlinuz or an x86 kernel",
        magic, kImageMagic));
  }
  ImageHeader h;
  h.text_offset = Le64(file, 8);
  h.image_size = Le64(file, 16);
  h.flags = Le64(file, 24);
  if (h.image_size == 0) {
    return absl::InvalidArgumentError(
        "arm64 Image has image_size 0 (a kernel older than 3.17); vessel needs the effective size: "
        "use a newer kernel");
  }
  if (h.image_size > kMaxImageSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arm64 Image claims image_size %#x, above the %d MiB vessel accepts; the header is corrupt",
        h.image_size, kMaxImageSize >> 20));
  }
  if (h.image_size < file.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arm64 Image claims image_size %#x but the file is %#x bytes; the header is corrupt or "
        "the file has trailing data",
        h.image_size, file.size()));
  }
  if (h.text_offset % 4096 != 0 || h.text_offset >= kKernelAlign) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arm64 Image text_offset %#x is not a 4 KiB-aligned offset below 2 MiB; the header is "
        "corrupt",
        h.text_offset));
  }
  if (h.flags & kFlagBigEndian) {
    return absl::InvalidArgumentError(
        "arm64 Image is a big-endian kernel; vessel boots little-endian kernels only "
        "(CONFIG_CPU_BIG_ENDIAN=n)");
  }
  if (h.flags & ~kKnownFlags) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "arm64 Image flags %#x set reserved bits (%#x); the header is corrupt", h.flags,
        h.flags & ~kKnownFlags));
  }
  static constexpr uint32_t kPageSizes[] = {0, 4, 16, 64};
  h.page_size_kib = kPageSizes[(h.flags & kFlagPageSizeMask) >> 1];
  h.physical_anywhere = (h.flags & kFlagPhysAnywhere) != 0;
  return h;
}

}  // namespace vessel::aarch64
