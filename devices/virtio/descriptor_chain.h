// DescriptorChain: one buffer a driver made available on a split virtqueue, and the only way a
// device sees guest buffers.
//
// A chain starts at a head index in the queue's descriptor table and follows VRING_DESC_F_NEXT; a
// descriptor with VRING_DESC_F_INDIRECT sends the walk into an indirect table. Everything the
// driver wrote is untrusted and checked as it is read:
//   - every buffer [addr, addr+len) lies wholly in guest RAM (no wrap-around);
//   - every next index is inside the table being walked;
//   - a walk visits at most as many descriptors per table as that table has entries (queue size for
//     the descriptor table, len/16 for an indirect table), so loops end in an error;
//   - an indirect table lies in RAM, its len is a non-zero multiple of 16 (and at most 65536
//     entries: indices are 16-bit), the indirect descriptor has no NEXT flag, and an indirect
//     table holds no indirect descriptor (so a chain has at most one);
//   - device-readable descriptors all come before device-writable ones.
// Errors are absl::Status (InvalidArgument / OutOfRange) naming the head, the descriptor index and
// the problem; an error is sticky: Next() keeps returning it. Guest memory is read only through
// GuestMemory; nothing here holds a pointer into guest RAM.
#ifndef VESSEL_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_
#define VESSEL_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_

#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::virtio {

// One validated buffer of a chain: [addr, addr+len) is in guest RAM.
struct Descriptor {
  uint64_t addr = 0;
  uint32_t len = 0;
  bool is_write = false;  // device-writable (VRING_DESC_F_WRITE); otherwise device-readable

  friend bool operator==(const Descriptor&, const Descriptor&) = default;
};

class DescriptorChain {
 public:
  // Most entries an indirect table may have: next indices are 16-bit.
  static constexpr uint32_t kMaxIndirectEntries = 65536;

  // `memory` must outlive the chain. Nothing is read until Next().
  DescriptorChain(const GuestMemory& memory, uint64_t desc_table_gpa, uint16_t queue_size,
                  uint16_t head_index);

  // The index to hand back with Queue::AddUsed.
  uint16_t head_index() const { return head_; }

  // The next buffer of the chain, std::nullopt after the last one, or an error (sticky).
  absl::StatusOr<std::optional<Descriptor>> Next();
  // Starts the walk again from the head (clears a previous error).
  void Rewind();

  // All buffers of the chain, walking from the head (independent of Next()'s position).
  absl::StatusOr<std::vector<Descriptor>> Collect() const;
  // Total bytes of the device-readable / device-writable buffers (walking from the head).
  absl::StatusOr<uint64_t> ReadableBytes() const;
  absl::StatusOr<uint64_t> WritableBytes() const;

 private:
  absl::Status Error(uint32_t index, absl::string_view problem) const;

  const GuestMemory* memory_;
  uint64_t desc_table_gpa_;
  uint16_t queue_size_;
  uint16_t head_;

  // Walk state.
  uint64_t table_gpa_ = 0;   // table being walked
  uint32_t table_len_ = 0;   // its number of entries
  uint32_t next_index_ = 0;  // index to read next in that table
  uint32_t visited_ = 0;     // descriptors read from that table
  bool in_indirect_ = false;
  bool seen_writable_ = false;
  bool done_ = false;
  absl::Status error_;
};

// Sums of a collected chain's buffer lengths.
uint64_t ReadableBytes(absl::Span<const Descriptor> descriptors);
uint64_t WritableBytes(absl::Span<const Descriptor> descriptors);

// Reads the device-readable buffers of a chain in order, as one byte stream.
class ChainReader {
 public:
  // Keeps the readable descriptors of `descriptors`; `memory` must outlive the reader.
  ChainReader(const GuestMemory& memory, absl::Span<const Descriptor> descriptors);
  // Collects `chain` (from its head) and keeps its readable buffers.
  static absl::StatusOr<ChainReader> Create(const GuestMemory& memory,
                                            const DescriptorChain& chain);

  // Copies the next `len` bytes into `dst`. When fewer than `len` bytes remain it fails with
  // OutOfRange and consumes nothing.
  absl::Status Read(void* dst, uint64_t len);
  absl::Status Skip(uint64_t len);
  template <typename T>
  absl::StatusOr<T> ReadObj() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status s = Read(&value, sizeof(T));
    if (!s.ok()) return s;
    return value;
  }

  uint64_t remaining() const { return remaining_; }
  uint64_t bytes_read() const { return consumed_; }

 private:
  absl::Status Advance(void* dst, uint64_t len);

  const GuestMemory* memory_;
  std::vector<Descriptor> buffers_;
  size_t index_ = 0;     // current buffer
  uint64_t offset_ = 0;  // offset inside it
  uint64_t remaining_ = 0;
  uint64_t consumed_ = 0;
};

// Writes into the device-writable buffers of a chain in order, as one byte stream.
class ChainWriter {
 public:
  // Keeps the writable descriptors of `descriptors`; `memory` must outlive the writer.
  ChainWriter(GuestMemory& memory, absl::Span<const Descriptor> descriptors);
  static absl::StatusOr<ChainWriter> Create(GuestMemory& memory, const DescriptorChain& chain);

  // Copies `len` bytes from `src` into the next writable bytes. When fewer than `len` bytes of
  // room remain it fails with OutOfRange and writes nothing.
  absl::Status Write(const void* src, uint64_t len);
  template <typename T>
  absl::Status WriteObj(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(&value, sizeof(T));
  }

  uint64_t remaining() const { return remaining_; }
  // What to report as the used length (Queue::AddUsed).
  uint64_t bytes_written() const { return written_; }

 private:
  GuestMemory* memory_;
  std::vector<Descriptor> buffers_;
  size_t index_ = 0;
  uint64_t offset_ = 0;
  uint64_t remaining_ = 0;
  uint64_t written_ = 0;
};

}  // namespace vessel::virtio

#endif  // VESSEL_DEVICES_VIRTIO_DESCRIPTOR_CHAIN_H_
