// CreateHostArch: the only place that picks an architecture.
#include "arch/arch.h"

#if defined(__x86_64__)
#include "arch/x86_64/x86_vm.h"
#elif defined(__aarch64__)
#include "arch/aarch64/aarch64_vm.h"
#else
#error "vessel supports x86_64 and aarch64 hosts"
#endif

namespace vessel::arch {

std::unique_ptr<ArchVm> CreateHostArch(const Platform& platform) {
#if defined(__x86_64__)
  return std::make_unique<x86::X86Vm>(platform);
#else
  (void)platform;  // no platform profiles on aarch64 yet
  return std::make_unique<aarch64::Aarch64Vm>();
#endif
}

}  // namespace vessel::arch
