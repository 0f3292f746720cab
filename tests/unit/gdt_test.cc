#include "arch/x86_64/gdt.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace vessel::x86 {
namespace {

TEST(GdtEntryTest, BootDescriptors) {
  EXPECT_EQ(GdtEntry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffull);  // 64-bit code
  EXPECT_EQ(GdtEntry(0xc093, 0, 0xfffff), 0x00cf93000000ffffull);  // data
  EXPECT_EQ(GdtEntry(0x808b, 0, 0xfffff), 0x008f8b000000ffffull);  // TSS
}

TEST(GdtEntryTest, BaseAndLimitSplitAcrossDescriptor) {
  // base 0x12345678: bits 0-23 at 16-39, bits 24-31 at 56-63; limit 0xabcde: 0-15 at 0-15,
  // 16-19 at 48-51.
  EXPECT_EQ(GdtEntry(0x0093, 0x12345678, 0xabcde), 0x120a93345678bcdeull);
  // Bits outside the fields are dropped.
  EXPECT_EQ(GdtEntry(0x0f00, 0, 0), 0u);
  EXPECT_EQ(GdtEntry(0, 0, 0xfff00000), 0u);
}

TEST(GdtEntryTest, BootGdtLayout) {
  const auto gdt = BootGdt();
  EXPECT_EQ(gdt[0], 0u);
  EXPECT_EQ(gdt[1], 0u);
  EXPECT_EQ(gdt[kBootCodeIndex], 0x00af9b000000ffffull);
  EXPECT_EQ(gdt[kBootDataIndex], 0x00cf93000000ffffull);
  EXPECT_EQ(gdt[kBootTssIndex], 0x008f8b000000ffffull);
  EXPECT_EQ(kBootCodeIndex * 8, 0x10);  // __BOOT_CS
  EXPECT_EQ(kBootDataIndex * 8, 0x18);  // __BOOT_DS
}

TEST(SegmentFromGdtTest, CodeSegment) {
  const kvm_segment s = SegmentFromGdt(0x00af9b000000ffffull, 2);
  EXPECT_EQ(s.base, 0u);
  EXPECT_EQ(s.limit, 0xffffffffu);
  EXPECT_EQ(s.selector, 0x10);
  EXPECT_EQ(s.type, 0xb);
  EXPECT_EQ(s.s, 1);
  EXPECT_EQ(s.dpl, 0);
  EXPECT_EQ(s.present, 1);
  EXPECT_EQ(s.avl, 0);
  EXPECT_EQ(s.l, 1);
  EXPECT_EQ(s.db, 0);
  EXPECT_EQ(s.g, 1);
  EXPECT_EQ(s.unusable, 0);
}

TEST(SegmentFromGdtTest, DataSegment) {
  const kvm_segment s = SegmentFromGdt(0x00cf93000000ffffull, 3);
  EXPECT_EQ(s.limit, 0xffffffffu);
  EXPECT_EQ(s.selector, 0x18);
  EXPECT_EQ(s.type, 0x3);
  EXPECT_EQ(s.s, 1);
  EXPECT_EQ(s.l, 0);
  EXPECT_EQ(s.db, 1);
  EXPECT_EQ(s.g, 1);
  EXPECT_EQ(s.present, 1);
}

TEST(SegmentFromGdtTest, TssSegment) {
  const kvm_segment s = SegmentFromGdt(0x008f8b000000ffffull, 4);
  EXPECT_EQ(s.selector, 0x20);
  EXPECT_EQ(s.type, 0xb);  // busy 64-bit TSS
  EXPECT_EQ(s.s, 0);       // system segment
  EXPECT_EQ(s.present, 1);
  EXPECT_EQ(s.g, 1);
  EXPECT_EQ(s.limit, 0xffffffffu);
}

TEST(SegmentFromGdtTest, ByteGranularLimitAndBaseAndDpl) {
  // Base 0x12345678, limit 0xabcde (G=0), DPL 3, AVL set, not present.
  const uint64_t entry = GdtEntry(0x10f3, 0x12345678, 0xabcde) & ~(1ull << 47);
  const kvm_segment s = SegmentFromGdt(entry, 7);
  EXPECT_EQ(s.base, 0x12345678u);
  EXPECT_EQ(s.limit, 0xabcdeu);
  EXPECT_EQ(s.g, 0);
  EXPECT_EQ(s.dpl, 3);
  EXPECT_EQ(s.type, 0x3);
  EXPECT_EQ(s.avl, 1);
  EXPECT_EQ(s.present, 0);
  EXPECT_EQ(s.unusable, 1);
  EXPECT_EQ(s.selector, 0x38);
}

TEST(SegmentFromGdtTest, PageGranularLimitExpanded) {
  const kvm_segment s = SegmentFromGdt(GdtEntry(0x8093, 0, 0x00001), 3);
  EXPECT_EQ(s.limit, 0x1fffu);
}

TEST(SegmentFromGdtTest, RoundTripsThroughGdtEntry) {
  for (uint16_t flags : {uint16_t{0xa09b}, uint16_t{0xc093}, uint16_t{0x808b}, uint16_t{0x40fb}}) {
    const kvm_segment s = SegmentFromGdt(GdtEntry(flags, 0xfedcba98, 0x54321), 5);
    EXPECT_EQ(s.base, 0xfedcba98u) << flags;
    EXPECT_EQ(s.type, flags & 0xf) << flags;
    EXPECT_EQ(s.s, (flags >> 4) & 1) << flags;
    EXPECT_EQ(s.dpl, (flags >> 5) & 3) << flags;
    EXPECT_EQ(s.present, (flags >> 7) & 1) << flags;
    EXPECT_EQ(s.l, (flags >> 13) & 1) << flags;
    EXPECT_EQ(s.db, (flags >> 14) & 1) << flags;
    EXPECT_EQ(s.g, (flags >> 15) & 1) << flags;
  }
}

}  // namespace
}  // namespace vessel::x86
