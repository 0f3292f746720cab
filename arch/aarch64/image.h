// The arm64 kernel `Image` header (Documentation/arm64/booting.rst): a 64-byte little-endian header
// at the start of the uncompressed Image. Parsing is pure and checks every field against the file;
// a malformed, truncated or absurd header fails with a message naming the field, never a crash.
#ifndef VESSEL_ARCH_AARCH64_IMAGE_H_
#define VESSEL_ARCH_AARCH64_IMAGE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vessel::aarch64 {

inline constexpr uint64_t kImageHeaderSize = 64;
inline constexpr uint64_t kImageMagicOffset = 0x38;
inline constexpr uint32_t kImageMagic = 0x644d5241;  // "ARM\x64", little endian
// Largest effective image (text + data + bss) vessel accepts.
inline constexpr uint64_t kMaxImageSize = 512ull << 20;

struct ImageHeader {
  uint64_t text_offset = 0;  // load offset from a 2 MiB-aligned base
  uint64_t image_size = 0;   // bytes the kernel occupies from its load address, bss included
  uint64_t flags = 0;
  uint32_t page_size_kib = 0;      // flags bits 1-2: 0 unspecified, else 4, 16 or 64
  bool physical_anywhere = false;  // flags bit 3: base may be anywhere in RAM
};

// Parses and validates the header of `file` (the whole Image). Rejects: files shorter than the
// header, a wrong magic (e.g. a compressed vmlinuz or an x86 kernel), image_size 0 (pre-3.17
// kernels), image_size smaller than the file or above kMaxImageSize, a text_offset that is not
// 4 KiB-aligned or not below 2 MiB, big-endian kernels, and reserved flag bits.
absl::StatusOr<ImageHeader> ParseImageHeader(absl::Span<const uint8_t> file);

}  // namespace vessel::aarch64

#endif  // VESSEL_ARCH_AARCH64_IMAGE_H_
