// libFuzzer target: split virtqueues and descriptor chains (devices/virtio/queue.h,
// descriptor_chain.h) on guest memory the fuzzer writes: descriptor table, indirect tables, avail
// ring and buffers are all fuzzed. Every head of the table is walked with Next() (and compared
// with Collect() and the byte counts), every chain is read whole through a ChainReader and written
// whole through a ChainWriter in chunks of fuzzed sizes; then the device side of the queue runs
// as a device would (Pop, AddUsed, AddUsedBatch, NeedsNotification, Enable/DisableNotification).
// Invariants checked: no walk visits more descriptors than its tables hold, the readers and writers
// move exactly the bytes the chain says it has, nothing touches memory outside guest RAM (ASan).
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_descriptor_chain_fuzzer
// Run:           tests/fuzz/run_fuzzers.sh (all targets) or
//                build-fuzz/tests/fuzz/vessel_descriptor_chain_fuzzer tests/fuzz/corpus/descriptor_chain
//
// Input: byte 0 = queue size (bits 0-2: 1, 2, 4, 8, 16), VIRTIO_F_EVENT_IDX (bit 3), chunk-size
// scale (bits 4-7); the rest is written at guest address 0 of a 16 KiB RAM region (a second one
// at 0x8000 leaves a hole between). Descriptor table at 0x0, avail ring at 0x100, used ring at
// 0x200: short inputs reach every ring field.
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/queue.h"

namespace {

using vessel::GuestMemory;
using vessel::virtio::ChainReader;
using vessel::virtio::ChainWriter;
using vessel::virtio::Descriptor;
using vessel::virtio::DescriptorChain;
using vessel::virtio::Queue;

constexpr uint64_t kRegion0 = 0x0, kRegion1 = 0x8000, kRegionBytes = 0x4000;
// Total RAM / 16: the most descriptors a table in RAM can hold.
constexpr uint64_t kMaxTableEntries = 2 * kRegionBytes / 16;
// Bytes copied per chain before the rest is skipped (a chain may name the same RAM many times).
constexpr uint64_t kCopyBudget = 256 * 1024;

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "descriptor_chain_fuzzer: invariant broken: %s\n", what);
    abort();
  }
}

