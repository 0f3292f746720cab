// Which KVM this host has: hardware (VMX/SVM) or kvm_pvm, the software nested virtualization of
// vessel's build hosts, which needs the x86 compatibility profile.
#ifndef VESSEL_VMM_KVM_PLATFORM_H_
#define VESSEL_VMM_KVM_PLATFORM_H_

#include <string>

namespace vessel {

enum class KvmFlavor { kHardware, kPvm };

struct Platform {
  KvmFlavor flavor = KvmFlavor::kHardware;
  std::string Name() const;  // "hardware KVM" / "kvm_pvm (software nested KVM)"
};

// Looks for <sysfs_root>/module/kvm_pvm.
Platform DetectPlatform(const std::string& sysfs_root = "/sys");

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_PLATFORM_H_
