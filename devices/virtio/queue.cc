#include "devices/virtio/queue.h"

#include <atomic>
#include <bit>
#include <cstddef>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/virtio/virtio_ring.h"
#include "vmm/base/errors.h"

namespace vessel::virtio {
namespace {

static_assert(std::endian::native == std::endian::little);

// Split-ring layout (virtio 1.2 2.7): the UAPI structs give the offsets, the event-index fields
// sit right after each ring's last entry.
constexpr uint64_t kAvailFlags = offsetof(vring_avail, flags);
constexpr uint64_t kAvailIdx = offsetof(vring_avail, idx);
constexpr uint64_t kAvailRing = offsetof(vring_avail, ring);
constexpr uint64_t kUsedFlags = offsetof(vring_used, flags);
constexpr uint64_t kUsedIdx = offsetof(vring_used, idx);
constexpr uint64_t kUsedRing = offsetof(vring_used, ring);
static_assert(kAvailIdx == 2 && kAvailRing == 4 && kUsedIdx == 2 && kUsedRing == 4);
static_assert(sizeof(vring_used_elem) == 8);

std::string Hex(uint64_t v) { return absl::StrFormat("%#x", v); }

bool ValidSize(uint16_t size, uint16_t max) {
  return size != 0 && std::has_single_bit(size) && size <= max;
}

absl::Status CheckRing(const GuestMemory& memory, absl::string_view name, uint64_t gpa,
                       uint64_t align, uint64_t bytes) {
  if (gpa % align != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue ", name, " at ", Hex(gpa), " is not ", align, "-byte aligned"));
  }
  if (!memory.Contains(gpa, bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue ", name, " ", Hex(gpa), "+",
                                                   Hex(bytes), " is not wholly in guest RAM"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Queue> Queue::Create(uint16_t max_size) {
  if (!ValidSize(max_size, kMaxQueueSize)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtqueue max size ", max_size, " is not a non-zero power of two <= ", kMaxQueueSize));
  }
  return Queue(max_size);
}

uint64_t Queue::DescTableBytes(uint16_t size) { return sizeof(vring_desc) * uint64_t{size}; }
// flags, idx, ring[size], used_event
uint64_t Queue::AvailRingBytes(uint16_t size) { return kAvailRing + 2 * uint64_t{size} + 2; }
// flags, idx, ring[size], avail_event
uint64_t Queue::UsedRingBytes(uint16_t size) {
  return kUsedRing + sizeof(vring_used_elem) * uint64_t{size} + 2;
}

absl::Status Queue::SetSize(uint16_t size) {
  if (!ValidSize(size, max_size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue size ", size, " is not a non-zero power of two <= ", max_size_));
  }
  size_ = size;
  return absl::OkStatus();
}

absl::Status Queue::Validate(const GuestMemory& memory) const {
  if (!ValidSize(size_, max_size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue size ", size_, " is not a non-zero power of two <= ", max_size_));
  }
  VESSEL_RETURN_IF_ERROR(CheckRing(memory, "descriptor table", desc_table_, VRING_DESC_ALIGN_SIZE,
                                   DescTableBytes(size_)));
  VESSEL_RETURN_IF_ERROR(
      CheckRing(memory, "avail ring", avail_ring_, VRING_AVAIL_ALIGN_SIZE, AvailRingBytes(size_)));
  VESSEL_RETURN_IF_ERROR(
      CheckRing(memory, "used ring", used_ring_, VRING_USED_ALIGN_SIZE, UsedRingBytes(size_)));
  return absl::OkStatus();
}

absl::StatusOr<uint16_t> Queue::ReadAvailIdx(const GuestMemory& memory) const {
  absl::StatusOr<uint16_t> idx = memory.ReadObj<uint16_t>(avail_ring_ + kAvailIdx);
  // Acquire: the ring entries and descriptors the driver wrote before bumping idx are read after.
  std::atomic_thread_fence(std::memory_order_acquire);
  return idx;
}

absl::StatusOr<uint16_t> Queue::Pending(const GuestMemory& memory) const {
  if (!ready_) return absl::FailedPreconditionError("virtqueue is not ready");
  VESSEL_ASSIGN_OR_RETURN(uint16_t avail_idx, ReadAvailIdx(memory));
  const uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
  if (pending > size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtqueue: driver moved avail idx to ", avail_idx, ", ", pending,
                     " entries ahead of the device's ", next_avail_, " (queue size ", size_, ")"));
  }
  return pending;
}

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop(const GuestMemory& memory) {
  VESSEL_ASSIGN_OR_RETURN(uint16_t pending, Pending(memory));
  if (pending == 0) return std::nullopt;
  const uint64_t entry = avail_ring_ + kAvailRing + 2 * static_cast<uint64_t>(next_avail_ % size_);
  VESSEL_ASSIGN_OR_RETURN(uint16_t head, memory.ReadObj<uint16_t>(entry));
  if (head >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue: avail ring entry ",
                                                   next_avail_ % size_, " holds head index ", head,
                                                   ", out of range (queue size ", size_, ")"));
  }
  ++next_avail_;
  return DescriptorChain(memory, desc_table_, size_, head);
}

absl::Status Queue::AddUsed(GuestMemory& memory, uint16_t head, uint32_t len) {
  if (!ready_) return absl::FailedPreconditionError("virtqueue is not ready");
  if (head >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue: used head index ", head,
                                                   " out of range (queue size ", size_, ")"));
  }
  vring_used_elem elem{};
  elem.id = head;
  elem.len = len;
  const uint64_t entry =
      used_ring_ + kUsedRing + sizeof(vring_used_elem) * static_cast<uint64_t>(next_used_ % size_);
  VESSEL_RETURN_IF_ERROR(memory.WriteObj(entry, elem));
  // Release: the element (and the buffer contents) are visible before the new idx.
  std::atomic_thread_fence(std::memory_order_release);
  const uint16_t new_idx = static_cast<uint16_t>(next_used_ + 1);
  VESSEL_RETURN_IF_ERROR(memory.WriteObj<uint16_t>(used_ring_ + kUsedIdx, new_idx));
  next_used_ = new_idx;
  return absl::OkStatus();
}

absl::Status Queue::AddUsedBatch(GuestMemory& memory, absl::Span<const UsedElement> elements) {
  if (!ready_) return absl::FailedPreconditionError("virtqueue is not ready");
  if (elements.size() > size_) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue: ", elements.size(),
                                                   " used elements at once, more than the queue size ",
                                                   size_));
  }
  for (const UsedElement& e : elements) {
    if (e.head >= size_) {
      return absl::InvalidArgumentError(absl::StrCat("virtqueue: used head index ", e.head,
                                                     " out of range (queue size ", size_, ")"));
    }
  }
  uint16_t idx = next_used_;
  for (const UsedElement& e : elements) {
    vring_used_elem elem{};
    elem.id = e.head;
    elem.len = e.len;
    const uint64_t entry =
        used_ring_ + kUsedRing + sizeof(vring_used_elem) * static_cast<uint64_t>(idx % size_);
    VESSEL_RETURN_IF_ERROR(memory.WriteObj(entry, elem));
    ++idx;
  }
  // Release: every element (and the buffer contents) is visible before the new idx.
  std::atomic_thread_fence(std::memory_order_release);
  VESSEL_RETURN_IF_ERROR(memory.WriteObj<uint16_t>(used_ring_ + kUsedIdx, idx));
  next_used_ = idx;
  return absl::OkStatus();
}

