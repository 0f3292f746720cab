// NetDevice: virtio-net (device id 1) implemented in this process over a host tap (no vhost-net).
//
// Two queues of 256 entries, rx (0) and tx (1), no control queue. Offered: VIRTIO_F_VERSION_1,
// MAC, STATUS (link always up), MRG_RXBUF, CSUM / GUEST_CSUM, HOST_TSO4/6 / GUEST_TSO4/6, indirect
// descriptors and event indices. Frames keep their virtio_net_hdr_v1 end to end: the tap speaks the
// same header (Tap), so checksum offload and GSO pass through; at Activate the tap's offloads
// towards the guest are set from the guest features the driver acked (TUNSETOFFLOAD).
//
// The device runs its own I/O thread: one epoll loop over the tap fd (edge-triggered) and an
// eventfd (queue notifications, activation, reset, shutdown). It drains tx (NetTx), moves frames
// from the tap into rx buffers (NetRx: mergeable buffers, backpressure when the guest has none),
// and raises the used-buffer interrupt once per pass when the driver wants it. A corrupt ring
// (Pop/AddUsed errors) sets DEVICE_NEEDS_RESET and stops both queues until reset; a bad frame or
// buffer is dropped and counted and never stops the device. Reset() stops using the queues and
// drops a pending rx frame; the tap stays open, and frames arriving meanwhile wait in its queue.
// Snapshot: Pause() lets the I/O thread finish its pass, gives back the rx chains held for a
// pending frame (NetRx::ReleaseHeld) and parks it: no guest memory, queue, interrupt or tap read
// until Unpause() (frames wait in the tap). SaveState() is the MAC and the tap's name; a restored
// device runs on the restoring configuration's tap (already opened by Create) and shows its MAC in
// config space, or the snapshot's MAC when that configuration names none (a Linux guest reads the
// MAC only at probe, so a clone given its own MAC keeps using the old one until it re-probes).
#ifndef VESSEL_DEVICES_NET_NET_DEVICE_H_
#define VESSEL_DEVICES_NET_NET_DEVICE_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/net/counters.h"
#include "devices/net/net_config.h"
#include "devices/net/rx.h"
#include "devices/net/tap.h"
#include "devices/net/tx.h"
#include "devices/virtio/virtio_device.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::net {

class NetDevice : public virtio::VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  // Frames handled per direction per loop pass before the other direction gets a turn.
  static constexpr int kBudget = 256;

  // Validates `config`, opens the tap (inside config.netns_path when given) and starts the I/O
  // thread.
  static absl::StatusOr<std::unique_ptr<NetDevice>> Create(const NetConfig& config);
  // Stops the I/O thread and closes the tap.
  ~NetDevice() override;

  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  // virtio_net_config: mac, status = VIRTIO_NET_S_LINK_UP; the rest reads as 0.
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(const virtio::ActivateContext& context) override;
  void NotifyQueue(uint16_t index) override;
  void Reset() override;
  absl::Status Pause() override;
  void Unpause() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view state) override;

  NetCounters counters() const { return stats_.Snapshot(); }
  MacAddress mac() const {
    std::lock_guard lock(mu_);
    return mac_;
  }
  // The tap's name as the kernel reports it.
  const std::string& tap_name() const { return tap_.name(); }

 private:
  NetDevice(const NetConfig& config, MacAddress mac, Tap tap);
  absl::Status Init();
  void Wake();
  void IoThread();
  // One tx + rx pass; true when a budget ran out (run again without waiting).
  bool Pump();
  void QueueBroken(const char* queue, const absl::Status& status);
  // Pausing (I/O thread): gives back the rx chains held for a pending frame.
  void EnterPause();

  const NetConfig config_;
  const std::string name_;  // "virtio-net TAP" for logs
  Tap tap_;
  NetStats stats_;
  RateLimiter log_;
  ScopedFd epoll_;
  ScopedFd wake_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Under mu_.
  MacAddress mac_;  // the config's, or (restored, none configured) the snapshot's
  virtio::ActivateContext ctx_{};
  bool active_ = false;
  bool stopping_ = false;
  uint64_t reset_requested_ = 0;
  uint64_t reset_done_ = 0;
  bool paused_ = false;
  uint64_t pause_requested_ = 0;
  uint64_t pause_done_ = 0;

  // I/O thread only.
  virtio::ActivateContext io_ctx_{};
  bool io_active_ = false;
  bool queue_broken_ = false;
  uint64_t io_reset_seen_ = 0;
  uint64_t io_pause_seen_ = 0;
  NetTx tx_;
  NetRx rx_;

  std::thread io_thread_;
};

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_NET_DEVICE_H_
