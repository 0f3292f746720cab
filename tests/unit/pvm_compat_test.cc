#include "arch/x86_64/compat/pvm_compat.h"

#include <asm/kvm_para.h>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "arch/x86_64/layout.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

using Bytes = std::vector<uint8_t>;

// ---- Pure helpers ----

TEST(PvmCmdlineTest, ContainsEveryWorkaround) {
  const std::string cmdline = PvmCmdlineAdditions();
  const std::vector<std::string> words = absl::StrSplit(cmdline, ' ');
  EXPECT_THAT(words, Contains("noxsave"));
  EXPECT_THAT(words, Contains("nopti"));
  EXPECT_THAT(words, Contains("clearcpuid=308,295,141,154,151"));
}

TEST(ClassifyEmulationFailureTest, Int3) {
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0xcc}), InstructionFixup::kInjectBreakpoint);
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0xcc, 0x90, 0x90}), InstructionFixup::kInjectBreakpoint);
}

TEST(ClassifyEmulationFailureTest, Fwait) {
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0x9b}), InstructionFixup::kSkipFwait);
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0x9b, 0xdb, 0xe3}), InstructionFixup::kSkipFwait);
}

TEST(ClassifyEmulationFailureTest, OthersAreNone) {
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{}), InstructionFixup::kNone);
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0x90}), InstructionFixup::kNone);
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0x0f, 0x01, 0xcb}), InstructionFixup::kNone);  // STAC
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0xcd, 0x03}), InstructionFixup::kNone);  // int $3
  EXPECT_EQ(ClassifyEmulationFailure(Bytes{0x0f, 0xcc}), InstructionFixup::kNone);
}

constexpr uint64_t kLstar = 0xffffffff81c00080ull;

PageFaultFrame UserFrame() {
  PageFaultFrame f = {};
  f.error_code = 0x15;
  f.rip = kLstar;
  f.cs = 0x33;
  f.rflags = 0x246;
  f.rsp = 0x7ffc12345678ull;
  f.ss = 0x2b;
  return f;
}

TEST(IsMisdeliveredSyscallTest, TrueForLstarFromCpl3) {
  EXPECT_TRUE(IsMisdeliveredSyscall(UserFrame(), kLstar));
  PageFaultFrame f = UserFrame();
  f.cs = 0x23;  // 32-bit user code, still CPL 3
  EXPECT_TRUE(IsMisdeliveredSyscall(f, kLstar));
}

TEST(IsMisdeliveredSyscallTest, FalseForKernelMode) {
  PageFaultFrame f = UserFrame();
  f.cs = 0x10;
  EXPECT_FALSE(IsMisdeliveredSyscall(f, kLstar));
  f.cs = 0x11;  // CPL 1
  EXPECT_FALSE(IsMisdeliveredSyscall(f, kLstar));
}

TEST(IsMisdeliveredSyscallTest, FalseForOtherRip) {
  PageFaultFrame f = UserFrame();
  f.rip = kLstar + 1;
  EXPECT_FALSE(IsMisdeliveredSyscall(f, kLstar));
  f.rip = 0x401000;
  EXPECT_FALSE(IsMisdeliveredSyscall(f, kLstar));
}

TEST(IsMisdeliveredSyscallTest, FalseWhenLstarUnset) {
  PageFaultFrame f = UserFrame();
  f.rip = 0;
  EXPECT_FALSE(IsMisdeliveredSyscall(f, 0));
}

TEST(RebuildSyscallEntryTest, FollowsSyscallSemantics) {
  const uint64_t star = 0x0023001000000000ull;  // SYSRET base 0x23, SYSCALL base 0x10
  const uint64_t fmask = 0x47700;               // TF DF IF IOPL NT AC
  const SyscallEntry e = RebuildSyscallEntry(UserFrame(), star, kLstar, fmask, 0x246);
  EXPECT_EQ(e.cs_selector, 0x10);
  EXPECT_EQ(e.ss_selector, 0x18);
  EXPECT_EQ(e.rip, kLstar);
  EXPECT_EQ(e.rsp, 0x7ffc12345678ull);
  EXPECT_EQ(e.rflags, (0x246ull & ~fmask) | 2);
  EXPECT_EQ(e.rflags, 0x46u);
}

