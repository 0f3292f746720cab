// IrqfdLine: an IrqLine backed by a KVM irqfd. A rising edge (SetLevel(true)) writes the eventfd
// and KVM injects the interrupt in the kernel without a vCPU exit; the falling edge is implicit.
// For edge-triggered sources such as virtio-mmio interrupts.
#ifndef VESSEL_VMM_KVM_IRQFD_LINE_H_
#define VESSEL_VMM_KVM_IRQFD_LINE_H_

#include <unistd.h>

#include <cstdint>

#include "vmm/bus/irq_line.h"

namespace vessel {

class IrqfdLine : public IrqLine {
 public:
  explicit IrqfdLine(int eventfd) : eventfd_(eventfd) {}
  void SetLevel(bool high) override {
    if (!high) return;
    uint64_t one = 1;
    ssize_t n = ::write(eventfd_, &one, sizeof(one));
    (void)n;  // EAGAIN only when 2^64-2 edges are pending: the guest gets one anyway
  }

 private:
  int eventfd_;  // owned by the Machine
};

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_IRQFD_LINE_H_
