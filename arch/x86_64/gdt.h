// GDT descriptors for the boot GDT and their translation into KVM segment registers.
#ifndef VESSEL_ARCH_X86_64_GDT_H_
#define VESSEL_ARCH_X86_64_GDT_H_

#include <linux/kvm.h>

#include <array>
#include <cstdint>

namespace vessel::x86 {

// Encodes a descriptor. `flags` packs access byte (bits 0-7) and G/DB/L/AVL (bits 12-15).
uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit);
// Decodes a descriptor into the form KVM_SET_SREGS wants, selector = index * 8.
kvm_segment SegmentFromGdt(uint64_t entry, uint8_t index);

// The boot GDT, laid out as the 64-bit boot protocol asks: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
inline constexpr uint8_t kBootCodeIndex = 2;
inline constexpr uint8_t kBootDataIndex = 3;
inline constexpr uint8_t kBootTssIndex = 4;
std::array<uint64_t, 5> BootGdt();

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_GDT_H_
