// The compatibility profile for kvm_pvm, the software nested KVM of vessel's build hosts.
//
// kvm_pvm emulates guest kernel code and cannot execute a few instructions; its SYSCALL from guest
// user mode leaves CS at the user selector. Each workaround here is named, counted, logged once
// with its count at exit, and applied only when the platform is kvm_pvm: on hardware KVM the VMM
// creates no PvmCompat at all (no traps, no extra exits, no command-line changes).
//
//  - cmdline: `noxsave nopti nopcid clearcpuid=...` (KVM_SET_CPUID2 masks of standard leaves do not
//             reach the guest there). nopcid: with PCIDs, 2-vCPU guests read freshly written user
//             memory as zeros in about one boot of three (busybox segfaults on a TLS load); with
//             nopcid 0 of 6 boots did.
//  - int3:    kernel int3 (text_poke, selftest) exits as an emulation failure: skip it, inject #BP.
//  - fwait:   emulation failure: skip it (no x87 exceptions are ever pending).
//  - cpuid:   KVM PV features whose hypercalls never complete there (PV IPI, PV unhalt, PV
//             sched yield) are masked; an SMP guest otherwise hangs at its first PV IPI.
//  - syscall: an int3 planted over the 3-byte NOP at the start of the guest's asm_exc_page_fault
//             makes every #PF exit; a #PF whose frame shows RIP == LSTAR from CPL3 is a SYSCALL
//             that kvm_pvm delivered without switching privilege: the VMM discards the frame and
//             builds the real SYSCALL entry. Other #PFs resume after the NOP.
#ifndef VESSEL_ARCH_X86_64_COMPAT_PVM_COMPAT_H_
#define VESSEL_ARCH_X86_64_COMPAT_PVM_COMPAT_H_

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {

// Masks KVM paravirtual features that do not work on kvm_pvm (leaf 0x40000001 EAX):
// - PV IPIs, PV spinlock kicks (PV_UNHALT), PV sched yield: their hypercalls (VMCALL) never
//   complete; an SMP guest hangs in kvm_hypercall4 at its first IPI.
// - PV TLB flush: the guest skips the flush IPI to a preempted vCPU and relies on the host to
//   flush at its next entry. With it, 2-vCPU guests saw user memory read as zeros (a busybox
//   segfault on a TLS load, about one boot in four); without it the guest sends real IPIs.
void MaskPvmHypercallFeatures(std::vector<kvm_cpuid_entry2>& cpuid);

// Kernel command-line additions for kvm_pvm: no XSAVE, no PTI, no PCID; clearcpuid SMAP 308,
// SMEP 295, CX16 141, XSAVE 154, POPCNT 151.
std::string PvmCmdlineAdditions();

enum class InstructionFixup { kNone, kInjectBreakpoint, kSkipFwait };
// What to do with the instruction at RIP after an emulation failure.
InstructionFixup ClassifyEmulationFailure(absl::Span<const uint8_t> bytes_at_rip);

// The hardware exception frame of a #PF (error code pushed), as found at RSP.
struct PageFaultFrame {
  uint64_t error_code, rip, cs, rflags, rsp, ss;
};
bool IsMisdeliveredSyscall(const PageFaultFrame& frame, uint64_t lstar);

// Register state of a correct SYSCALL entry from the user context in `frame`.
struct SyscallEntry {
  uint16_t cs_selector, ss_selector;
  uint64_t rip, rsp, rflags;
};
SyscallEntry RebuildSyscallEntry(const PageFaultFrame& frame, uint64_t star, uint64_t lstar,
                                 uint64_t fmask, uint64_t r11);

// True for the 3-byte NOP forms the kernel leaves where SMAP's CLAC would be.
bool IsThreeByteNop(absl::Span<const uint8_t> bytes);

class PvmCompat {
 public:
  // `page_fault_entry` is the guest-virtual address of asm_exc_page_fault (from the vmlinux symbol
  // table); without it the SYSCALL fix is off and the guest's first syscall from user mode fails.
  PvmCompat(GuestMemory* memory, std::optional<uint64_t> page_fault_entry);

  // Called by each vCPU thread after every exit: keeps the #PF trap planted (the kernel rewrites
  // that NOP when it applies alternatives). Costs one 3-byte guest-memory read.
  void MaintainTrap();
  // Handles KVM_EXIT_INTERNAL_ERROR / emulation; true when fixed and the vCPU may run on.
  absl::StatusOr<bool> HandleEmulationFailure(KvmVcpu& vcpu);
  // "int3->#BP 1, fwait skipped 12, ..." for the exit log.
  std::string Summary() const;

  uint64_t int3_injected() const { return int3_injected_.load(); }
  uint64_t fwait_skipped() const { return fwait_skipped_.load(); }
  uint64_t page_fault_traps() const { return page_fault_traps_.load(); }
  uint64_t syscalls_fixed() const { return syscalls_fixed_.load(); }

  // The profile's state, carried in a snapshot: the trap's address (the guest's memory already
  // holds the planted int3) and the counters.
  struct State {
    std::optional<uint64_t> trap_gva;
    uint64_t trap_gpa = 0;
    bool trap_disabled = false;
    uint64_t int3_injected = 0, fwait_skipped = 0, page_fault_traps = 0, syscalls_fixed = 0,
             trap_plants = 0;
  };
  State GetState();
  // A profile for a restored VM (no kernel image to read the symbol from).
  static std::unique_ptr<PvmCompat> FromState(GuestMemory* memory, const State& state);

 private:
  absl::StatusOr<bool> HandlePageFaultTrap(KvmVcpu& vcpu, kvm_regs regs);
  // Reads `len` bytes at guest-virtual `gva` through the vCPU's page tables.
  absl::Status ReadVirtual(const KvmVcpu& vcpu, uint64_t gva, void* out, uint64_t len) const;

  GuestMemory* memory_;
  std::optional<uint64_t> trap_gva_;
  uint64_t trap_gpa_ = 0;
  std::mutex trap_mu_;
  bool trap_disabled_ = false;
  std::atomic<uint64_t> int3_injected_{0};
  std::atomic<uint64_t> fwait_skipped_{0};
  std::atomic<uint64_t> page_fault_traps_{0};
  std::atomic<uint64_t> syscalls_fixed_{0};
  std::atomic<uint64_t> trap_plants_{0};
};

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_COMPAT_PVM_COMPAT_H_