absl::StatusOr<bool> Queue::NeedsNotification(const GuestMemory& memory) {
  // Full fence: the used idx store must be visible before the driver's event index / flags are
  // read, or an interrupt the driver waits for could be skipped.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx_) {
    const uint64_t used_event_gpa = avail_ring_ + kAvailRing + 2 * uint64_t{size_};
    VESSEL_ASSIGN_OR_RETURN(uint16_t used_event, memory.ReadObj<uint16_t>(used_event_gpa));
    const uint16_t old = signalled_used_;
    signalled_used_ = next_used_;
    return vring_need_event(used_event, next_used_, old) != 0;
  }
  VESSEL_ASSIGN_OR_RETURN(uint16_t flags, memory.ReadObj<uint16_t>(avail_ring_ + kAvailFlags));
  signalled_used_ = next_used_;
  return (flags & VRING_AVAIL_F_NO_INTERRUPT) == 0;
}

absl::Status Queue::SetAvailEvent(GuestMemory& memory, uint16_t avail_idx) {
  const uint64_t avail_event_gpa =
      used_ring_ + kUsedRing + sizeof(vring_used_elem) * uint64_t{size_};
  return memory.WriteObj<uint16_t>(avail_event_gpa, avail_idx);
}

absl::StatusOr<bool> Queue::EnableNotification(GuestMemory& memory) {
  if (event_idx_) {
    VESSEL_RETURN_IF_ERROR(SetAvailEvent(memory, next_avail_));
  } else {
    VESSEL_RETURN_IF_ERROR(memory.WriteObj<uint16_t>(used_ring_ + kUsedFlags, 0));
  }
  // Full fence: the driver must see the request before we look for chains it added meanwhile.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  VESSEL_ASSIGN_OR_RETURN(uint16_t pending, Pending(memory));
  return pending != 0;
}