TEST(RebuildSyscallEntryTest, ClearsRplBitsAndSetsFixedFlag) {
  const SyscallEntry e =
      RebuildSyscallEntry(UserFrame(), 0xffff00130000beefull, kLstar, 0, 0x0);
  EXPECT_EQ(e.cs_selector, 0x10);
  EXPECT_EQ(e.ss_selector, 0x18);
  EXPECT_EQ(e.rflags, 0x2u);
  const SyscallEntry f = RebuildSyscallEntry(UserFrame(), 0x0000ab4800000000ull, kLstar,
                                             ~0ull, 0xffffffffull);
  EXPECT_EQ(f.cs_selector, 0xab48);
  EXPECT_EQ(f.ss_selector, 0xab50);
  EXPECT_EQ(f.rflags, 0x2u);
}

TEST(IsThreeByteNopTest, RecognisedForms) {
  EXPECT_TRUE(IsThreeByteNop(Bytes{0x90, 0x90, 0x90}));
  EXPECT_TRUE(IsThreeByteNop(Bytes{0x0f, 0x1f, 0x00}));
  EXPECT_TRUE(IsThreeByteNop(Bytes{0x0f, 0x1f, 0x00, 0xcc}));  // only the first three count
}

TEST(IsThreeByteNopTest, OtherBytesRejected) {
  EXPECT_FALSE(IsThreeByteNop(Bytes{}));
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x90, 0x90}));
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x0f, 0x1f}));
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x0f, 0x01, 0xca}));  // CLAC
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x0f, 0x1f, 0x40}));  // 4-byte NOP's first bytes
  EXPECT_FALSE(IsThreeByteNop(Bytes{0xcc, 0x1f, 0x00}));
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x90, 0x90, 0xcc}));
  EXPECT_FALSE(IsThreeByteNop(Bytes{0x66, 0x90, 0x90}));
}

// ---- PvmCompat::MaintainTrap ----

constexpr uint64_t kTrapGva = 0xffffffff81a00b30ull;
constexpr uint64_t kTrapGpa = kTrapGva - kKernelVirtualBase;

class MaintainTrapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 32ull << 20}});
    ASSERT_TRUE(mem.ok()) << mem.status();
    memory_.emplace(std::move(*mem));
  }

  void Put(const Bytes& b) { ASSERT_TRUE(memory_->Write(kTrapGpa, b.data(), b.size()).ok()); }
  Bytes Get() {
    Bytes b(3);
    EXPECT_TRUE(memory_->Read(kTrapGpa, b.data(), b.size()).ok());
    return b;
  }

  std::optional<GuestMemory> memory_;
};

TEST_F(MaintainTrapTest, PlantsInt3OverThreeByteNop) {
  ASSERT_EQ(kTrapGpa, 0x1a00b30u);
  Put({0x0f, 0x1f, 0x00});
  PvmCompat compat(&*memory_, kTrapGva);
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0xcc, 0x1f, 0x00}));
  EXPECT_THAT(compat.Summary(), HasSubstr("trap planted 1 time"));
  // The bytes around it are untouched.
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kTrapGpa - 1), 0);
  EXPECT_EQ(*memory_->ReadObj<uint8_t>(kTrapGpa + 3), 0);
}

TEST_F(MaintainTrapTest, PlantsOverSingleByteNops) {
  Put({0x90, 0x90, 0x90});
  PvmCompat compat(&*memory_, kTrapGva);
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0xcc, 0x90, 0x90}));
}

TEST_F(MaintainTrapTest, LeavesExistingInt3Alone) {
  Put({0x0f, 0x1f, 0x00});
  PvmCompat compat(&*memory_, kTrapGva);
  compat.MaintainTrap();
  compat.MaintainTrap();
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0xcc, 0x1f, 0x00}));
  EXPECT_THAT(compat.Summary(), HasSubstr("trap planted 1 time"));
}

