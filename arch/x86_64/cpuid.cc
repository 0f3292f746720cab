#include "arch/x86_64/cpuid.h"

namespace vessel::x86 {
namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kExtLeaf1EcxCmpLegacy = 1u << 1;

}  // namespace

uint32_t BitsFor(uint32_t count) {
  uint32_t bits = 0;
  while (bits < 32 && (uint64_t{1} << bits) < count) ++bits;
  return bits;
}

std::vector<kvm_cpuid_entry2> NormalizeCpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                             uint32_t vcpu_id, uint32_t vcpu_count) {
  std::vector<kvm_cpuid_entry2> out;
  out.reserve(supported.size() + 4);
  bool has_leaf_b = false;
  uint32_t leaf_b_flags = 0;
  for (const kvm_cpuid_entry2& in : supported) {
    if (in.function == 0xb || in.function == 0x1f) {
      // Rebuilt below with our own topology.
      if (in.function == 0xb) {
        has_leaf_b = true;
        leaf_b_flags = in.flags;
      }
      continue;
    }
    kvm_cpuid_entry2 e = in;
    switch (e.function) {
      case 0x1:
        e.ebx = (e.ebx & 0x000000ff) | (8u << 8) | ((vcpu_count & 0xff) << 16) | (vcpu_id << 24);
        e.ecx |= kLeaf1EcxHypervisor;
        if (vcpu_count > 1) e.edx |= kLeaf1EdxHtt; else e.edx &= ~kLeaf1EdxHtt;
        break;
      case 0x4: {
        uint32_t cache_level = (e.eax >> 5) & 0x7;
        uint32_t sharing = cache_level >= 3 ? vcpu_count - 1 : 0;
        e.eax = (e.eax & 0x00003fff) | ((sharing & 0xfff) << 14) | (((vcpu_count - 1) & 0x3f) << 26);
        break;
      }
      case 0x80000001:
        if (vcpu_count > 1) e.ecx |= kExtLeaf1EcxCmpLegacy; else e.ecx &= ~kExtLeaf1EcxCmpLegacy;
        break;
      case 0x80000008:
        e.ecx = (e.ecx & ~0xf0ffu) | ((vcpu_count - 1) & 0xff) | (BitsFor(vcpu_count) << 12);
        break;
      case 0x8000001e:
        e.eax = vcpu_id;
        e.ebx = vcpu_id & 0xff;  // core id; threads per core - 1 = 0
        e.ecx = 0;               // node 0, one node per package
        break;
      default:
        break;
    }
    out.push_back(e);
  }
  if (has_leaf_b) {
    for (uint32_t sub = 0; sub < 3; ++sub) {
      kvm_cpuid_entry2 e = {};
      e.function = 0xb;
      e.index = sub;
      e.flags = leaf_b_flags | KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      e.edx = vcpu_id;
      if (sub == 0) {  // SMT level: one thread per core
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (1u << 8) | sub;
      } else if (sub == 1) {  // core level: every vCPU a core
        e.eax = BitsFor(vcpu_count);
        e.ebx = vcpu_count;
        e.ecx = (2u << 8) | sub;
      } else {  // invalid level ends the enumeration
        e.ecx = sub;
      }
      out.push_back(e);
    }
  }
  return out;
}

}  // namespace vessel::x86
