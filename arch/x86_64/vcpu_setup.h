// Puts a vCPU into the state the Linux 64-bit boot protocol expects (BSP) or the state INIT/SIPI
// starts from (APs): CPUID, MSRs, FPU, LAPIC LINT pins, and for the BSP long mode with identity
// paging, the boot GDT, RSI = zero page and RIP = kernel entry.
#ifndef VESSEL_ARCH_X86_64_VCPU_SETUP_H_
#define VESSEL_ARCH_X86_64_VCPU_SETUP_H_

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {

// Writes the boot GDT, an empty IDT and the identity page tables into guest memory (once per VM).
absl::Status WriteBootStructures(GuestMemory& memory);

// Special registers for 64-bit entry: CR0.PE|PG, CR4.PAE, EFER.LME|LMA, CS/DS from the boot GDT.
kvm_sregs LongModeSregs(const kvm_sregs& current);

// The LAPIC register image with LINT0 = ExtINT and LINT1 = NMI.
kvm_lapic_state WithLintPins(const kvm_lapic_state& lapic);

struct VcpuBootInfo {
  uint32_t vcpu_count;
  uint64_t entry;  // BSP only
  std::vector<kvm_cpuid_entry2> supported_cpuid;
  // Platform adjustments applied after normalisation (the kvm_pvm profile's masks); may be empty.
  std::function<void(std::vector<kvm_cpuid_entry2>&)> adjust_cpuid;
};

// Configures every vCPU; the BSP (id 0) additionally gets registers for the kernel entry.
absl::Status SetupVcpu(KvmVcpu& vcpu, const VcpuBootInfo& info);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_VCPU_SETUP_H_
