#include "tests/devices/fake_driver.h"

#include <atomic>
#include <cstdlib>
#include <utility>

namespace vessel::virtio::testing {
namespace {

GuestMemory MustCreateMemory() {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, FakeDriver::kMemSize}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

Queue MustCreateQueue(uint16_t max_size) {
  absl::StatusOr<Queue> q = Queue::Create(max_size);
  if (!q.ok()) {
    ADD_FAILURE() << q.status();
    std::abort();
  }
  return std::move(*q);
}

}  // namespace

FakeDriver::FakeDriver(uint16_t size, uint16_t max_size)
    : own_mem_(MustCreateMemory()), mem_(&*own_mem_), queue_(MustCreateQueue(max_size)), size_(size) {
  SetUpQueue();
}

FakeDriver::FakeDriver(GuestMemory& memory, uint64_t base, uint16_t size, uint16_t max_size)
    : mem_(&memory),
      base_(base),
      queue_(MustCreateQueue(max_size)),
      size_(size),
      next_indirect_(base + kIndirectArea),
      next_data_(base + kDataArea) {
  if (!memory.Contains(base, kMemSize)) {
    ADD_FAILURE() << "FakeDriver window at " << base << " is not wholly in the shared memory";
    std::abort();
  }
  SetUpQueue();
}

void FakeDriver::SetUpQueue() {
  const uint16_t size = size_;
  if (size > kMaxSize) {
    ADD_FAILURE() << "FakeDriver supports queues of at most " << kMaxSize << " entries";
    std::abort();
  }
  absl::Status s = queue_.SetSize(size);
  EXPECT_TRUE(s.ok()) << s;
  queue_.SetDescTable(base_ + kDescTable);
  queue_.SetAvailRing(base_ + kAvailRing);
  queue_.SetUsedRing(base_ + kUsedRing);
  queue_.SetReady(true);
}

void FakeDriver::WriteDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                           uint16_t next) {
  WriteTableDesc(base_ + kDescTable, index, addr, len, flags, next);
}

void FakeDriver::WriteTableDesc(uint64_t table_gpa, uint32_t index, uint64_t addr, uint32_t len,
                                uint16_t flags, uint16_t next) {
  vring_desc d{};
  d.addr = addr;
  d.len = len;
  d.flags = flags;
  d.next = next;
  Write(table_gpa + uint64_t{index} * sizeof(vring_desc), d);
}

uint64_t FakeDriver::AllocData(uint64_t len) {
  const uint64_t gpa = next_data_;
  next_data_ = (next_data_ + len + 15) & ~uint64_t{15};
  EXPECT_LE(next_data_, base_ + kMemSize) << "FakeDriver data area exhausted";
  absl::Status s = mem_->Fill(gpa, 0, len);
  EXPECT_TRUE(s.ok()) << s;
  return gpa;
}

uint64_t FakeDriver::AllocIndirectTable(uint32_t entries) {
  const uint64_t gpa = next_indirect_;
  const uint64_t len = uint64_t{entries} * sizeof(vring_desc);
  next_indirect_ += len;
  EXPECT_LE(next_indirect_, base_ + kDataArea) << "FakeDriver indirect area exhausted";
  absl::Status s = mem_->Fill(gpa, 0, len);
  EXPECT_TRUE(s.ok()) << s;
  return gpa;
}

namespace {

std::vector<Descriptor> WriteBufs(FakeDriver& d, uint64_t table, uint32_t first,
                                  const std::vector<Buf>& bufs) {
  std::vector<Descriptor> out;
  for (size_t i = 0; i < bufs.size(); ++i) {
    const uint64_t addr = d.AllocData(bufs[i].len);
    uint16_t flags = bufs[i].write ? VRING_DESC_F_WRITE : 0;
    const bool last = i + 1 == bufs.size();
    if (!last) flags |= VRING_DESC_F_NEXT;
    d.WriteTableDesc(table, first + static_cast<uint32_t>(i), addr, bufs[i].len, flags,
                     last ? 0 : static_cast<uint16_t>(first + i + 1));
    out.push_back(Descriptor{addr, bufs[i].len, bufs[i].write});
  }
  return out;
}

}  // namespace

std::vector<Descriptor> FakeDriver::WriteChain(uint16_t first, const std::vector<Buf>& bufs) {
  return WriteBufs(*this, base_ + kDescTable, first, bufs);
}

std::vector<Descriptor> FakeDriver::WriteIndirectChain(uint16_t index,
                                                       const std::vector<Buf>& bufs) {
  const uint32_t n = static_cast<uint32_t>(bufs.size());
  const uint64_t table = AllocIndirectTable(n);
  std::vector<Descriptor> out = WriteBufs(*this, table, 0, bufs);
  WriteDesc(index, table, n * static_cast<uint32_t>(sizeof(vring_desc)), VRING_DESC_F_INDIRECT);
  return out;
}

std::optional<DescriptorChain> FakeDriver::PopChain() {
  absl::StatusOr<std::optional<DescriptorChain>> c = queue_.Pop(*mem_);
  if (!c.ok()) {
    ADD_FAILURE() << "Pop: " << c.status();
    return std::nullopt;
  }
  EXPECT_TRUE(c->has_value()) << "Pop: no chain available";
  return std::move(*c);
}

void FakeDriver::Publish(uint16_t head) {
  SetAvailEntry(static_cast<uint16_t>(avail_idx_ % size_), head);
  std::atomic_thread_fence(std::memory_order_release);
  SetAvailIdx(static_cast<uint16_t>(avail_idx_ + 1));
}

void FakeDriver::SetAvailIdx(uint16_t idx) {
  avail_idx_ = idx;
  Write<uint16_t>(base_ + kAvailRing + 2, idx);
}

void FakeDriver::SetAvailEntry(uint16_t slot, uint16_t head) {
  Write<uint16_t>(base_ + kAvailRing + 4 + 2 * uint64_t{slot}, head);
}

void FakeDriver::SetAvailFlags(uint16_t flags) { Write<uint16_t>(base_ + kAvailRing, flags); }

void FakeDriver::SetUsedEvent(uint16_t used_event) {
  Write<uint16_t>(base_ + kAvailRing + 4 + 2 * uint64_t{size_}, used_event);
}

uint16_t FakeDriver::UsedIdx() { return Read<uint16_t>(base_ + kUsedRing + 2); }

uint16_t FakeDriver::UsedFlags() { return Read<uint16_t>(base_ + kUsedRing); }

vring_used_elem FakeDriver::UsedElem(uint16_t slot) {
  return Read<vring_used_elem>(base_ + kUsedRing + 4 + sizeof(vring_used_elem) * uint64_t{slot});
}

uint16_t FakeDriver::AvailEvent() {
  return Read<uint16_t>(base_ + kUsedRing + 4 + sizeof(vring_used_elem) * uint64_t{size_});
}

}  // namespace vessel::virtio::testing
