// VirtioDevice: what a device (block, net, vsock, fs) implements; the transport (MMIO) does the
// rest: feature negotiation, status, queue configuration, interrupts.
#ifndef VESSEL_DEVICES_VIRTIO_VIRTIO_DEVICE_H_
#define VESSEL_DEVICES_VIRTIO_VIRTIO_DEVICE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "devices/virtio/queue.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::virtio {

// How a device tells the driver about used buffers or a config change. Thread-safe.
class Interrupt {
 public:
  virtual ~Interrupt() = default;
  virtual void SignalUsedBuffers() = 0;
  virtual void SignalConfigChange() = 0;
  // The device met a driver error it cannot report in-band (a corrupt ring): sets
  // DEVICE_NEEDS_RESET and raises a config interrupt. The device stops using the queue.
  virtual void SignalNeedsReset() = 0;
};

// Everything a device gets when the driver sets DRIVER_OK; valid until Reset() returns.
struct ActivateContext {
  GuestMemory* memory;
  std::vector<Queue*> queues;  // one per queue_max_sizes() entry
  uint64_t acked_features;
  Interrupt* interrupt;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual uint32_t device_type() const = 0;  // VIRTIO_ID_*
  // Features offered, VIRTIO_F_VERSION_1 included.
  virtual uint64_t device_features() const = 0;
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;
  // Device config space; out-of-range bytes read as 0 and writes there are ignored.
  virtual void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) = 0;
  virtual absl::Status Activate(const ActivateContext& context) = 0;
  // The driver notified queue `index` (it is < queue count and the device is active).
  virtual void NotifyQueue(uint16_t index) = 0;
  // Back to the initial state: stops using everything from Activate, waits for in-flight work.
  virtual void Reset() = 0;

  // --- Snapshot and restore (vmm/snapshot/README.md) ---
  // Pause: returns once no request is in flight and no device thread touches guest memory, the
  // queues or the interrupt until Unpause(); work that arrives meanwhile stays queued (host
  // sockets keep their bytes). Called with every vCPU out of KVM_RUN. Pause on an inactive device
  // is a no-op. Unpause processes what became available while paused.
  virtual absl::Status Pause() = 0;
  virtual void Unpause() = 0;
  // The device's own state (its message in vmm/snapshot/snapshot.proto, serialized); only while
  // paused or inactive.
  virtual absl::StatusOr<std::string> SaveState() const = 0;
  // On a device freshly created from the restoring VM's configuration, before the transport
  // re-activates it: checks `state` against that configuration (a different backing file, a bad
  // message: an error naming both) and keeps what Activate needs to resume. After a restored
  // Activate, the device first processes the chains already available (kicks from before the
  // snapshot are not replayed).
  virtual absl::Status RestoreState(absl::string_view state) = 0;
};

}  // namespace vessel::virtio

#endif  // VESSEL_DEVICES_VIRTIO_VIRTIO_DEVICE_H_
