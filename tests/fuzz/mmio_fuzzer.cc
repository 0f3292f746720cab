// libFuzzer target: virtio-mmio register access sequences (devices/virtio/mmio_transport.h) against
// a simple in-memory VirtioDevice: reads and writes of any width at any offset of the 4 KiB window
// (registers, device config space), status/feature/queue state machines, QueueNotify that makes the
// device walk its queues synchronously, interrupt acknowledgement, resets at any point, and guest
// RAM writes in between so queues can be laid out and used. Checks: magic/version/device id read
// back right, a reset really resets, the device is activated with exactly the queue sizes the
// driver configured (bad QueueNum writes change nothing), no crash/leak/UB whatever the order.
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_mmio_fuzzer
// Run:           tests/fuzz/run_fuzzers.sh (all targets) or
//                build-fuzz/tests/fuzz/vessel_mmio_fuzzer tests/fuzz/corpus/mmio
//
// Input: a sequence of 6-byte ops [kind][offset byte][value u32 little endian]. kind bits 0-1:
// width 4, 1, 2, 8 bytes; bit 2: write (else read); bits 3-4: where: 0 register offset*4 (0..0x3fc,
// config included), 1 config space 0x100 + offset (any alignment), 2 raw offset (0..0xff, any
// alignment), 3 a guest RAM write of the value at (offset * 16 + bits 5-7 * 2) (the first 4 KiB
// of RAM: rings and buffers of queues placed there). 8-byte accesses repeat the value twice.
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/mmio_transport.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/virtio_ring.h"

namespace {

using vessel::GuestMemory;
using namespace vessel::virtio;

constexpr uint32_t kDeviceType = 0x2a;
constexpr uint64_t kMemBytes = 64 * 1024;
constexpr uint16_t kQueueMax[2] = {16, 8};

// The queue sizes the driver configured, per the spec: what the device must see at activation.
// Only a valid QueueNum write (a power of two <= QueueNumMax, while configuring) changes one.
uint16_t expected_size[2];

class CountingIrq : public vessel::IrqLine {
 public:
  void SetLevel(bool high) override { edges_ += high ? 1 : 0; }
  uint64_t edges_ = 0;
};

// Two queues (16 and 8 entries), 12 bytes of config space (the last 4 writable). Notify walks the
// queue: reads every readable byte, fills every writable one, returns the chain.
class EchoDevice : public VirtioDevice {
 public:
  uint32_t device_type() const { return kDeviceType; }
  uint64_t device_features() const {
    return (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
           (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << 40);
  }
  std::vector<uint16_t> queue_max_sizes() const { return {kQueueMax[0], kQueueMax[1]}; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < config_.size() ? config_[offset + i] : 0;
    }
  }
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i) {
      if (offset + i >= 8 && offset + i < config_.size()) config_[offset + i] = data[i];
    }
  }
  absl::Status Activate(const ActivateContext& context) {
    if (active_) abort();  // the transport activates once until a reset
    if (context.queues.size() != 2 || context.memory == nullptr || context.interrupt == nullptr) {
      abort();
    }
    if (context.acked_features & ~device_features()) abort();  // only offered features
    for (size_t i = 0; i < 2; ++i) {
      if (context.queues[i]->size() != expected_size[i]) {
        fprintf(stderr, "mmio_fuzzer: queue %zu activated with size %u, the driver set %u\n", i,
                context.queues[i]->size(), expected_size[i]);
        abort();
      }
    }
    ctx_ = context;
    active_ = true;
    broken_ = false;
    return absl::OkStatus();
  }
  void NotifyQueue(uint16_t index) {
    if (!active_ || index >= ctx_.queues.size()) abort();  // the transport checks
    Queue& q = *ctx_.queues[index];
    if (!q.ready() || broken_) return;
    GuestMemory& memory = *ctx_.memory;
    bool used = false;
    for (int i = 0; i < 64; ++i) {
      absl::StatusOr<std::optional<DescriptorChain>> chain = q.Pop(memory);
      if (!chain.ok()) {
        broken_ = true;
        ctx_.interrupt->SignalNeedsReset();
        return;
      }
      if (!chain->has_value()) break;
      uint32_t written = 0;
      absl::StatusOr<ChainReader> reader = ChainReader::Create(memory, **chain);
      absl::StatusOr<ChainWriter> writer = ChainWriter::Create(memory, **chain);
      if (reader.ok() && writer.ok()) {
        uint8_t buf[64];
        while (reader->remaining() > 0) {
          const uint64_t n = std::min<uint64_t>(sizeof(buf), reader->remaining());
          if (!reader->Read(buf, n).ok()) abort();
        }
        std::memset(buf, 0x5a, sizeof(buf));
        while (writer->remaining() > 0 && writer->bytes_written() < 16384) {
          const uint64_t n = std::min<uint64_t>(sizeof(buf), writer->remaining());
          if (!writer->Write(buf, n).ok()) abort();
        }
        written = static_cast<uint32_t>(writer->bytes_written());
      }
      if (!q.AddUsed(memory, (*chain)->head_index(), written).ok()) {
        broken_ = true;
        ctx_.interrupt->SignalNeedsReset();
        return;
      }
      used = true;
    }
    absl::StatusOr<bool> notify = q.NeedsNotification(memory);
    if (used && notify.ok() && *notify) ctx_.interrupt->SignalUsedBuffers();
    if (++notifies_ % 7 == 0) ctx_.interrupt->SignalConfigChange();
  }
  void Reset() {
    if (!active_) abort();  // the transport resets only an active device
    active_ = false;
    ctx_ = {};
  }
  // Snapshot hooks (no `override` anywhere in this class, so it builds whether or not the
  // VirtioDevice in this tree declares them yet).
  absl::Status Pause() { return absl::OkStatus(); }
  void Unpause() {}
  absl::StatusOr<std::string> SaveState() const { return std::string(); }
  absl::Status RestoreState(absl::string_view) { return absl::OkStatus(); }

 private:
  std::array<uint8_t, 12> config_ = {1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0};
  ActivateContext ctx_{};
  bool active_ = false;
  bool broken_ = false;
  uint64_t notifies_ = 0;
};

