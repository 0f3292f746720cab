// KvmIrqLine: an IrqLine that drives a GSI of the VM's in-kernel PIC/IOAPIC with KVM_IRQ_LINE.
#ifndef VESSEL_VMM_KVM_KVM_IRQ_LINE_H_
#define VESSEL_VMM_KVM_KVM_IRQ_LINE_H_

#include "vmm/base/log.h"
#include "vmm/bus/irq_line.h"
#include "vmm/kvm/kvm_vm.h"

namespace vessel {

class KvmIrqLine : public IrqLine {
 public:
  KvmIrqLine(KvmVm* vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  void SetLevel(bool high) override {
    absl::Status s = vm_->SetIrqLine(gsi_, high);
    if (!s.ok() && errors_.Allow()) LogError(s.message());
  }

 private:
  KvmVm* vm_;
  uint32_t gsi_;
  RateLimiter errors_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_KVM_IRQ_LINE_H_
