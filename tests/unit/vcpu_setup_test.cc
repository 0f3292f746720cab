#include "arch/x86_64/vcpu_setup.h"

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "arch/x86_64/gdt.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/page_tables.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferSce = 1ull << 0;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr size_t kLvt0 = 0x350;
constexpr size_t kLvt1 = 0x360;

uint32_t GetReg(const kvm_lapic_state& s, size_t off) {
  uint32_t v;
  std::memcpy(&v, s.regs + off, sizeof(v));
  return v;
}
void SetReg(kvm_lapic_state& s, size_t off, uint32_t v) {
  std::memcpy(s.regs + off, &v, sizeof(v));
}

kvm_sregs ResetSregs() {
  kvm_sregs s = {};
  s.cr0 = 0x60000010;  // CD | NW | ET, as after reset
  s.cr4 = 1ull << 7;   // PGE, to check it is kept
  s.efer = kEferSce;
  s.apic_base = 0xfee00900;
  return s;
}

TEST(LongModeSregsTest, ControlRegisters) {
  const kvm_sregs s = LongModeSregs(ResetSregs());
  EXPECT_EQ(s.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe | kCr0Pg);
  EXPECT_EQ(s.cr0 & 0x60000010u, 0x60000010u);  // existing bits kept
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_EQ(s.cr4 & kCr4Pae, kCr4Pae);
  EXPECT_EQ(s.cr4 & (1ull << 7), 1ull << 7);
  EXPECT_EQ(s.efer, kEferSce | kEferLme | kEferLma);
  EXPECT_EQ(s.apic_base, 0xfee00900u);
}

TEST(LongModeSregsTest, CodeSegment) {
  const kvm_sregs s = LongModeSregs(ResetSregs());
  EXPECT_EQ(s.cs.selector, 0x10);
  EXPECT_EQ(s.cs.l, 1);
  EXPECT_EQ(s.cs.db, 0);
  EXPECT_EQ(s.cs.present, 1);
  EXPECT_EQ(s.cs.s, 1);
  EXPECT_EQ(s.cs.type, 0xb);
  EXPECT_EQ(s.cs.dpl, 0);
  EXPECT_EQ(s.cs.base, 0u);
  EXPECT_EQ(s.cs.limit, 0xffffffffu);
}

TEST(LongModeSregsTest, DataSegments) {
  const kvm_sregs s = LongModeSregs(ResetSregs());
  for (const kvm_segment& seg : {s.ds, s.es, s.fs, s.gs, s.ss}) {
    EXPECT_EQ(seg.selector, 0x18);
    EXPECT_EQ(seg.type, 0x3);
    EXPECT_EQ(seg.present, 1);
    EXPECT_EQ(seg.s, 1);
    EXPECT_EQ(seg.db, 1);
    EXPECT_EQ(seg.l, 0);
    EXPECT_EQ(seg.base, 0u);
    EXPECT_EQ(seg.limit, 0xffffffffu);
  }
  EXPECT_EQ(s.tr.selector, 0x20);
  EXPECT_EQ(s.tr.type, 0xb);
  EXPECT_EQ(s.tr.s, 0);
}

TEST(LongModeSregsTest, DescriptorTables) {
  const kvm_sregs s = LongModeSregs(ResetSregs());
  EXPECT_EQ(s.gdt.base, kGdtAddr);
  EXPECT_EQ(s.gdt.limit, sizeof(BootGdt()) - 1);
  EXPECT_EQ(s.gdt.limit, 5 * 8 - 1);
  EXPECT_EQ(s.idt.base, kIdtAddr);
  EXPECT_EQ(s.idt.limit, 7);
}

// The boot GDT (5 descriptors, 0x500-0x527) must not share bytes with the IDT at kIdtAddr.
// Fails today: kIdtAddr is 0x520, inside the GDT (see WritesWholeGdt).
TEST(LongModeSregsTest, GdtAndIdtDoNotOverlap) {
  const kvm_sregs s = LongModeSregs(ResetSregs());
  const uint64_t gdt_end = s.gdt.base + s.gdt.limit + 1;
  const uint64_t idt_end = s.idt.base + s.idt.limit + 1;
  EXPECT_TRUE(gdt_end <= s.idt.base || idt_end <= s.gdt.base)
      << std::hex << "GDT [0x" << s.gdt.base << ", 0x" << gdt_end << ") IDT [0x" << s.idt.base
      << ", 0x" << idt_end << ")";
}