TEST_F(MaintainTrapTest, ReplantsAfterNopRestored) {
  Put({0x0f, 0x1f, 0x00});
  PvmCompat compat(&*memory_, kTrapGva);
  compat.MaintainTrap();
  ASSERT_EQ(Get()[0], 0xcc);
  compat.MaintainTrap();  // sees its own int3: nothing to do, and stays on
  // The guest kernel rewrites the NOP (alternatives patching).
  Put({0x0f, 0x1f, 0x00});
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0xcc, 0x1f, 0x00}));
  EXPECT_THAT(compat.Summary(), HasSubstr("trap planted 2 time"));
}

TEST_F(MaintainTrapTest, DisablesItselfOnUnexpectedBytes) {
  Put({0x0f, 0x01, 0xca});  // CLAC: SMAP is on
  PvmCompat compat(&*memory_, kTrapGva);
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0x0f, 0x01, 0xca}));
  // Even once a NOP shows up, the trap stays off.
  Put({0x0f, 0x1f, 0x00});
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0x0f, 0x1f, 0x00}));
  EXPECT_THAT(compat.Summary(), HasSubstr("trap planted 0 time"));
}

TEST_F(MaintainTrapTest, NeverWritesWithoutSymbol) {
  Put({0x0f, 0x1f, 0x00});
  PvmCompat compat(&*memory_, std::nullopt);
  compat.MaintainTrap();
  compat.MaintainTrap();
  EXPECT_EQ(Get(), (Bytes{0x0f, 0x1f, 0x00}));
  EXPECT_THAT(compat.Summary(), HasSubstr("trap planted 0 time"));
}

TEST_F(MaintainTrapTest, SymbolOutsideRamDisablesTrap) {
  PvmCompat beyond(&*memory_, kKernelVirtualBase + (64ull << 20));
  beyond.MaintainTrap();
  beyond.MaintainTrap();
  // Not a kernel-text address: gva - base wraps.
  PvmCompat low(&*memory_, 0x1000);
  low.MaintainTrap();
  EXPECT_THAT(beyond.Summary(), HasSubstr("trap planted 0 time"));
  EXPECT_THAT(low.Summary(), HasSubstr("trap planted 0 time"));
}

TEST_F(MaintainTrapTest, FreshCountersAreZero) {
  PvmCompat compat(&*memory_, kTrapGva);
  EXPECT_EQ(compat.int3_injected(), 0u);
  EXPECT_EQ(compat.fwait_skipped(), 0u);
  EXPECT_EQ(compat.page_fault_traps(), 0u);
  EXPECT_EQ(compat.syscalls_fixed(), 0u);
  EXPECT_TRUE(absl::StartsWith(compat.Summary(), "kvm_pvm compat: int3->#BP 0"));
}

}  // namespace
}  // namespace vessel::x86

namespace vessel::x86 {
namespace {

TEST(MaskPvmHypercallFeaturesTest, ClearsOnlyTheBrokenPvFeatures) {
  kvm_cpuid_entry2 kvm_leaf = {};
  kvm_leaf.function = KVM_CPUID_FEATURES;
  kvm_leaf.eax = 0xffffffffu;
  kvm_cpuid_entry2 other = {};
  other.function = 1;
  other.eax = 0xffffffffu;
  std::vector<kvm_cpuid_entry2> cpuid = {kvm_leaf, other};
  MaskPvmHypercallFeatures(cpuid);
  for (int bit : {KVM_FEATURE_PV_UNHALT, KVM_FEATURE_PV_SEND_IPI, KVM_FEATURE_PV_SCHED_YIELD,
                  KVM_FEATURE_PV_TLB_FLUSH}) {
    EXPECT_FALSE(cpuid[0].eax & (1u << bit)) << "bit " << bit;
  }
  EXPECT_TRUE(cpuid[0].eax & (1u << KVM_FEATURE_CLOCKSOURCE2));
  EXPECT_TRUE(cpuid[0].eax & (1u << KVM_FEATURE_STEAL_TIME));
  EXPECT_EQ(cpuid[1].eax, 0xffffffffu);
}

}  // namespace
}  // namespace vessel::x86
