#include "arch/x86_64/gdt.h"

namespace vessel::x86 {

uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t(base) & 0xff000000ull) << 32) | ((uint64_t(flags) & 0x0000f0ffull) << 40) |
         ((uint64_t(limit) & 0x000f0000ull) << 32) | ((uint64_t(base) & 0x00ffffffull) << 16) |
         (uint64_t(limit) & 0x0000ffffull);
}

kvm_segment SegmentFromGdt(uint64_t entry, uint8_t index) {
  kvm_segment seg = {};
  seg.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
  uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | (((entry >> 48) & 0xf) << 16));
  seg.g = (entry >> 55) & 1;
  seg.limit = seg.g ? (limit << 12) | 0xfff : limit;
  seg.selector = static_cast<uint16_t>(index * 8);
  seg.type = (entry >> 40) & 0xf;
  seg.s = (entry >> 44) & 1;
  seg.dpl = (entry >> 45) & 3;
  seg.present = (entry >> 47) & 1;
  seg.avl = (entry >> 52) & 1;
  seg.l = (entry >> 53) & 1;
  seg.db = (entry >> 54) & 1;
  seg.unusable = seg.present ? 0 : 1;
  return seg;
}

std::array<uint64_t, 5> BootGdt() {
  return {
      0,                               // null
      0,                               // unused (0x08)
      GdtEntry(0xa09b, 0, 0xfffff),    // 0x10: 64-bit code, present, DPL 0
      GdtEntry(0xc093, 0, 0xfffff),    // 0x18: data, read/write
      GdtEntry(0x808b, 0, 0xfffff),    // 0x20: TSS (busy 64-bit)
  };
}

}  // namespace vessel::x86
