#include "vmm/legacy/serial.h"

namespace vessel {
namespace {

// Register offsets.
constexpr uint8_t kData = 0;   // RBR (read) / THR (write) / DLL (DLAB)
constexpr uint8_t kIer = 1;    // IER / DLM (DLAB)
constexpr uint8_t kIir = 2;    // IIR (read) / FCR (write)
constexpr uint8_t kLcr = 3;
constexpr uint8_t kMcr = 4;
constexpr uint8_t kLsr = 5;
constexpr uint8_t kMsr = 6;
constexpr uint8_t kScr = 7;

constexpr uint8_t kIerRda = 0x01;
constexpr uint8_t kIerThre = 0x02;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirRda = 0x04;
constexpr uint8_t kIirFifo = 0xc0;
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
// Modem status when not in loopback: DCD, DSR, CTS asserted.
constexpr uint8_t kMsrConnected = 0xb0;

}  // namespace

Serial16550::Serial16550(std::shared_ptr<IrqLine> irq, OutputSink sink)
    : irq_(std::move(irq)), sink_(std::move(sink)) {}

void Serial16550::Read(uint64_t offset, absl::Span<uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  data[0] = offset < 8 ? ReadRegister(static_cast<uint8_t>(offset)) : 0xff;
  for (size_t i = 1; i < data.size(); ++i) data[i] = 0xff;  // wider than the byte register
  UpdateIrq();
}

void Serial16550::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (data.empty() || offset >= 8) return;
  std::string out;
  {
    std::lock_guard lock(mu_);
    uint8_t reg = static_cast<uint8_t>(offset);
    if (reg == kData && !(lcr_ & kLcrDlab)) {
      if (mcr_ & kMcrLoop) {
        if (rx_.size() < kMaxInputBytes) rx_.push_back(data[0]); else overrun_ = true;
      } else {
        out.push_back(static_cast<char>(data[0]));
      }
      // Transmission is instantaneous: THR is empty again at once.
      thr_interrupt_pending_ = true;
    } else {
      WriteRegister(reg, data[0]);
    }
    UpdateIrq();
  }
  if (!out.empty() && sink_) sink_(out);
}

uint8_t Serial16550::ReadRegister(uint8_t reg) {
  switch (reg) {
    case kData:
      if (lcr_ & kLcrDlab) return dll_;
      if (rx_.empty()) return 0;
      {
        uint8_t b = rx_.front();
        rx_.pop_front();
        return b;
      }
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir: {
      uint8_t id = InterruptId();
      // Reading IIR while it reports THR empty clears that condition.
      if (id == kIirThre) thr_interrupt_pending_ = false;
      return id | ((fcr_ & kFcrEnable) ? kIirFifo : 0);
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      uint8_t lsr = kLsrThre | kLsrTemt;
      if (!rx_.empty()) lsr |= kLsrDr;
      if (overrun_) lsr |= kLsrOe;
      overrun_ = false;  // OE clears on read
      return lsr;
    }
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrConnected;
    case kScr:
      return scr_;
  }
  return 0xff;
}

void Serial16550::WriteRegister(uint8_t reg, uint8_t value) {
  switch (reg) {
    case kData:  // DLAB set
      dll_ = value;
      break;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = value;
      } else {
        bool thre_enabled_now = (value & kIerThre) && !(ier_ & kIerThre);
        ier_ = value & 0x0f;
        // Enabling the THRE interrupt while THR is empty raises it at once (as on real parts).
        if (thre_enabled_now) thr_interrupt_pending_ = true;
      }
      break;
    case kIir:  // FCR
      fcr_ = value & 0xc9;
      if (value & kFcrClearRx) rx_.clear();
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      mcr_ = value & 0x1f;
      break;
    case kScr:
      scr_ = value;
      break;
    default:  // LSR and MSR are read-only
      break;
  }
}

uint8_t Serial16550::InterruptId() const {
  if ((ier_ & kIerRda) && !rx_.empty()) return kIirRda;
  if ((ier_ & kIerThre) && thr_interrupt_pending_) return kIirThre;
  return kIirNone;
}

void Serial16550::UpdateIrq() {
  bool want = InterruptId() != kIirNone;
  // OUT2 gates the IRQ on PC UARTs, but Linux sets it; honour IER alone like most VMMs do.
  if (want != irq_high_) {
    irq_high_ = want;
    if (irq_) irq_->SetLevel(want);
  }
}

void Serial16550::QueueInput(absl::string_view bytes) {
  std::lock_guard lock(mu_);
  for (char c : bytes) {
    if (rx_.size() >= kMaxInputBytes) {
      ++dropped_;
      overrun_ = true;
      continue;
    }
    rx_.push_back(static_cast<uint8_t>(c));
  }
  UpdateIrq();
}

uint64_t Serial16550::dropped_input() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

Serial16550::State Serial16550::GetState() const {
  std::lock_guard lock(mu_);
  State st;
  st.ier = ier_;
  st.lcr = lcr_;
  st.mcr = mcr_;
  st.scr = scr_;
  st.fcr = fcr_;
  st.dll = dll_;
  st.dlm = dlm_;
  st.thr_interrupt_pending = thr_interrupt_pending_;
  st.overrun = overrun_;
  st.rx.assign(rx_.begin(), rx_.end());
  return st;
}

void Serial16550::SetState(const State& st) {
  std::lock_guard lock(mu_);
  ier_ = st.ier;
  lcr_ = st.lcr;
  mcr_ = st.mcr;
  scr_ = st.scr;
  fcr_ = st.fcr;
  dll_ = st.dll;
  dlm_ = st.dlm;
  thr_interrupt_pending_ = st.thr_interrupt_pending;
  overrun_ = st.overrun;
  rx_.assign(st.rx.begin(), st.rx.begin() + std::min(st.rx.size(), kMaxInputBytes));
  UpdateIrq();
}

}  // namespace vessel
