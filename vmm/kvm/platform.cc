#include "vmm/kvm/platform.h"

#include <sys/stat.h>

namespace vessel {

std::string Platform::Name() const {
  return flavor == KvmFlavor::kPvm ? "kvm_pvm (software nested KVM)" : "hardware KVM";
}

Platform DetectPlatform(const std::string& sysfs_root) {
  struct stat st;
  Platform p;
  if (::stat((sysfs_root + "/module/kvm_pvm").c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    p.flavor = KvmFlavor::kPvm;
  }
  return p;
}

}  // namespace vessel
