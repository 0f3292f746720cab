#include "arch/x86_64/compat/pvm_compat.h"

#include <asm/kvm_para.h>

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/msr_index.h"
#include "vmm/base/log.h"

namespace vessel::x86 {
namespace {

constexpr uint8_t kInt3 = 0xcc;
constexpr uint8_t kFwait = 0x9b;
constexpr uint8_t kBreakpointVector = 3;
constexpr uint64_t kRflagsFixed = 0x2;

}  // namespace

void MaskPvmHypercallFeatures(std::vector<kvm_cpuid_entry2>& cpuid) {
  for (kvm_cpuid_entry2& e : cpuid) {
    if (e.function != KVM_CPUID_FEATURES) continue;
    e.eax &= ~((1u << KVM_FEATURE_PV_UNHALT) | (1u << KVM_FEATURE_PV_SEND_IPI) |
               (1u << KVM_FEATURE_PV_SCHED_YIELD) | (1u << KVM_FEATURE_PV_TLB_FLUSH));
  }
}

std::string PvmCmdlineAdditions() { return "noxsave nopti nopcid clearcpuid=308,295,141,154,151"; }

InstructionFixup ClassifyEmulationFailure(absl::Span<const uint8_t> bytes) {
  if (bytes.empty()) return InstructionFixup::kNone;
  if (bytes[0] == kInt3) return InstructionFixup::kInjectBreakpoint;
  if (bytes[0] == kFwait) return InstructionFixup::kSkipFwait;
  return InstructionFixup::kNone;
}

bool IsMisdeliveredSyscall(const PageFaultFrame& frame, uint64_t lstar) {
  return lstar != 0 && frame.rip == lstar && (frame.cs & 3) == 3;
}

SyscallEntry RebuildSyscallEntry(const PageFaultFrame& frame, uint64_t star, uint64_t lstar,
                                 uint64_t fmask, uint64_t r11) {
  SyscallEntry e;
  e.cs_selector = static_cast<uint16_t>((star >> 32) & 0xfffc);
  e.ss_selector = static_cast<uint16_t>(e.cs_selector + 8);
  e.rip = lstar;
  e.rsp = frame.rsp;  // SYSCALL leaves RSP at the user stack
  e.rflags = (r11 & ~fmask) | kRflagsFixed;
  return e;
}

bool IsThreeByteNop(absl::Span<const uint8_t> b) {
  if (b.size() < 3) return false;
  return (b[0] == 0x90 && b[1] == 0x90 && b[2] == 0x90) ||
         (b[0] == 0x0f && b[1] == 0x1f && b[2] == 0x00);
}

PvmCompat::PvmCompat(GuestMemory* memory, std::optional<uint64_t> page_fault_entry)
    : memory_(memory), trap_gva_(page_fault_entry) {
  if (trap_gva_.has_value()) {
    trap_gpa_ = *trap_gva_ - kKernelVirtualBase;
  } else {
    LogWarning("kvm_pvm compat: no asm_exc_page_fault symbol (boot an ELF vmlinux with its symbol "
               "table): the SYSCALL fix is off and guest user programs will fail at their first "
               "syscall");
  }
}

PvmCompat::State PvmCompat::GetState() {
  std::lock_guard lock(trap_mu_);
  State st;
  st.trap_gva = trap_gva_;
  st.trap_gpa = trap_gpa_;
  st.trap_disabled = trap_disabled_;
  st.int3_injected = int3_injected_.load();
  st.fwait_skipped = fwait_skipped_.load();
  st.page_fault_traps = page_fault_traps_.load();
  st.syscalls_fixed = syscalls_fixed_.load();
  st.trap_plants = trap_plants_.load();
  return st;
}

std::unique_ptr<PvmCompat> PvmCompat::FromState(GuestMemory* memory, const State& st) {
  std::unique_ptr<PvmCompat> c(new PvmCompat(memory, st.trap_gva));
  c->trap_gpa_ = st.trap_gpa;
  c->trap_disabled_ = st.trap_disabled;
  c->int3_injected_ = st.int3_injected;
  c->fwait_skipped_ = st.fwait_skipped;
  c->page_fault_traps_ = st.page_fault_traps;
  c->syscalls_fixed_ = st.syscalls_fixed;
  c->trap_plants_ = st.trap_plants;
  return c;
}

void PvmCompat::MaintainTrap() {
  if (!trap_gva_.has_value()) return;
  std::lock_guard lock(trap_mu_);
  if (trap_disabled_) return;
  std::array<uint8_t, 3> bytes;
  if (!memory_->Read(trap_gpa_, bytes.data(), bytes.size()).ok()) {
    trap_disabled_ = true;
    LogWarning(absl::StrFormat("kvm_pvm compat: #PF entry %#x is outside guest RAM; SYSCALL fix off",
                               *trap_gva_));
    return;
  }
  if (bytes[0] == kInt3) return;
  if (!IsThreeByteNop(bytes)) {
    trap_disabled_ = true;
    LogWarning(absl::StrFormat(
        "kvm_pvm compat: asm_exc_page_fault starts with %02x %02x %02x, not the expected 3-byte "
        "NOP (SMAP on?); SYSCALL fix off",
        bytes[0], bytes[1], bytes[2]));
    return;
  }
  uint8_t trap = kInt3;
  if (memory_->Write(trap_gpa_, &trap, 1).ok()) trap_plants_.fetch_add(1);
}

absl::Status PvmCompat::ReadVirtual(const KvmVcpu& vcpu, uint64_t gva, void* out,
                                    uint64_t len) const {
  uint8_t* dst = static_cast<uint8_t*>(out);
  while (len > 0) {
    uint64_t chunk = std::min<uint64_t>(len, 0x1000 - (gva & 0xfff));
    absl::StatusOr<uint64_t> gpa = vcpu.Translate(gva);
    if (!gpa.ok()) return gpa.status();
    absl::Status s = memory_->Read(*gpa, dst, chunk);
    if (!s.ok()) return s;
    dst += chunk;
    gva += chunk;
    len -= chunk;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> PvmCompat::HandleEmulationFailure(KvmVcpu& vcpu) {
  absl::StatusOr<kvm_regs> regs = vcpu.GetRegs();
  if (!regs.ok()) return regs.status();
  if (trap_gva_.has_value() && regs->rip == *trap_gva_) return HandlePageFaultTrap(vcpu, *regs);
  std::array<uint8_t, 1> byte;
  if (!ReadVirtual(vcpu, regs->rip, byte.data(), byte.size()).ok()) return false;
  switch (ClassifyEmulationFailure(byte)) {
    case InstructionFixup::kInjectBreakpoint: {
      regs->rip += 1;
      absl::Status s = vcpu.SetRegs(*regs);
      if (!s.ok()) return s;
      absl::StatusOr<kvm_vcpu_events> events = vcpu.GetEvents();
      if (!events.ok()) return events.status();
      events->exception.injected = 1;
      events->exception.nr = kBreakpointVector;
      events->exception.has_error_code = 0;
      events->flags = 0;
      s = vcpu.SetEvents(*events);
      if (!s.ok()) return s;
      int3_injected_.fetch_add(1);
      return true;
    }
    case InstructionFixup::kSkipFwait: {
      regs->rip += 1;
      absl::Status s = vcpu.SetRegs(*regs);
      if (!s.ok()) return s;
      fwait_skipped_.fetch_add(1);
      return true;
    }
    case InstructionFixup::kNone:
      return false;
  }
  return false;
}

absl::StatusOr<bool> PvmCompat::HandlePageFaultTrap(KvmVcpu& vcpu, kvm_regs regs) {
  page_fault_traps_.fetch_add(1);
  PageFaultFrame frame;
  absl::Status s = ReadVirtual(vcpu, regs.rsp, &frame, sizeof(frame));
  if (!s.ok()) return s;
  absl::StatusOr<std::vector<uint64_t>> msrs = vcpu.GetMsrs({kMsrStar, kMsrLstar, kMsrSyscallMask});
  if (!msrs.ok()) return msrs.status();
  const uint64_t star = (*msrs)[0], lstar = (*msrs)[1], fmask = (*msrs)[2];
  if (!IsMisdeliveredSyscall(frame, lstar)) {
    regs.rip += 3;  // resume after the NOP we replaced: the guest handles its page fault
    s = vcpu.SetRegs(regs);
    if (!s.ok()) return s;
    return true;
  }
  SyscallEntry entry = RebuildSyscallEntry(frame, star, lstar, fmask, regs.r11);
  absl::StatusOr<kvm_sregs> sregs = vcpu.GetSregs();
  if (!sregs.ok()) return sregs.status();
  kvm_segment cs = {};
  cs.limit = 0xffffffff;
  cs.selector = entry.cs_selector;
  cs.type = 11;
  cs.present = 1;
  cs.s = 1;
  cs.l = 1;
  cs.g = 1;
  kvm_segment ss = cs;
  ss.selector = entry.ss_selector;
  ss.type = 3;
  ss.l = 0;
  ss.db = 1;
  sregs->cs = cs;
  sregs->ss = ss;
  s = vcpu.SetSregs(*sregs);
  if (!s.ok()) return s;
  regs.rip = entry.rip;
  regs.rsp = entry.rsp;
  regs.rflags = entry.rflags;
  s = vcpu.SetRegs(regs);
  if (!s.ok()) return s;
  syscalls_fixed_.fetch_add(1);
  return true;
}

std::string PvmCompat::Summary() const {
  return absl::StrCat("kvm_pvm compat: int3->#BP ", int3_injected_.load(), ", fwait skipped ",
                      fwait_skipped_.load(), ", #PF traps ", page_fault_traps_.load(),
                      ", SYSCALL entries fixed ", syscalls_fixed_.load(), ", trap planted ",
                      trap_plants_.load(), " time(s)");
}

}  // namespace vessel::x86
