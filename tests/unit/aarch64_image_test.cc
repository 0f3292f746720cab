#include "arch/aarch64/image.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "arch/aarch64/boot_layout.h"
#include "arch/aarch64/layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel::aarch64 {
namespace {

using ::testing::HasSubstr;
constexpr uint64_t kMiB = 1ull << 20;

void PutLe(std::vector<uint8_t>& b, size_t off, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

// An arm64 Image of `file_size` bytes whose header says the given fields.
std::vector<uint8_t> MakeImage(uint64_t text_offset, uint64_t image_size, uint64_t flags,
                               size_t file_size, uint32_t magic = kImageMagic) {
  std::vector<uint8_t> b(file_size, 0);
  for (size_t i = kImageHeaderSize; i < file_size; ++i) b[i] = static_cast<uint8_t>(i * 7);
  if (file_size < kImageHeaderSize) return b;
  PutLe(b, 0, 0x14000010, 4);  // b #0x40 (what real kernels start with, no EFI stub)
  PutLe(b, 8, text_offset, 8);
  PutLe(b, 16, image_size, 8);
  PutLe(b, 24, flags, 8);
  PutLe(b, kImageMagicOffset, magic, 4);
  return b;
}

TEST(Arm64ImageTest, ParsesAModernKernelHeader) {
  // Linux >= 5.8: text_offset 0, 4 KiB pages, placeable anywhere (flags 0b1010).
  std::vector<uint8_t> img = MakeImage(0, 24 * kMiB, 0xa, 20 * kMiB);
  absl::StatusOr<ImageHeader> h = ParseImageHeader(img);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->text_offset, 0u);
  EXPECT_EQ(h->image_size, 24 * kMiB);
  EXPECT_EQ(h->page_size_kib, 4u);
  EXPECT_TRUE(h->physical_anywhere);
}

TEST(Arm64ImageTest, ParsesAnOlderTextOffsetAndPageSizes) {
  absl::StatusOr<ImageHeader> h = ParseImageHeader(MakeImage(0x80000, 8 * kMiB, 0x6, 4096));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->text_offset, 0x80000u);
  EXPECT_EQ(h->page_size_kib, 64u);
  EXPECT_FALSE(h->physical_anywhere);
  EXPECT_EQ(ParseImageHeader(MakeImage(0, kMiB, 0x4, 4096))->page_size_kib, 16u);
  EXPECT_EQ(ParseImageHeader(MakeImage(0, kMiB, 0x0, 4096))->page_size_kib, 0u);
}

TEST(Arm64ImageTest, RejectsTruncatedFiles) {
  for (size_t size : {0, 1, 56, 63}) {
    absl::StatusOr<ImageHeader> h = ParseImageHeader(MakeImage(0, kMiB, 0, size));
    ASSERT_FALSE(h.ok()) << size;
    EXPECT_THAT(h.status().message(), HasSubstr("truncated")) << size;
  }
}

TEST(Arm64ImageTest, RejectsBadMagic) {
  std::vector<uint8_t> gz = MakeImage(0, kMiB, 0, 4096, 0x00088b1f);
  absl::StatusOr<ImageHeader> h = ParseImageHeader(gz);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(h.status().message(), HasSubstr("not an arm64 Image"));
  EXPECT_THAT(h.status().message(), HasSubstr("Image.gz"));
  // "ARM\x64" one byte off.
  EXPECT_FALSE(ParseImageHeader(MakeImage(0, kMiB, 0, 4096, kImageMagic ^ 1)).ok());
}

TEST(Arm64ImageTest, RejectsAbsurdSizes) {
  EXPECT_THAT(ParseImageHeader(MakeImage(0, 0, 0, 4096)).status().message(), HasSubstr("image_size 0"));
  EXPECT_THAT(ParseImageHeader(MakeImage(0, kMaxImageSize + 1, 0, 4096)).status().message(),
              HasSubstr("above the 512 MiB"));
  EXPECT_THAT(ParseImageHeader(MakeImage(0, ~0ull, 0, 4096)).status().message(),
              HasSubstr("above the 512 MiB"));
  // The effective size covers at least the file.
  EXPECT_THAT(ParseImageHeader(MakeImage(0, 4096, 0, 8192)).status().message(),
              HasSubstr("but the file is"));
}

TEST(Arm64ImageTest, RejectsMisalignedOrHugeTextOffset) {
  for (uint64_t off : std::vector<uint64_t>{0x1, 0x80010, 0xfff, 2 * kMiB, 0x7fff000000000000}) {
    absl::StatusOr<ImageHeader> h = ParseImageHeader(MakeImage(off, 8 * kMiB, 0, 4096));
    ASSERT_FALSE(h.ok()) << off;
    EXPECT_THAT(h.status().message(), HasSubstr("text_offset")) << off;
  }
}

