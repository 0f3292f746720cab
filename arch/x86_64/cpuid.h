// Per-vCPU CPUID: KVM_GET_SUPPORTED_CPUID normalised so each vCPU reports its own APIC id and
// the VM's topology (one thread per core, `vcpu_count` cores in one package).
#ifndef VESSEL_ARCH_X86_64_CPUID_H_
#define VESSEL_ARCH_X86_64_CPUID_H_

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace vessel::x86 {

// Returns `supported` adjusted for vCPU `vcpu_id` of `vcpu_count`: leaf 1 (APIC id, logical
// count, HTT, hypervisor bit), leaf 4 (cores per package), leaf 0xb (x2APIC topology),
// AMD leaves 0x80000001 (CmpLegacy), 0x80000008 (core count) and 0x8000001e (ids).
std::vector<kvm_cpuid_entry2> NormalizeCpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                             uint32_t vcpu_id, uint32_t vcpu_count);

// Number of bits needed to number `count` items (ceil(log2(count))).
uint32_t BitsFor(uint32_t count);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_CPUID_H_
