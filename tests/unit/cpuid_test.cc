#include "arch/x86_64/cpuid.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace vessel::x86 {
namespace {

constexpr uint32_t kHypervisor = 1u << 31;  // leaf 1 ECX
constexpr uint32_t kHtt = 1u << 28;         // leaf 1 EDX
constexpr uint32_t kCmpLegacy = 1u << 1;    // leaf 0x80000001 ECX

kvm_cpuid_entry2 Leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                      uint32_t edx, uint32_t flags = 0) {
  kvm_cpuid_entry2 e = {};
  e.function = function;
  e.index = index;
  e.flags = flags;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

// Cache descriptor for leaf 4: type (1 data, 2 instruction, 3 unified) and level, with the
// host's sharing and core-count fields set to values the normalisation must replace.
uint32_t CacheEax(uint32_t level, uint32_t type) {
  return (0x3fu << 26) | (0xfffu << 14) | (1u << 8) | (level << 5) | type;
}

constexpr uint32_t kSigIndex = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

// A host with HTT and CmpLegacy clear, and topology leaves to be replaced.
std::vector<kvm_cpuid_entry2> Supported() {
  return {
      Leaf(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
      Leaf(0x1, 0, 0x000906ea, 0x12345678, 0x7ffafbff, 0x0febfbff),
      Leaf(0x4, 0, CacheEax(1, 1), 0x01c0003f, 0x3f, 0, kSigIndex),
      Leaf(0x4, 1, CacheEax(1, 2), 0x01c0003f, 0x3f, 0, kSigIndex),
      Leaf(0x4, 2, CacheEax(2, 3), 0x01c0003f, 0x3ff, 0, kSigIndex),
      Leaf(0x4, 3, CacheEax(3, 3), 0x03c0003f, 0x3fff, 0x6, kSigIndex),
      Leaf(0x7, 0, 0, 0xd19f4fbb, 0x1c000c, 0xbc000400, kSigIndex),
      Leaf(0xb, 0, 1, 2, 0x100, 0x33, kSigIndex),
      Leaf(0xb, 1, 4, 16, 0x201, 0x33, kSigIndex),
      Leaf(0x1f, 0, 1, 2, 0x100, 0x33, kSigIndex),
      Leaf(0x80000001, 0, 0, 0, 0x121, 0x2c100800),
      Leaf(0x80000008, 0, 0x3027, 0, 0x00037a17, 0),
      Leaf(0x8000001e, 0, 0x55, 0x0103, 0x0101, 0),
  };
}

std::optional<kvm_cpuid_entry2> Find(const std::vector<kvm_cpuid_entry2>& v, uint32_t function,
                                     uint32_t index = 0) {
  std::optional<kvm_cpuid_entry2> found;
  for (const kvm_cpuid_entry2& e : v) {
    if (e.function == function && e.index == index) {
      EXPECT_FALSE(found.has_value()) << "duplicate leaf " << std::hex << function << "." << index;
      found = e;
    }
  }
  return found;
}

size_t Count(const std::vector<kvm_cpuid_entry2>& v, uint32_t function) {
  size_t n = 0;
  for (const kvm_cpuid_entry2& e : v) n += e.function == function ? 1 : 0;
  return n;
}

TEST(BitsForTest, Values) {
  EXPECT_EQ(BitsFor(0), 0u);
  EXPECT_EQ(BitsFor(1), 0u);
  EXPECT_EQ(BitsFor(2), 1u);
  EXPECT_EQ(BitsFor(3), 2u);
  EXPECT_EQ(BitsFor(4), 2u);
  EXPECT_EQ(BitsFor(5), 3u);
  EXPECT_EQ(BitsFor(8), 3u);
  EXPECT_EQ(BitsFor(9), 4u);
  EXPECT_EQ(BitsFor(128), 7u);
  EXPECT_EQ(BitsFor(129), 8u);
}

TEST(NormalizeCpuidTest, Leaf1ReportsApicIdCountHttAndHypervisor) {
  const auto out = NormalizeCpuid(Supported(), 1, 4);
  const auto leaf1 = Find(out, 0x1);
  ASSERT_TRUE(leaf1.has_value());
  EXPECT_EQ(leaf1->ebx >> 24, 1u);            // initial APIC id
  EXPECT_EQ((leaf1->ebx >> 16) & 0xff, 4u);   // logical processors per package
  EXPECT_EQ((leaf1->ebx >> 8) & 0xff, 8u);    // CLFLUSH line size, 8-byte units
  EXPECT_EQ(leaf1->ebx & 0xff, 0x78u);        // brand index kept
  EXPECT_EQ(leaf1->edx & kHtt, kHtt);
  EXPECT_EQ(leaf1->edx & ~kHtt, 0x0febfbffu);  // other feature bits kept
  EXPECT_EQ(leaf1->ecx, 0x7ffafbffu | kHypervisor);
  EXPECT_EQ(leaf1->eax, 0x000906eau);
}

TEST(NormalizeCpuidTest, Leaf1ApicIdPerVcpu) {
  for (uint32_t id = 0; id < 8; ++id) {
    const auto leaf1 = Find(NormalizeCpuid(Supported(), id, 8), 0x1);
    ASSERT_TRUE(leaf1.has_value());
    EXPECT_EQ(leaf1->ebx >> 24, id);
  }
}

TEST(NormalizeCpuidTest, Leaf4CoresAndSharing) {
  const auto out = NormalizeCpuid(Supported(), 1, 4);
  for (uint32_t sub = 0; sub < 4; ++sub) {
    const auto leaf4 = Find(out, 0x4, sub);
    ASSERT_TRUE(leaf4.has_value()) << sub;
    const auto in = Find(Supported(), 0x4, sub);
    EXPECT_EQ(leaf4->eax & 0x3fff, in->eax & 0x3fff) << sub;  // type, level, flags kept
    EXPECT_EQ(leaf4->eax >> 26, 3u) << sub;                   // cores per package - 1
    const uint32_t level = (in->eax >> 5) & 7;
    // L3 is shared by the package; L1/L2 are per core (one thread each).
    EXPECT_EQ((leaf4->eax >> 14) & 0xfff, level >= 3 ? 3u : 0u) << sub;
    EXPECT_EQ(leaf4->ebx, in->ebx) << sub;
    EXPECT_EQ(leaf4->ecx, in->ecx) << sub;
    EXPECT_EQ(leaf4->edx, in->edx) << sub;
  }
}

TEST(NormalizeCpuidTest, LeafBRebuilt) {
  const auto out = NormalizeCpuid(Supported(), 1, 4);
  EXPECT_EQ(Count(out, 0xb), 3u);
  EXPECT_EQ(Count(out, 0x1f), 0u);
  const auto smt = Find(out, 0xb, 0);
  const auto core = Find(out, 0xb, 1);
  const auto end = Find(out, 0xb, 2);
  ASSERT_TRUE(smt && core && end);
  for (const auto& e : {*smt, *core, *end}) {
    EXPECT_EQ(e.edx, 1u) << e.index;  // x2APIC id
    EXPECT_TRUE(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) << e.index;
  }
  // SMT level: one thread per core.
  EXPECT_EQ(smt->eax, 0u);
  EXPECT_EQ(smt->ebx, 1u);
  EXPECT_EQ(smt->ecx, (1u << 8) | 0);
  // Core level: shift BitsFor(4) = 2, four logical processors.
  EXPECT_EQ(core->eax, 2u);
  EXPECT_EQ(core->ebx, 4u);
  EXPECT_EQ(core->ecx, (2u << 8) | 1);
  // Invalid level ends the enumeration.
  EXPECT_EQ(end->eax, 0u);
  EXPECT_EQ(end->ebx, 0u);
  EXPECT_EQ(end->ecx, 2u);
}

TEST(NormalizeCpuidTest, LeafBShiftFollowsVcpuCount) {
  const auto core = Find(NormalizeCpuid(Supported(), 4, 5), 0xb, 1);
  ASSERT_TRUE(core.has_value());
  EXPECT_EQ(core->eax, 3u);
  EXPECT_EQ(core->ebx, 5u);
  EXPECT_EQ(core->edx, 4u);
}

TEST(NormalizeCpuidTest, NoLeafBWhenHostHasNone) {
  std::vector<kvm_cpuid_entry2> supported;
  for (const auto& e : Supported()) {
    if (e.function != 0xb) supported.push_back(e);
  }
  const auto out = NormalizeCpuid(supported, 0, 2);
  EXPECT_EQ(Count(out, 0xb), 0u);
  EXPECT_EQ(Count(out, 0x1f), 0u);
}

TEST(NormalizeCpuidTest, AmdLeaves) {
  const auto out = NormalizeCpuid(Supported(), 1, 4);
  const auto ext1 = Find(out, 0x80000001);
  ASSERT_TRUE(ext1.has_value());
  EXPECT_EQ(ext1->ecx, 0x121u | kCmpLegacy);
  EXPECT_EQ(ext1->edx, 0x2c100800u);

  const auto ext8 = Find(out, 0x80000008);
  ASSERT_TRUE(ext8.has_value());
  EXPECT_EQ(ext8->ecx & 0xff, 3u);           // NC: cores - 1
  EXPECT_EQ((ext8->ecx >> 12) & 0xf, 2u);    // ApicIdCoreIdSize
  EXPECT_EQ(ext8->ecx & ~0xf0ffu, 0x00030a00u);  // other bits kept
  EXPECT_EQ(ext8->eax, 0x3027u);

  const auto ext1e = Find(out, 0x8000001e);
  ASSERT_TRUE(ext1e.has_value());
  EXPECT_EQ(ext1e->eax, 1u);  // extended APIC id
  EXPECT_EQ(ext1e->ebx, 1u);  // core id 1, one thread per core
  EXPECT_EQ(ext1e->ecx, 0u);  // node 0
}

TEST(NormalizeCpuidTest, SingleVcpuClearsHttAndCmpLegacy) {
  std::vector<kvm_cpuid_entry2> supported = Supported();
  for (auto& e : supported) {
    if (e.function == 0x1) e.edx |= kHtt;
    if (e.function == 0x80000001) e.ecx |= kCmpLegacy;
  }
  const auto out = NormalizeCpuid(supported, 0, 1);
  const auto leaf1 = Find(out, 0x1);
  ASSERT_TRUE(leaf1.has_value());
  EXPECT_EQ(leaf1->edx & kHtt, 0u);
  EXPECT_EQ((leaf1->ebx >> 16) & 0xff, 1u);
  EXPECT_EQ(leaf1->ebx >> 24, 0u);
  EXPECT_EQ(leaf1->ecx & kHypervisor, kHypervisor);
  EXPECT_EQ(Find(out, 0x80000001)->ecx & kCmpLegacy, 0u);
  EXPECT_EQ(Find(out, 0x80000008)->ecx & 0xff, 0u);
  EXPECT_EQ((Find(out, 0x80000008)->ecx >> 12) & 0xf, 0u);
  for (uint32_t sub = 0; sub < 4; ++sub) {
    const auto leaf4 = Find(out, 0x4, sub);
    ASSERT_TRUE(leaf4.has_value());
    EXPECT_EQ(leaf4->eax >> 14, 0u) << sub;
  }
  const auto core = Find(out, 0xb, 1);
  ASSERT_TRUE(core.has_value());
  EXPECT_EQ(core->eax, 0u);
  EXPECT_EQ(core->ebx, 1u);
}

TEST(NormalizeCpuidTest, UnrelatedLeavesUntouched) {
  const auto out = NormalizeCpuid(Supported(), 1, 4);
  for (uint32_t function : {0x0u, 0x7u}) {
    const auto in = Find(Supported(), function);
    const auto got = Find(out, function);
    ASSERT_TRUE(got.has_value()) << function;
    EXPECT_EQ(got->eax, in->eax) << function;
    EXPECT_EQ(got->ebx, in->ebx) << function;
    EXPECT_EQ(got->ecx, in->ecx) << function;
    EXPECT_EQ(got->edx, in->edx) << function;
    EXPECT_EQ(got->flags, in->flags) << function;
  }
  // Everything but the replaced topology leaves is still there, in order.
  EXPECT_EQ(out.size(), Supported().size() - 3 + 3);
  EXPECT_EQ(out[0].function, 0x0u);
  EXPECT_EQ(out[1].function, 0x1u);
}

TEST(NormalizeCpuidTest, EmptyInput) {
  EXPECT_TRUE(NormalizeCpuid({}, 0, 1).empty());
}

}  // namespace
}  // namespace vessel::x86