uint32_t Read32(MmioTransport& t, uint64_t offset) {
  uint8_t b[4];
  t.Read(offset, absl::MakeSpan(b));
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static GuestMemory* memory = new GuestMemory(GuestMemory::Create({{0, kMemBytes}}).value());
  memory->Fill(0, 0, kMemBytes).IgnoreError();
  auto irq = std::make_shared<CountingIrq>();
  auto transport = std::make_unique<MmioTransport>("fuzz", std::make_unique<EchoDevice>(), memory, irq);
  expected_size[0] = kQueueMax[0];
  expected_size[1] = kQueueMax[1];
  uint32_t queue_sel = 0;
  constexpr size_t kOp = 6;
  static constexpr size_t kWidths[] = {4, 1, 2, 8};
  for (size_t pos = 0; pos + kOp <= size; pos += kOp) {
    const uint8_t kind = data[pos];
    const uint8_t off = data[pos + 1];
    uint32_t value;
    std::memcpy(&value, data + pos + 2, 4);
    const size_t width = kWidths[kind & 3];
    const bool write = kind & 4;
    uint64_t offset = 0;
    switch ((kind >> 3) & 3) {
      case 0: offset = uint64_t{off} * 4; break;
      case 1: offset = VIRTIO_MMIO_CONFIG + off; break;
      case 2: offset = off; break;
      case 3: {
        const uint64_t gpa = uint64_t{off} * 16 + ((kind >> 5) & 7) * 2;
        memory->WriteObj<uint32_t>(gpa, value).IgnoreError();
        continue;
      }
    }
    uint8_t bytes[8];
    std::memcpy(bytes, &value, 4);
    std::memcpy(bytes + 4, &value, 4);
    if (write) {
      const uint32_t status = transport->status();
      transport->Write(offset, absl::MakeConstSpan(bytes, width));
      if (width == 4 && offset == VIRTIO_MMIO_QUEUE_SEL) queue_sel = value;
      if (width == 4 && offset == VIRTIO_MMIO_QUEUE_NUM && queue_sel < 2 &&
          (status & VIRTIO_CONFIG_S_FEATURES_OK) && !(status & VIRTIO_CONFIG_S_DRIVER_OK) &&
          value != 0 && value <= kQueueMax[queue_sel] && (value & (value - 1)) == 0) {
        expected_size[queue_sel] = static_cast<uint16_t>(value);
      }
      if (offset == VIRTIO_MMIO_STATUS && width == 4 && value == 0) {
        if (transport->status() != 0 || transport->interrupt_status() != 0) abort();  // reset
        expected_size[0] = kQueueMax[0];
        expected_size[1] = kQueueMax[1];
        queue_sel = 0;
      }
    } else {
      transport->Read(offset, absl::MakeSpan(bytes, width));
    }
  }
  if (Read32(*transport, VIRTIO_MMIO_MAGIC_VALUE) != 0x74726976 ||
      Read32(*transport, VIRTIO_MMIO_VERSION) != 2 ||
      Read32(*transport, VIRTIO_MMIO_DEVICE_ID) != kDeviceType) {
    abort();
  }
  transport.reset();  // resets an active device
  return 0;
}