// Chunk sizes derived from the input, deterministic.
class Chunks {
 public:
  Chunks(const uint8_t* data, size_t size, unsigned scale) : data_(data), size_(size), scale_(scale) {}
  uint64_t Next() {
    const uint8_t b = size_ == 0 ? 7 : data_[pos_++ % size_];
    return 1 + (uint64_t{b} << (scale_ % 8));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  unsigned scale_;
};

void WalkChain(GuestMemory& memory, const DescriptorChain& original, uint16_t queue_size,
               Chunks& chunks) {
  // Next(): bounded, consistent with Collect() and the byte counts.
  DescriptorChain chain = original;
  std::vector<Descriptor> walked;
  absl::Status error;
  for (;;) {
    absl::StatusOr<std::optional<Descriptor>> d = chain.Next();
    if (!d.ok()) {
      error = d.status();
      Check(!chain.Next().ok(), "an error is sticky");
      break;
    }
    if (!d->has_value()) {
      Check(chain.Next().ok() && !chain.Next()->has_value(), "the end is sticky");
      break;
    }
    Check(memory.Contains((*d)->addr, (*d)->len), "a buffer lies in RAM");
    walked.push_back(**d);
    Check(walked.size() <= uint64_t{queue_size} + kMaxTableEntries, "a walk is bounded");
  }
  absl::StatusOr<std::vector<Descriptor>> collected = original.Collect();
  Check(collected.ok() == error.ok(), "Collect() fails exactly when Next() does");
  chain.Rewind();
  absl::StatusOr<std::optional<Descriptor>> first = chain.Next();
  Check(first.ok() == (error.ok() || !walked.empty()), "Rewind() starts again");
  if (!collected.ok()) {
    Check(!ChainReader::Create(memory, original).ok(), "no reader on a bad chain");
    Check(!ChainWriter::Create(memory, original).ok(), "no writer on a bad chain");
    return;
  }
  Check(*collected == walked, "Collect() == Next() sequence");
  bool seen_write = false;
  for (const Descriptor& d : walked) {
    Check(!(seen_write && !d.is_write), "readable buffers come first");
    seen_write = seen_write || d.is_write;
  }
  const uint64_t readable = vessel::virtio::ReadableBytes(walked);
  const uint64_t writable = vessel::virtio::WritableBytes(walked);
  Check(original.ReadableBytes().value() == readable, "ReadableBytes()");
  Check(original.WritableBytes().value() == writable, "WritableBytes()");

  // Read everything (copying up to the budget, skipping the rest).
  ChainReader reader = ChainReader::Create(memory, original).value();
  Check(reader.remaining() == readable, "reader sees the readable bytes");
  std::vector<uint8_t> buf;
  uint64_t copied = 0;
  while (reader.remaining() > 0) {
    uint64_t n = chunks.Next();
    if (n > reader.remaining()) {
      Check(!reader.Read(nullptr, n).ok(), "an overlong read fails");
      n = reader.remaining();
    }
    if (copied < kCopyBudget) {
      buf.resize(n);
      Check(reader.Read(buf.data(), n).ok(), "read");
      copied += n;
    } else {
      Check(reader.Skip(n).ok(), "skip");
    }
  }
  Check(reader.bytes_read() == readable, "reader consumed every readable byte");
  Check(!reader.ReadObj<uint8_t>().ok(), "nothing after the end");

  // Write everything (up to the budget).
  ChainWriter writer = ChainWriter::Create(memory, original).value();
  Check(writer.remaining() == writable, "writer sees the writable bytes");
  uint64_t written = 0;
  while (writer.remaining() > 0 && written < kCopyBudget) {
    uint64_t n = chunks.Next();
    if (n > writer.remaining()) {
      buf.assign(n, 0xee);
      Check(!writer.Write(buf.data(), n).ok(), "an overlong write fails");
      n = writer.remaining();
    }
    buf.assign(n, static_cast<uint8_t>(n));
    Check(writer.Write(buf.data(), n).ok(), "write");
    written += n;
  }
  Check(writer.bytes_written() == written, "writer counts its bytes");
  if (writer.remaining() == 0) Check(written == writable, "writer filled every writable byte");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static GuestMemory* memory = new GuestMemory(
      GuestMemory::Create({{kRegion0, kRegionBytes}, {kRegion1, kRegionBytes}}).value());
  memory->Fill(kRegion0, 0, kRegionBytes).IgnoreError();
  memory->Fill(kRegion1, 0, kRegionBytes).IgnoreError();
  if (size == 0) return 0;
  const uint8_t config = data[0];
  const uint16_t queue_size = static_cast<uint16_t>(1u << ((config & 7) % 5));
  const uint8_t* ram = data + 1;
  const size_t ram_bytes = std::min<size_t>(size - 1, kRegionBytes);
  memory->Write(kRegion0, ram, ram_bytes).IgnoreError();
  Chunks chunks(data, size, config >> 4);

  // Every head the table has, whatever the avail ring says.
  for (uint16_t head = 0; head < queue_size; ++head) {
    WalkChain(*memory, DescriptorChain(*memory, 0x0, queue_size, head), queue_size, chunks);
  }
  // A head out of range is an error, not a read.
  DescriptorChain bad(*memory, 0x0, queue_size, queue_size);
  Check(!bad.Next().ok(), "head out of range");

  // The device side of the queue, on the RAM as the fuzzer wrote it (restored: the walks above
  // wrote into the chains' writable buffers).
  memory->Fill(kRegion0, 0, kRegionBytes).IgnoreError();
  memory->Write(kRegion0, ram, ram_bytes).IgnoreError();
  Queue queue = Queue::Create(16).value();
  Check(queue.SetSize(queue_size).ok(), "size");
  queue.SetDescTable(0x0);
  queue.SetAvailRing(0x100);
  queue.SetUsedRing(0x200);
  queue.SetEventIdx(config & 8);
  Check(!queue.Pop(*memory).ok(), "Pop() before ready fails");
  queue.SetReady(true);
  Check(queue.Validate(*memory).ok(), "this layout is valid");
  std::vector<vessel::virtio::UsedElement> batch;
  for (int i = 0; i < 2 * queue_size + 2; ++i) {
    absl::StatusOr<std::optional<DescriptorChain>> chain = queue.Pop(*memory);
    if (!chain.ok()) break;  // a corrupt ring: a device stops here (DEVICE_NEEDS_RESET)
    if (!chain->has_value()) {
      absl::StatusOr<bool> again = queue.EnableNotification(*memory);
      if (again.ok() && *again) continue;
      break;
    }
    Check((*chain)->head_index() < queue_size, "popped head in range");
    absl::StatusOr<uint64_t> writable = (*chain)->WritableBytes();
    const uint32_t len = writable.ok() ? static_cast<uint32_t>(std::min<uint64_t>(*writable, 1u << 20)) : 0;
    if (i % 2 == 0) {
      Check(queue.AddUsed(*memory, (*chain)->head_index(), len).ok(), "AddUsed");
    } else {
      batch.push_back({(*chain)->head_index(), len});
    }
    queue.DisableNotification(*memory).IgnoreError();
  }
  Check(queue.AddUsedBatch(*memory, batch).ok(), "AddUsedBatch");
  Check(!queue.AddUsed(*memory, queue_size, 0).ok(), "used head out of range");
  queue.NeedsNotification(*memory).IgnoreError();
  queue.SetAvailEvent(*memory, queue.next_avail()).IgnoreError();
  queue.Pending(*memory).IgnoreError();
  return 0;
}
