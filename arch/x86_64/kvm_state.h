// x86 KVM state for snapshots: the VM's (PIC master/slave, IOAPIC, PIT, KVM clock) and each
// vCPU's (CPUID, registers, FPU or xsave, xcrs, MSRs, LAPIC, events, MP state, debug registers),
// as the raw KVM structures in vessel.snapshot.v1 messages. Restores check every structure's size
// before the ioctl and follow the order KVM needs (CPUID first, events last).
#ifndef VESSEL_ARCH_X86_64_KVM_STATE_H_
#define VESSEL_ARCH_X86_64_KVM_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"

namespace vessel::x86 {

// The host CPU's CPUID vendor string ("AuthenticAMD", "GenuineIntel").
std::string HostCpuVendor();

absl::Status SaveVmState(KvmVm& vm, snapshot::v1::X86VmState& out);
absl::Status RestoreVmState(KvmVm& vm, const snapshot::v1::X86VmState& in);

struct VcpuStateOptions {
  std::vector<uint32_t> msr_indices;  // KVM_GET_MSR_INDEX_LIST
  bool xsave = false;                 // KVM_CAP_XSAVE
  bool xcrs = false;                  // KVM_CAP_XCRS
};
VcpuStateOptions VcpuStateOptionsFor(const KvmSystem& kvm);

// MSRs KVM lists but refuses to read are left out (and counted in *skipped when given).
absl::Status SaveVcpuState(KvmVcpu& vcpu, const VcpuStateOptions& options,
                           snapshot::v1::X86VcpuState& out, int* skipped = nullptr);
absl::Status RestoreVcpuState(KvmVcpu& vcpu, const snapshot::v1::X86VcpuState& in);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_KVM_STATE_H_
