// IrqLine: an interrupt line a device drives (level high/low). The VM wires it to KVM_IRQ_LINE;
// tests wire it to a recorder.
#ifndef VESSEL_VMM_BUS_IRQ_LINE_H_
#define VESSEL_VMM_BUS_IRQ_LINE_H_

namespace vessel {

class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void SetLevel(bool high) = 0;
};

}  // namespace vessel

#endif  // VESSEL_VMM_BUS_IRQ_LINE_H_
