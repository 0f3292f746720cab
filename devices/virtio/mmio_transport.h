// MmioTransport: the virtio-mmio transport, version 2 (modern only), as a BusDevice.
//
// Register semantics per the virtio 1.x spec (magic, version, ids, 64-bit features with selectors,
// status state machine, per-queue size/ready/addresses, notify, interrupt status/ack, config
// generation, device config at 0x100). The driver must accept VIRTIO_F_VERSION_1. Writing status 0
// resets the device. Accesses of the wrong width or to undefined offsets are ignored and logged
// (rate-limited); a driver that misbehaves gets FAILED/NEEDS_RESET, never a crash.
#ifndef VESSEL_DEVICES_VIRTIO_MMIO_TRANSPORT_H_
#define VESSEL_DEVICES_VIRTIO_MMIO_TRANSPORT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/virtio/virtio_device.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/base/log.h"
#include "vmm/bus/bus.h"
#include "vmm/bus/irq_line.h"

namespace vessel::virtio {

class MmioTransport : public BusDevice, private Interrupt {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;

  MmioTransport(std::string name, std::unique_ptr<VirtioDevice> device, GuestMemory* memory,
                std::shared_ptr<IrqLine> irq);
  ~MmioTransport() override;

  void Read(uint64_t offset, absl::Span<uint8_t> data) override;
  void Write(uint64_t offset, absl::Span<const uint8_t> data) override;

  uint32_t status() const;
  size_t queue_count() const { return queues_.size(); }
  // A QueueNotify for `queue` (from an MMIO write or an ioeventfd).
  void HandleNotify(uint32_t queue);
  uint32_t interrupt_status() const { return interrupt_status_.load(); }
  VirtioDevice* device() { return device_.get(); }
  const std::string& name() const { return name_; }

  // --- Snapshot and restore (vmm/snapshot) ---
  // Quiesces the device (VirtioDevice::Pause) when it is active; idempotent. Call with every vCPU
  // out of KVM_RUN. Notifications that arrive while paused are kept by the device.
  absl::Status Pause();
  // Lets the device run again and process what became available meanwhile; a no-op unless paused.
  void Unpause();
  bool paused() const;
  // Every register, each queue and the device's own state (VirtioDevice::SaveState). Only while
  // paused or inactive (FailedPrecondition otherwise).
  absl::StatusOr<snapshot::v1::VirtioMmioState> SaveState() const;
  // On a fresh transport (never configured by a driver): checks `state` against this device (type,
  // queue count, each queue; for a device that was active, features offered and ready queues
  // against guest memory), restores every register and queue, hands device_state to the device
  // (VirtioDevice::RestoreState) and, when the saved device was active (DRIVER_OK, not
  // needs-reset), activates it with the restored queues as a DRIVER_OK write would. Any error
  // leaves the transport reset and names the device.
  absl::Status RestoreState(const snapshot::v1::VirtioMmioState& state);

 private:
  uint32_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint32_t value);
  void SetStatus(uint32_t value);
  void ResetLocked();
  absl::Status RestoreLocked(const snapshot::v1::VirtioMmioState& state);
  // Activates the device with the queues as configured (SetStatus on DRIVER_OK, RestoreState).
  absl::Status ActivateLocked();
  Queue* SelectedQueue();
  void SignalUsedBuffers() override;
  void SignalConfigChange() override;
  void SignalNeedsReset() override;
  void Raise(uint32_t bits);
  void LogBadAccess(const char* what, uint64_t offset, uint64_t detail);

  std::string name_;
  std::unique_ptr<VirtioDevice> device_;
  GuestMemory* memory_;
  std::shared_ptr<IrqLine> irq_;

  mutable std::mutex mu_;
  std::vector<Queue> queues_;
  uint32_t status_ = 0;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_sel_ = 0;
  uint32_t config_generation_ = 0;
  bool active_ = false;
  bool paused_ = false;  // Pause() succeeded, no Unpause() or reset since
  std::atomic<uint32_t> interrupt_status_{0};
  // Set by a device thread without taking mu_ (Reset() holds mu_ while it waits for that thread).
  std::atomic<bool> needs_reset_{false};
  RateLimiter bad_access_log_;
};

}  // namespace vessel::virtio

#endif  // VESSEL_DEVICES_VIRTIO_MMIO_TRANSPORT_H_
