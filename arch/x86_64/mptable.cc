#include "arch/x86_64/mptable.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "arch/x86_64/layout.h"

namespace vessel::x86 {
namespace {

constexpr uint8_t kEntryProcessor = 0;
constexpr uint8_t kEntryBus = 1;
constexpr uint8_t kEntryIoapic = 2;
constexpr uint8_t kEntryIoInterrupt = 3;
constexpr uint8_t kEntryLocalInterrupt = 4;
constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIntTypeInt = 0;
constexpr uint8_t kIntTypeNmi = 1;
constexpr uint8_t kIntTypeExtInt = 3;
constexpr uint64_t kMaxTableBytes = kMpFloatingPointerAddr - kMpTableAddr;

void Put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(x & 0xff);
  v.push_back(x >> 8);
}
void Put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back((x >> (8 * i)) & 0xff);
}
void PutStr(std::vector<uint8_t>& v, const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>(s[i]));
}

}  // namespace

uint8_t MpChecksum(const std::vector<uint8_t>& data) {
  uint8_t sum = 0;
  for (uint8_t b : data) sum = static_cast<uint8_t>(sum + b);
  return sum;
}

absl::StatusOr<MpTableBytes> BuildMpTable(uint32_t vcpu_count, uint64_t table_addr) {
  if (vcpu_count == 0 || vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrCat("MP table: ", vcpu_count, " vCPUs (1..", kMaxVcpus, ")"));
  }
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpu_count);  // distinct from every APIC id
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t cpu = 0; cpu < vcpu_count; ++cpu) {
    entries.push_back(kEntryProcessor);
    entries.push_back(static_cast<uint8_t>(cpu));  // local APIC id
    entries.push_back(kApicVersion);
    entries.push_back(cpu == 0 ? 0x03 : 0x01);  // enabled (+ bootstrap processor)
    Put32(entries, 0x600);                      // signature: family 6
    Put32(entries, 0x201);                      // features: FPU, APIC
    Put32(entries, 0);
    Put32(entries, 0);
    ++count;
  }
  entries.push_back(kEntryBus);
  entries.push_back(0);  // bus id
  PutStr(entries, "ISA   ", 6);
  ++count;
  entries.push_back(kEntryIoapic);
  entries.push_back(ioapic_id);
  entries.push_back(0x11);  // IOAPIC version
  entries.push_back(0x01);  // enabled
  Put32(entries, static_cast<uint32_t>(kIoapicAddr));
  ++count;
  for (uint32_t pin = 0; pin < kIoapicPins; ++pin) {
    entries.push_back(kEntryIoInterrupt);
    entries.push_back(kIntTypeInt);
    Put16(entries, 0);  // conforming polarity/trigger
    entries.push_back(0);  // source bus
    entries.push_back(static_cast<uint8_t>(pin));  // source bus irq
    entries.push_back(ioapic_id);
    entries.push_back(static_cast<uint8_t>(pin));  // destination pin
    ++count;
  }
  for (uint8_t lint : {0, 1}) {
    entries.push_back(kEntryLocalInterrupt);
    entries.push_back(lint == 0 ? kIntTypeExtInt : kIntTypeNmi);
    Put16(entries, 0);
    entries.push_back(0);     // source bus
    entries.push_back(0);     // source irq
    entries.push_back(0xff);  // all local APICs
    entries.push_back(lint);
    ++count;
  }
  std::vector<uint8_t> table;
  PutStr(table, "PCMP", 4);
  Put16(table, static_cast<uint16_t>(44 + entries.size()));  // base table length
  table.push_back(4);                                        // spec revision 1.4
  table.push_back(0);                                        // checksum, below
  PutStr(table, "VESSEL  ", 8);                              // OEM id
  PutStr(table, "VESSELVMM   ", 12);                         // product id
  Put32(table, 0);                                           // OEM table pointer
  Put16(table, 0);                                           // OEM table size
  Put16(table, count);
  Put32(table, static_cast<uint32_t>(kLapicAddr));
  Put16(table, 0);  // extended table length
  table.push_back(0);  // extended checksum
  table.push_back(0);  // reserved
  table.insert(table.end(), entries.begin(), entries.end());
  if (table.size() > kMaxTableBytes) {
    return absl::InvalidArgumentError(absl::StrCat("MP table: ", table.size(), " bytes exceed ", kMaxTableBytes));
  }
  table[7] = static_cast<uint8_t>(-MpChecksum(table));

  std::vector<uint8_t> fp;
  PutStr(fp, "_MP_", 4);
  Put32(fp, static_cast<uint32_t>(table_addr));
  fp.push_back(1);  // length in 16-byte units
  fp.push_back(4);  // spec revision 1.4
  fp.push_back(0);  // checksum, below
  for (int i = 0; i < 5; ++i) fp.push_back(0);  // feature bytes: table present, no default config
  fp[10] = static_cast<uint8_t>(-MpChecksum(fp));
  return MpTableBytes{std::move(fp), std::move(table)};
}

absl::Status WriteMpTable(GuestMemory& memory, uint32_t vcpu_count) {
  absl::StatusOr<MpTableBytes> mp = BuildMpTable(vcpu_count, kMpTableAddr);
  if (!mp.ok()) return mp.status();
  absl::Status s = memory.Write(kMpTableAddr, mp->config_table.data(), mp->config_table.size());
  if (!s.ok()) return s;
  return memory.Write(kMpFloatingPointerAddr, mp->floating_pointer.data(), mp->floating_pointer.size());
}

}  // namespace vessel::x86