TEST(Arm64ImageTest, RejectsBigEndianAndReservedFlags) {
  EXPECT_THAT(ParseImageHeader(MakeImage(0, kMiB, 0x1, 4096)).status().message(), HasSubstr("big-endian"));
  EXPECT_THAT(ParseImageHeader(MakeImage(0, kMiB, 0x10, 4096)).status().message(), HasSubstr("reserved"));
  EXPECT_THAT(ParseImageHeader(MakeImage(0, kMiB, 1ull << 63, 4096)).status().message(), HasSubstr("reserved"));
}

// ---- Placement ----

ImageHeader Header(uint64_t text_offset, uint64_t image_size) {
  ImageHeader h;
  h.text_offset = text_offset;
  h.image_size = image_size;
  return h;
}

TEST(Arm64PlaceBootTest, KernelAtBaseDtbInLastBlockInitrdBelowIt) {
  absl::StatusOr<BootLayout> l = PlaceBoot(Header(0x80000, 30 * kMiB), kRamBase, 128 * kMiB, 5 * kMiB + 123);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->kernel_addr, kRamBase + 0x80000);
  EXPECT_EQ(l->kernel_end, kRamBase + 0x80000 + 30 * kMiB);
  EXPECT_EQ(l->fdt_addr, kRamBase + 126 * kMiB);
  EXPECT_EQ(l->fdt_addr % (2 * kMiB), 0u);
  EXPECT_EQ(l->initrd_addr % 4096, 0u);
  EXPECT_EQ(l->initrd_size, 5 * kMiB + 123);
  EXPECT_LE(l->initrd_addr + l->initrd_size, l->fdt_addr);
  EXPECT_GE(l->initrd_addr, l->kernel_end);
  EXPECT_GT(l->initrd_addr + 4096 + l->initrd_size, l->fdt_addr);  // as high as it goes
}

TEST(Arm64PlaceBootTest, OddRamSizeKeepsTheDtbBlockAlignedAndInside) {
  absl::StatusOr<BootLayout> l = PlaceBoot(Header(0, 10 * kMiB), kRamBase, 129 * kMiB, 0);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->fdt_addr, kRamBase + 126 * kMiB);
  EXPECT_LE(l->fdt_addr + kFdtMaxSize, kRamBase + 129 * kMiB);
  EXPECT_EQ(l->initrd_addr, 0u);
  EXPECT_EQ(l->initrd_size, 0u);
}

TEST(Arm64PlaceBootTest, RejectsRamTooSmallForTheKernelAndDtb) {
  absl::StatusOr<BootLayout> l = PlaceBoot(Header(0, 31 * kMiB), kRamBase, 32 * kMiB, 0);
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(l.status().message(), HasSubstr("raise --mem-mib"));
  EXPECT_FALSE(PlaceBoot(Header(0, 1 * kMiB), kRamBase, 1 * kMiB, 0).ok());
  EXPECT_FALSE(PlaceBoot(Header(0, 1 * kMiB), kRamBase, 0, 0).ok());
  // Exactly enough: kernel up to the DTB block.
  EXPECT_TRUE(PlaceBoot(Header(0, 30 * kMiB), kRamBase, 32 * kMiB, 0).ok());
}

TEST(Arm64PlaceBootTest, RejectsAnInitrdOverlappingTheKernel) {
  // 64 MiB RAM, 30 MiB kernel, DTB at 62 MiB: 32 MiB free.
  EXPECT_TRUE(PlaceBoot(Header(0, 30 * kMiB), kRamBase, 64 * kMiB, 32 * kMiB).ok());
  absl::StatusOr<BootLayout> l = PlaceBoot(Header(0, 30 * kMiB), kRamBase, 64 * kMiB, 32 * kMiB + 1);
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(l.status().message(), HasSubstr("initrd"));
  EXPECT_THAT(l.status().message(), HasSubstr("raise --mem-mib"));
  // Page alignment pushing it into the kernel is caught too.
  EXPECT_FALSE(PlaceBoot(Header(0, 30 * kMiB + 1), kRamBase, 64 * kMiB, 32 * kMiB - 4095).ok());
  EXPECT_FALSE(PlaceBoot(Header(0, 30 * kMiB), kRamBase, 64 * kMiB, ~0ull).ok());
}

TEST(Arm64PlaceBootTest, RejectsMisalignedBaseAndRamBeyondTheIpaSpace) {
  EXPECT_THAT(PlaceBoot(Header(0, kMiB), kRamBase + 4096, 64 * kMiB, 0).status().message(),
              HasSubstr("2 MiB aligned"));
  EXPECT_THAT(PlaceBoot(Header(0, kMiB), kRamBase, kMaxRamEnd, 0).status().message(),
              HasSubstr("40-bit"));
}

}  // namespace
}  // namespace vessel::aarch64