TEST(WithLintPinsTest, SetsDeliveryModesAndKeepsOtherBits) {
  kvm_lapic_state in;
  for (size_t i = 0; i < sizeof(in.regs); ++i) in.regs[i] = static_cast<char>(i * 13);
  SetReg(in, kLvt0, 0x00010500);  // masked, delivery mode bits set to something else
  SetReg(in, kLvt1, 0x0001a3ff);
  const kvm_lapic_state out = WithLintPins(in);
  EXPECT_EQ(GetReg(out, kLvt0), 0x00010700u);  // ExtINT
  EXPECT_EQ(GetReg(out, kLvt1), 0x0001a4ffu);  // NMI
  EXPECT_EQ((GetReg(out, kLvt0) >> 8) & 7, 7u);
  EXPECT_EQ((GetReg(out, kLvt1) >> 8) & 7, 4u);
  for (size_t i = 0; i < sizeof(in.regs); ++i) {
    if ((i >= kLvt0 && i < kLvt0 + 4) || (i >= kLvt1 && i < kLvt1 + 4)) continue;
    ASSERT_EQ(out.regs[i], in.regs[i]) << std::hex << i;
  }
}

TEST(WithLintPinsTest, FromZero) {
  kvm_lapic_state in = {};
  const kvm_lapic_state out = WithLintPins(in);
  EXPECT_EQ(GetReg(out, kLvt0), 7u << 8);
  EXPECT_EQ(GetReg(out, kLvt1), 4u << 8);
}

GuestMemory DirtyMemory() {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}});
  if (!mem.ok() || !mem->Fill(0, 0xee, 0x10000).ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

TEST(WriteBootStructuresTest, WritesIdtAndPageTables) {
  GuestMemory mem = DirtyMemory();
  ASSERT_TRUE(WriteBootStructures(mem).ok());
  EXPECT_EQ(*mem.ReadObj<uint64_t>(kIdtAddr), 0u);
  EXPECT_EQ(*mem.ReadObj<uint64_t>(kPml4Addr), (kPml4Addr + 0x1000) | kPtePresent | kPteWritable);
  // Last entry of the last PD maps the 2 MiB page just below 4 GiB.
  EXPECT_EQ(*mem.ReadObj<uint64_t>(kPml4Addr + 0x5000 + 511 * 8),
            0xffe00000ull | kPtePresent | kPteWritable | kPteLarge);
  // Nothing around them written.
  EXPECT_EQ(*mem.ReadObj<uint8_t>(kGdtAddr - 1), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(kIdtAddr + 8), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(kPml4Addr - 1), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(kPml4Addr + 0x6000), 0xee);
}

TEST(WriteBootStructuresTest, WritesGdtAtGdtAddr) {
  GuestMemory mem = DirtyMemory();
  ASSERT_TRUE(WriteBootStructures(mem).ok());
  const auto gdt = BootGdt();
  for (size_t i = 0; i < kBootTssIndex; ++i) {
    EXPECT_EQ(*mem.ReadObj<uint64_t>(kGdtAddr + 8 * i), gdt[i]) << i;
  }
}

// The guest's GDT in memory holds every descriptor the vCPU's segment registers were loaded from,
// including the TSS descriptor at 0x20. Fails today: the 8-byte IDT written at kIdtAddr (0x520)
// overwrites GDT[4] (0x520-0x527) with zeros.
TEST(WriteBootStructuresTest, WritesWholeGdt) {
  GuestMemory mem = DirtyMemory();
  ASSERT_TRUE(WriteBootStructures(mem).ok());
  const auto gdt = BootGdt();
  absl::StatusOr<std::array<uint64_t, 5>> got = mem.ReadObj<std::array<uint64_t, 5>>(kGdtAddr);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[kBootTssIndex], gdt[kBootTssIndex]);
}

TEST(WriteBootStructuresTest, FailsWithoutRoomForPageTables) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 0xa000}});
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(WriteBootStructures(*mem).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace vessel::x86
