#include "vmm/legacy/cmos_rtc.h"

namespace vessel {
namespace {

uint8_t Bcd(int v) { return static_cast<uint8_t>(((v / 10) << 4) | (v % 10)); }

}  // namespace

void CmosRtc::Read(uint64_t offset, absl::Span<uint8_t> data) {
  for (uint8_t& b : data) b = 0xff;
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  data[0] = offset == 1 ? ReadIndexed(index_) : index_;
}

void CmosRtc::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  if (offset == 0) index_ = data[0] & 0x7f;  // bit 7 is the NMI mask
  // Writes to the clock (offset 1) are ignored: the guest cannot move the host's time.
}

uint8_t CmosRtc::ReadIndexed(uint8_t index) const {
  std::time_t now = clock_();
  std::tm tm;
  gmtime_r(&now, &tm);
  switch (index) {
    case 0x00: return Bcd(tm.tm_sec);
    case 0x02: return Bcd(tm.tm_min);
    case 0x04: return Bcd(tm.tm_hour);
    case 0x06: return Bcd(tm.tm_wday + 1);
    case 0x07: return Bcd(tm.tm_mday);
    case 0x08: return Bcd(tm.tm_mon + 1);
    case 0x09: return Bcd(tm.tm_year % 100);
    case 0x32: return Bcd((tm.tm_year + 1900) / 100);  // century
    case 0x0a: return 0x26;  // register A: 32.768 kHz base, 1024 Hz rate, update not in progress
    case 0x0b: return 0x02;  // register B: 24-hour mode, BCD
    case 0x0c: return 0x00;  // register C: no interrupt flags
    case 0x0d: return 0x80;  // register D: valid RAM and time
    default: return 0x00;
  }
}

}  // namespace vessel
