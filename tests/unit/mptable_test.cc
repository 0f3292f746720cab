#include "arch/x86_64/mptable.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "arch/x86_64/layout.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {
namespace {

uint16_t Get16(const std::vector<uint8_t>& v, size_t off) {
  return static_cast<uint16_t>(v.at(off) | (v.at(off + 1) << 8));
}
uint32_t Get32(const std::vector<uint8_t>& v, size_t off) {
  return static_cast<uint32_t>(Get16(v, off) | (uint32_t{Get16(v, off + 2)} << 16));
}
std::string GetStr(const std::vector<uint8_t>& v, size_t off, size_t n) {
  return std::string(v.begin() + off, v.begin() + off + n);
}

// The configuration table's entries, parsed.
struct Parsed {
  struct Processor {
    uint8_t apic_id, flags;
  };
  struct IoInterrupt {
    uint8_t type, src_bus, src_irq, dst_ioapic, dst_pin;
  };
  struct LocalInterrupt {
    uint8_t type, dst_apic, dst_lint;
  };
  std::vector<Processor> processors;
  std::vector<std::string> buses;
  std::vector<uint8_t> ioapic_ids;
  std::vector<uint32_t> ioapic_addrs;
  std::vector<IoInterrupt> io_interrupts;
  std::vector<LocalInterrupt> local_interrupts;
  size_t entries = 0;
};

Parsed ParseEntries(const std::vector<uint8_t>& table) {
  Parsed p;
  size_t off = 44;
  while (off < table.size()) {
    ++p.entries;
    switch (table[off]) {
      case 0:
        p.processors.push_back({table[off + 1], table[off + 3]});
        off += 20;
        break;
      case 1:
        p.buses.push_back(GetStr(table, off + 2, 6));
        off += 8;
        break;
      case 2:
        p.ioapic_ids.push_back(table[off + 1]);
        p.ioapic_addrs.push_back(Get32(table, off + 4));
        off += 8;
        break;
      case 3:
        p.io_interrupts.push_back(
            {table[off + 1], table[off + 4], table[off + 5], table[off + 6], table[off + 7]});
        off += 8;
        break;
      case 4:
        p.local_interrupts.push_back({table[off + 1], table[off + 6], table[off + 7]});
        off += 8;
        break;
      default:
        ADD_FAILURE() << "unknown entry type " << int{table[off]} << " at " << off;
        return p;
    }
  }
  EXPECT_EQ(off, table.size());
  return p;
}

MpTableBytes Build(uint32_t vcpus, uint64_t table_addr = kMpTableAddr) {
  absl::StatusOr<MpTableBytes> mp = BuildMpTable(vcpus, table_addr);
  if (!mp.ok()) {
    ADD_FAILURE() << mp.status();
    std::abort();
  }
  return *mp;
}

TEST(MpChecksumTest, SumsBytesModulo256) {
  EXPECT_EQ(MpChecksum({}), 0);
  EXPECT_EQ(MpChecksum({1, 2, 3}), 6);
  EXPECT_EQ(MpChecksum({0xff, 0x02}), 1);
}

TEST(MpTableTest, FloatingPointer) {
  const MpTableBytes mp = Build(4, 0x9f000);
  const std::vector<uint8_t>& fp = mp.floating_pointer;
  ASSERT_EQ(fp.size(), 16u);
  EXPECT_EQ(GetStr(fp, 0, 4), "_MP_");
  EXPECT_EQ(Get32(fp, 4), 0x9f000u);
  EXPECT_EQ(fp[8], 1);  // length in paragraphs
  EXPECT_EQ(fp[9], 4);  // spec 1.4
  EXPECT_EQ(MpChecksum(fp), 0);
  for (size_t i = 11; i < 16; ++i) EXPECT_EQ(fp[i], 0) << i;  // no default configuration
  // The pointer follows the table address given.
  const MpTableBytes other = Build(4, 0x12340);
  EXPECT_EQ(Get32(other.floating_pointer, 4), 0x12340u);
  EXPECT_EQ(MpChecksum(other.floating_pointer), 0);
}

TEST(MpTableTest, ConfigurationTableHeader) {
  const MpTableBytes mp = Build(4);
  const std::vector<uint8_t>& t = mp.config_table;
  EXPECT_EQ(GetStr(t, 0, 4), "PCMP");
  EXPECT_EQ(Get16(t, 4), t.size());
  EXPECT_EQ(t[6], 4);
  EXPECT_EQ(MpChecksum(t), 0);
  EXPECT_EQ(Get32(t, 36), kLapicAddr);
  EXPECT_EQ(Get16(t, 40), 0);  // no extended table
  EXPECT_EQ(Get16(t, 34), 4 + 1 + 1 + 24 + 2);
}

TEST(MpTableTest, EntryCountAndSizeForSeveralVcpuCounts) {
  for (uint32_t n : {1u, 2u, 4u, 17u, kMaxVcpus}) {
    const MpTableBytes mp = Build(n);
    const std::vector<uint8_t>& t = mp.config_table;
    EXPECT_EQ(MpChecksum(t), 0) << n;
    EXPECT_EQ(MpChecksum(mp.floating_pointer), 0) << n;
    EXPECT_EQ(Get16(t, 34), n + 1 + 1 + kIoapicPins + 2) << n;
    EXPECT_EQ(t.size(), 44 + 20 * n + 8 * (1 + 1 + kIoapicPins + 2)) << n;
    EXPECT_LE(kMpTableAddr + t.size(), kMpFloatingPointerAddr) << n;  // fits before the pointer
    const Parsed p = ParseEntries(t);
    EXPECT_EQ(p.entries, Get16(t, 34)) << n;
    EXPECT_EQ(p.processors.size(), n);
  }
}

TEST(MpTableTest, ProcessorEntries) {
  const Parsed p = ParseEntries(Build(4).config_table);
  ASSERT_EQ(p.processors.size(), 4u);
  for (uint8_t i = 0; i < 4; ++i) {
    EXPECT_EQ(p.processors[i].apic_id, i);
    EXPECT_TRUE(p.processors[i].flags & 0x01) << int{i};  // enabled
    EXPECT_EQ((p.processors[i].flags & 0x02) != 0, i == 0) << int{i};  // BSP only on 0
  }
}

TEST(MpTableTest, BusAndIoapic) {
  for (uint32_t n : {1u, 8u, kMaxVcpus}) {
    const Parsed p = ParseEntries(Build(n).config_table);
    EXPECT_EQ(p.buses, std::vector<std::string>{"ISA   "});
    ASSERT_EQ(p.ioapic_ids.size(), 1u);
    EXPECT_EQ(p.ioapic_addrs[0], kIoapicAddr);
    std::set<uint8_t> apic_ids;
    for (const auto& proc : p.processors) apic_ids.insert(proc.apic_id);
    EXPECT_EQ(apic_ids.size(), n);  // distinct
    EXPECT_EQ(apic_ids.count(p.ioapic_ids[0]), 0u) << n;
  }
}

TEST(MpTableTest, InterruptEntries) {
  const Parsed p = ParseEntries(Build(2).config_table);
  ASSERT_EQ(p.io_interrupts.size(), kIoapicPins);
  for (uint32_t pin = 0; pin < kIoapicPins; ++pin) {
    const auto& e = p.io_interrupts[pin];
    EXPECT_EQ(e.type, 0) << pin;  // INT
    EXPECT_EQ(e.src_bus, 0) << pin;
    EXPECT_EQ(e.src_irq, pin);
    EXPECT_EQ(e.dst_ioapic, p.ioapic_ids[0]);
    EXPECT_EQ(e.dst_pin, pin);
  }
  ASSERT_EQ(p.local_interrupts.size(), 2u);
  EXPECT_EQ(p.local_interrupts[0].type, 3);  // ExtINT
  EXPECT_EQ(p.local_interrupts[0].dst_lint, 0);
  EXPECT_EQ(p.local_interrupts[1].type, 1);  // NMI
  EXPECT_EQ(p.local_interrupts[1].dst_lint, 1);
  for (const auto& l : p.local_interrupts) EXPECT_EQ(l.dst_apic, 0xff);
}

TEST(MpTableTest, InvalidVcpuCountsRefused) {
  EXPECT_EQ(BuildMpTable(0, kMpTableAddr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildMpTable(kMaxVcpus + 1, kMpTableAddr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildMpTable(1000, kMpTableAddr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MpTableTest, WriteMpTablePlacesBytesAtLayoutAddresses) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  ASSERT_TRUE(WriteMpTable(*mem, 3).ok());
  const MpTableBytes want = Build(3);
  std::vector<uint8_t> table(want.config_table.size());
  ASSERT_TRUE(mem->Read(kMpTableAddr, table.data(), table.size()).ok());
  EXPECT_EQ(table, want.config_table);
  std::vector<uint8_t> fp(16);
  ASSERT_TRUE(mem->Read(kMpFloatingPointerAddr, fp.data(), fp.size()).ok());
  EXPECT_EQ(fp, want.floating_pointer);
  EXPECT_EQ(Get32(fp, 4), kMpTableAddr);
  // Linux looks for the pointer on a 16-byte boundary in the last KiB of base memory.
  EXPECT_EQ(kMpFloatingPointerAddr % 16, 0u);
  EXPECT_EQ(kMpFloatingPointerAddr, kBaseMemoryEnd - 1024);
}

TEST(MpTableTest, WriteMpTableErrors) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(WriteMpTable(*mem, 0).code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<GuestMemory> small = GuestMemory::Create({{0, kMpTableAddr}});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(WriteMpTable(*small, 1).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace vessel::x86
