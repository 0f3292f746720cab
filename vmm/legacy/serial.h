// Serial16550: a 16550A UART (COM1) with real register semantics, interrupt driven.
//
// Transmit is instantaneous (THR empty at once, a THRE interrupt follows each write when enabled),
// receive is a host-side queue exposed one byte at a time through RBR/LSR.DR. Interrupt
// identification follows the 16550 priorities (receive data > THR empty) and the IRQ line is high
// exactly while an enabled condition is pending, so each new condition is a new edge.
#ifndef VESSEL_VMM_LEGACY_SERIAL_H_
#define VESSEL_VMM_LEGACY_SERIAL_H_

#include <cstdint>
#include <deque>
#include <string>
#include <functional>
#include <memory>
#include <mutex>
#include "absl/strings/string_view.h"

#include "vmm/bus/bus.h"
#include "vmm/bus/irq_line.h"

namespace vessel {

class Serial16550 : public BusDevice {
 public:
  using OutputSink = std::function<void(absl::string_view bytes)>;
  static constexpr uint16_t kCom1Base = 0x3f8;
  static constexpr uint32_t kCom1Irq = 4;
  static constexpr size_t kMaxInputBytes = 64 * 1024;

  Serial16550(std::shared_ptr<IrqLine> irq, OutputSink sink);

  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

  // Host input for the guest. Bytes beyond kMaxInputBytes queued are dropped and counted.
  void QueueInput(absl::string_view bytes);
  uint64_t dropped_input() const;

  // Register state for a snapshot (vmm/snapshot); SetState re-evaluates the interrupt line.
  struct State {
    uint8_t ier = 0, lcr = 0, mcr = 0, scr = 0, fcr = 0, dll = 0x0c, dlm = 0;
    bool thr_interrupt_pending = false;
    bool overrun = false;
    std::string rx;  // input the guest has not read yet
  };
  State GetState() const;
  void SetState(const State& state);  // rx beyond kMaxInputBytes is dropped

 private:
  uint8_t ReadRegister(uint8_t reg);
  void WriteRegister(uint8_t reg, uint8_t value);
  uint8_t InterruptId() const;
  void UpdateIrq();  // requires mu_

  std::shared_ptr<IrqLine> irq_;
  OutputSink sink_;

  mutable std::mutex mu_;
  std::deque<uint8_t> rx_;
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0;
  uint8_t mcr_ = 0;
  uint8_t scr_ = 0;
  uint8_t fcr_ = 0;
  uint8_t dll_ = 0x0c;  // 9600 baud
  uint8_t dlm_ = 0;
  bool thr_interrupt_pending_ = false;
  bool overrun_ = false;
  bool irq_high_ = false;
  uint64_t dropped_ = 0;
};

}  // namespace vessel

#endif  // VESSEL_VMM_LEGACY_SERIAL_H_