absl::Status Queue::DisableNotification(GuestMemory& memory) {
  if (event_idx_) return absl::OkStatus();
  return memory.WriteObj<uint16_t>(used_ring_ + kUsedFlags, VRING_USED_F_NO_NOTIFY);
}

snapshot::v1::QueueState Queue::SaveState() const {
  snapshot::v1::QueueState state;
  state.set_max_size(max_size_);
  state.set_size(size_);
  state.set_desc_table(desc_table_);
  state.set_avail_ring(avail_ring_);
  state.set_used_ring(used_ring_);
  state.set_ready(ready_);
  state.set_event_idx(event_idx_);
  state.set_next_avail(next_avail_);
  state.set_next_used(next_used_);
  state.set_signalled_used(signalled_used_);
  return state;
}

absl::Status Queue::RestoreState(const snapshot::v1::QueueState& state) {
  if (state.max_size() != max_size_) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue max_size ", state.max_size(),
                                                   " in the snapshot, this queue's is ", max_size_));
  }
  if (state.size() > kMaxQueueSize || !ValidSize(static_cast<uint16_t>(state.size()), max_size_)) {
    return absl::InvalidArgumentError(absl::StrCat("virtqueue size ", state.size(),
                                                   " in the snapshot is not a non-zero power of two <= ",
                                                   max_size_));
  }
  for (auto [name, value] : {std::pair<const char*, uint32_t>{"next_avail", state.next_avail()},
                             {"next_used", state.next_used()},
                             {"signalled_used", state.signalled_used()}}) {
    if (value > 0xffff) {
      return absl::InvalidArgumentError(
          absl::StrCat("virtqueue ", name, " ", value, " in the snapshot does not fit 16 bits"));
    }
  }
  size_ = static_cast<uint16_t>(state.size());
  desc_table_ = state.desc_table();
  avail_ring_ = state.avail_ring();
  used_ring_ = state.used_ring();
  ready_ = state.ready();
  event_idx_ = state.event_idx();
  next_avail_ = static_cast<uint16_t>(state.next_avail());
  next_used_ = static_cast<uint16_t>(state.next_used());
  signalled_used_ = static_cast<uint16_t>(state.signalled_used());
  return absl::OkStatus();
}

void Queue::Reset() {
  size_ = max_size_;
  desc_table_ = 0;
  avail_ring_ = 0;
  used_ring_ = 0;
  ready_ = false;
  event_idx_ = false;
  next_avail_ = 0;
  next_used_ = 0;
  signalled_used_ = 0;
}

}  // namespace vessel::virtio
