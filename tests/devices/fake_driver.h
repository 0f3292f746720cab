// FakeDriver: the driver side of one split virtqueue, for tests. Owns 1 MiB of guest RAM at gpa 0
// and a Queue configured (size, ring addresses, ready) as a driver would, lays out descriptor
// chains (direct and indirect) with data buffers, publishes them in the avail ring and reads back
// what the device wrote to the used ring. Every guest access goes through GuestMemory; failures
// are test failures. Several drivers can share one GuestMemory (a device with several queues):
// each then lays out its rings and buffers in its own kMemSize window at a base address.
#ifndef VESSEL_TESTS_DEVICES_FAKE_DRIVER_H_
#define VESSEL_TESTS_DEVICES_FAKE_DRIVER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_ring.h"
#include "gtest/gtest.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::virtio::testing {

// One buffer of a chain the driver builds.
struct Buf {
  uint32_t len;
  bool write;  // device-writable
};

class FakeDriver {
 public:
  static constexpr uint64_t kMemSize = 1 << 20;
  static constexpr uint64_t kDescTable = 0x1000;      // up to 1024 entries (16 KiB)
  static constexpr uint64_t kAvailRing = 0x9000;      // 6 + 2 * 1024 bytes
  static constexpr uint64_t kUsedRing = 0xb000;       // 6 + 8 * 1024 bytes
  static constexpr uint64_t kIndirectArea = 0x10000;  // indirect tables, bump-allocated
  static constexpr uint64_t kDataArea = 0x40000;      // data buffers, bump-allocated
  static constexpr uint16_t kMaxSize = 1024;

  // A queue of `size` entries (device maximum `max_size`), rings laid out and ready.
  explicit FakeDriver(uint16_t size, uint16_t max_size = 256);
  // Same, in `memory` (which must outlive the driver) at [base, base + kMemSize): every address
  // above is offset by `base`.
  FakeDriver(GuestMemory& memory, uint64_t base, uint16_t size, uint16_t max_size = 256);
  FakeDriver(const FakeDriver&) = delete;
  FakeDriver& operator=(const FakeDriver&) = delete;

  GuestMemory& mem() { return *mem_; }
  // Where this driver's window starts (0 unless constructed with a base).
  uint64_t base() const { return base_; }
  Queue& queue() { return queue_; }
  uint16_t size() const { return size_; }

  // Raw descriptor writes: in the queue's table, or in any table at `table_gpa`.
  void WriteDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0);
  void WriteTableDesc(uint64_t table_gpa, uint32_t index, uint64_t addr, uint32_t len,
                      uint16_t flags, uint16_t next = 0);

  // Fresh, zero-filled data buffer / indirect table area.
  uint64_t AllocData(uint64_t len);
  uint64_t AllocIndirectTable(uint32_t entries);

  // Writes `bufs` as a chain in consecutive table entries first, first+1, ... (each buffer freshly
  // allocated); returns the descriptors a device should see.
  std::vector<Descriptor> WriteChain(uint16_t first, const std::vector<Buf>& bufs);
  // Writes `bufs` into a new indirect table and an INDIRECT descriptor at `index` pointing to it.
  std::vector<Descriptor> WriteIndirectChain(uint16_t index, const std::vector<Buf>& bufs);

  // Avail ring: publish `head` (entry, then release, then idx + 1), or poke fields directly.
  void Publish(uint16_t head);
  uint16_t avail_idx() const { return avail_idx_; }
  void SetAvailIdx(uint16_t idx);
  void SetAvailEntry(uint16_t slot, uint16_t head);
  void SetAvailFlags(uint16_t flags);
  void SetUsedEvent(uint16_t used_event);

  // Used ring as the device left it.
  uint16_t UsedIdx();
  uint16_t UsedFlags();
  vring_used_elem UsedElem(uint16_t slot);
  uint16_t AvailEvent();

  // Pops the next chain from the queue; a test failure (and std::nullopt) when there is none.
  std::optional<DescriptorChain> PopChain();

  template <typename T>
  T Read(uint64_t gpa);
  template <typename T>
  void Write(uint64_t gpa, const T& value);

 private:
  void SetUpQueue();

  std::optional<GuestMemory> own_mem_;
  GuestMemory* mem_;
  uint64_t base_ = 0;
  Queue queue_;
  uint16_t size_;
  uint16_t avail_idx_ = 0;
  uint64_t next_indirect_ = kIndirectArea;
  uint64_t next_data_ = kDataArea;
};

// The status' message as a std::string (for gmock's HasSubstr).
inline std::string Msg(const absl::Status& s) { return std::string(s.message()); }

template <typename T>
T FakeDriver::Read(uint64_t gpa) {
  absl::StatusOr<T> v = mem_->ReadObj<T>(gpa);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : T{};
}

template <typename T>
void FakeDriver::Write(uint64_t gpa, const T& value) {
  absl::Status s = mem_->WriteObj(gpa, value);
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace vessel::virtio::testing

#endif  // VESSEL_TESTS_DEVICES_FAKE_DRIVER_H_
