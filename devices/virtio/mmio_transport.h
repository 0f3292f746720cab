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

#include "devices/virtio/virtio_device.h"
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

 private:
  uint32_t ReadRegister(uint64_t offset);
  void WriteRegister(uint64_t offset, uint32_t value);
  void SetStatus(uint32_t value);
  void ResetLocked();
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
  std::atomic<uint32_t> interrupt_status_{0};
  // Set by a device thread without taking mu_ (Reset() holds mu_ while it waits for that thread).
  std::atomic<bool> needs_reset_{false};
  RateLimiter bad_access_log_;
};

}  // namespace vessel::virtio

#endif  // VESSEL_DEVICES_VIRTIO_MMIO_TRANSPORT_H_
