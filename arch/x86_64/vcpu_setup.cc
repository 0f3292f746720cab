#include "arch/x86_64/vcpu_setup.h"

#include <cstring>

#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/gdt.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/msr_index.h"
#include "arch/x86_64/page_tables.h"

namespace vessel::x86 {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr size_t kApicLvt0 = 0x350;
constexpr size_t kApicLvt1 = 0x360;
constexpr uint32_t kDeliveryExtInt = 7;
constexpr uint32_t kDeliveryNmi = 4;

uint32_t GetApicReg(const kvm_lapic_state& s, size_t off) {
  uint32_t v;
  std::memcpy(&v, s.regs + off, sizeof(v));
  return v;
}
void SetApicReg(kvm_lapic_state& s, size_t off, uint32_t v) { std::memcpy(s.regs + off, &v, sizeof(v)); }

}  // namespace

absl::Status WriteBootStructures(GuestMemory& memory) {
  auto gdt = BootGdt();
  absl::Status s = memory.WriteObj(kGdtAddr, gdt);
  if (!s.ok()) return s;
  s = memory.WriteObj(kIdtAddr, uint64_t{0});
  if (!s.ok()) return s;
  return WriteIdentityPageTables(memory, kPml4Addr).status();
}

kvm_sregs LongModeSregs(const kvm_sregs& current) {
  kvm_sregs s = current;
  auto gdt = BootGdt();
  s.gdt.base = kGdtAddr;
  s.gdt.limit = sizeof(gdt) - 1;
  s.idt.base = kIdtAddr;
  s.idt.limit = sizeof(uint64_t) - 1;
  s.cs = SegmentFromGdt(gdt[kBootCodeIndex], kBootCodeIndex);
  kvm_segment data = SegmentFromGdt(gdt[kBootDataIndex], kBootDataIndex);
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = SegmentFromGdt(gdt[kBootTssIndex], kBootTssIndex);
  s.cr0 = (s.cr0 | kCr0Pe | kCr0Et | kCr0Pg);
  s.cr3 = kPml4Addr;
  s.cr4 = s.cr4 | kCr4Pae;
  s.efer = s.efer | kEferLme | kEferLma;
  return s;
}

kvm_lapic_state WithLintPins(const kvm_lapic_state& lapic) {
  kvm_lapic_state s = lapic;
  SetApicReg(s, kApicLvt0, (GetApicReg(s, kApicLvt0) & ~0x700u) | (kDeliveryExtInt << 8));
  SetApicReg(s, kApicLvt1, (GetApicReg(s, kApicLvt1) & ~0x700u) | (kDeliveryNmi << 8));
  return s;
}

absl::Status SetupVcpu(KvmVcpu& vcpu, const VcpuBootInfo& info) {
  std::vector<kvm_cpuid_entry2> cpuid = NormalizeCpuid(info.supported_cpuid, vcpu.id(), info.vcpu_count);
  if (info.adjust_cpuid) info.adjust_cpuid(cpuid);
  absl::Status s = vcpu.SetCpuid(cpuid);
  if (!s.ok()) return s;
  std::vector<kvm_msr_entry> msrs;
  for (uint32_t index : {kMsrIa32SysenterCs, kMsrIa32SysenterEsp, kMsrIa32SysenterEip, kMsrStar,
                         kMsrCstar, kMsrKernelGsBase, kMsrSyscallMask, kMsrLstar}) {
    kvm_msr_entry e = {};
    e.index = index;
    msrs.push_back(e);
  }
  kvm_msr_entry misc = {};
  misc.index = kMsrIa32MiscEnable;
  misc.data = kMiscEnableFastString;
  msrs.push_back(misc);
  s = vcpu.SetMsrs(msrs);
  if (!s.ok()) return s;
  absl::StatusOr<kvm_lapic_state> lapic = vcpu.GetLapic();
  if (!lapic.ok()) return lapic.status();
  s = vcpu.SetLapic(WithLintPins(*lapic));
  if (!s.ok()) return s;
  if (vcpu.id() != 0) return absl::OkStatus();  // APs wait for INIT/SIPI

  kvm_fpu fpu = {};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  s = vcpu.SetFpu(fpu);
  if (!s.ok()) return s;
  absl::StatusOr<kvm_sregs> sregs = vcpu.GetSregs();
  if (!sregs.ok()) return sregs.status();
  s = vcpu.SetSregs(LongModeSregs(*sregs));
  if (!s.ok()) return s;
  kvm_regs regs = {};
  regs.rflags = 0x2;
  regs.rip = info.entry;
  regs.rsp = kBootStackPointer;
  regs.rbp = kBootStackPointer;
  regs.rsi = kZeroPageAddr;
  return vcpu.SetRegs(regs);
}

}  // namespace vessel::x86
