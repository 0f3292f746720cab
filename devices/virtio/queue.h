// Queue: the device side of one split virtqueue (virtio 1.2 section 2.7).
//
// The transport sets it up as the driver configures it (size, ring addresses, ready, negotiated
// VIRTIO_F_EVENT_IDX); a device then loops Pop() -> walk the DescriptorChain -> AddUsed() ->
// NeedsNotification() and raises the queue's interrupt when that says so.
//
// Every ring access goes through GuestMemory (bounds-checked ReadObj/WriteObj); no pointer into
// guest RAM is kept. The driver is untrusted: an index it published that is impossible (avail idx
// more than a queue size ahead, a head >= size) is an error, after which the device should stop
// using the queue (set DEVICE_NEEDS_RESET). Memory ordering against the driver on another CPU:
// acquire fence after reading avail->idx, release fence before publishing used->idx, full fence
// between publishing and reading the driver's event index/flags.
//
// Not thread-safe: one device thread owns a queue.
#ifndef VESSEL_DEVICES_VIRTIO_QUEUE_H_
#define VESSEL_DEVICES_VIRTIO_QUEUE_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "devices/virtio/descriptor_chain.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::virtio {

// One used-ring entry: a chain's head index and the bytes the device wrote into it.
struct UsedElement {
  uint16_t head = 0;
  uint32_t len = 0;
};

class Queue {
 public:
  // The largest queue size a split virtqueue may have.
  static constexpr uint16_t kMaxQueueSize = 32768;

  // `max_size` (what the device offers as QueueNumMax) must be a power of two <= kMaxQueueSize.
  static absl::StatusOr<Queue> Create(uint16_t max_size);

  // Bytes each ring occupies for a queue of `size` entries (including the event-index fields).
  static uint64_t DescTableBytes(uint16_t size);
  static uint64_t AvailRingBytes(uint16_t size);
  static uint64_t UsedRingBytes(uint16_t size);

  // --- Driver configuration (written by the transport) ---
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  // Non-zero, a power of two, <= max_size(); otherwise InvalidArgument and the size is unchanged.
  absl::Status SetSize(uint16_t size);
  uint64_t desc_table() const { return desc_table_; }
  uint64_t avail_ring() const { return avail_ring_; }
  uint64_t used_ring() const { return used_ring_; }
  void SetDescTable(uint64_t gpa) { desc_table_ = gpa; }
  void SetAvailRing(uint64_t gpa) { avail_ring_ = gpa; }
  void SetUsedRing(uint64_t gpa) { used_ring_ = gpa; }
  bool ready() const { return ready_; }
  void SetReady(bool ready) { ready_ = ready; }
  bool event_idx() const { return event_idx_; }
  // Whether VIRTIO_F_EVENT_IDX (VIRTIO_RING_F_EVENT_IDX) was negotiated.
  void SetEventIdx(bool enabled) { event_idx_ = enabled; }

  // OK when the size is valid, the rings are aligned (desc 16, avail 2, used 4) and each lies
  // wholly in RAM; otherwise InvalidArgument saying which check failed.
  absl::Status Validate(const GuestMemory& memory) const;
  bool IsValid(const GuestMemory& memory) const { return Validate(memory).ok(); }

  // --- Device side ---
  // The next chain the driver made available, std::nullopt when there is none. Errors: queue not
  // ready (FailedPrecondition), avail idx more than size() ahead, head index >= size(), a ring
  // outside RAM. The chain's descriptors are validated as the device walks it.
  absl::StatusOr<std::optional<DescriptorChain>> Pop(const GuestMemory& memory);
  // Number of chains available and not popped yet (reads avail->idx; same checks as Pop).
  absl::StatusOr<uint16_t> Pending(const GuestMemory& memory) const;
  // Returns chain `head` to the driver with `len` bytes written: writes the used element, then
  // (release) the used idx.
  absl::Status AddUsed(GuestMemory& memory, uint16_t head, uint32_t len);
  // Returns several chains at once, in order: writes every used element, then (release) the used
  // idx once, so the driver sees all of them or none (a virtio-net packet spread over mergeable rx
  // buffers, whose first buffer says how many follow). At most size() elements; every head is
  // checked before anything is written.
  absl::Status AddUsedBatch(GuestMemory& memory, absl::Span<const UsedElement> elements);

  // Whether the driver wants an interrupt for the used entries added since the last call. With
  // event_idx: vring_need_event(used_event, used idx, used idx at the last call); otherwise: the
  // driver did not set VRING_AVAIL_F_NO_INTERRUPT.
  absl::StatusOr<bool> NeedsNotification(const GuestMemory& memory);

  // Driver-notification suppression (device side). SetAvailEvent writes avail_event (the used
  // ring's tail): the driver kicks when its avail idx passes `avail_idx`. Needs event_idx.
  absl::Status SetAvailEvent(GuestMemory& memory, uint16_t avail_idx);
  // Asks for a kick on the next available chain (event_idx: avail_event = next avail index;
  // otherwise clears VRING_USED_F_NO_NOTIFY), then re-reads avail->idx after a full fence: true
  // when chains arrived meanwhile (the device must process them; no kick will come for them).
  absl::StatusOr<bool> EnableNotification(GuestMemory& memory);
  // Asks the driver not to kick (without event_idx: sets VRING_USED_F_NO_NOTIFY; with event_idx
  // nothing: avail_event simply stays behind).
  absl::Status DisableNotification(GuestMemory& memory);

  // Back to the state after Create(): size = max_size, addresses 0, not ready, no event_idx,
  // indices 0.
  void Reset();

  uint16_t next_avail() const { return next_avail_; }
  uint16_t next_used() const { return next_used_; }

  // Gives back the last `count` chains popped and not returned (AddUsed) yet: the next Pop()s see
  // them again. The driver does not reuse an avail ring slot before its chain is used, so the
  // entries are still there. For a device that holds popped chains when it pauses for a snapshot
  // (a restored device would otherwise never return them). `count` <= chains popped since.
  void UndoPop(uint16_t count) { next_avail_ = static_cast<uint16_t>(next_avail_ - count); }

  // --- Snapshot (vmm/snapshot) ---
  // Everything above: configuration, ready, event_idx and the three ring indices.
  snapshot::v1::QueueState SaveState() const;
  // Back to a saved state, on a queue with the same max_size. InvalidArgument naming the field
  // when max_size differs, size is not a power of two <= max_size, or an index does not fit 16
  // bits; the queue is unchanged then. Ring addresses are not checked here (Validate does that).
  absl::Status RestoreState(const snapshot::v1::QueueState& state);

 private:
  explicit Queue(uint16_t max_size) : max_size_(max_size) { Reset(); }
  absl::StatusOr<uint16_t> ReadAvailIdx(const GuestMemory& memory) const;

  uint16_t max_size_;
  uint16_t size_ = 0;
  uint64_t desc_table_ = 0;
  uint64_t avail_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool ready_ = false;
  bool event_idx_ = false;

  uint16_t next_avail_ = 0;      // next avail ring entry to pop (free-running)
  uint16_t next_used_ = 0;       // next used ring entry to fill = the published used idx
  uint16_t signalled_used_ = 0;  // used idx when NeedsNotification last ran
};

}  // namespace vessel::virtio

#endif  // VESSEL_DEVICES_VIRTIO_QUEUE_H_
