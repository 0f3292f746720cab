// VsockDevice: virtio-vsock (device id 19) implemented in this process, without /dev/vhost-vsock:
// three queues (rx, tx, event) of 256 entries, config = the guest's CID, VIRTIO_F_VERSION_1 and
// stream sockets only. The host side is Firecracker's hybrid vsock over AF_UNIX (VsockMuxer).
//
// The device runs its own I/O thread: one epoll loop over an eventfd (queue notifications,
// activation, reset, hand-overs, shutdown) and the muxer's epoll fd (host sockets, timers). It takes
// tx packets (ParseTxPacket → muxer), fills rx buffers with what the muxer has for the guest, and
// raises the used-buffer interrupt. The event queue is used once, after a snapshot restore (below).
// A corrupt ring (Pop/AddUsed errors) sets DEVICE_NEEDS_RESET and stops both queues until reset;
// a bad packet or buffer is dropped or answered with RST and never touches other connections.
// Reset() stops using the queues, closes every connection and pending host client (pending
// ConnectToGuest callbacks get ABORTED), keeps the listener; clients that connect meanwhile wait
// in its backlog until the driver is active again.
// Snapshot: Pause() lets the I/O thread finish its pass, gives back a popped rx buffer it kept
// (Queue::UndoPop) and parks it: no guest memory, queue, interrupt or host socket is touched until
// Unpause() (host clients wait in their sockets, hand-overs in their queue). SaveState() is the
// guest CID; a restored device has no host connections (fresh device, the restoring
// configuration's CID) and, once the transport re-activates it, puts a
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET in an event-queue buffer (as Firecracker does): the guest
// driver resets its connected sockets and re-reads the CID.
#ifndef VESSEL_DEVICES_VSOCK_VSOCK_DEVICE_H_
#define VESSEL_DEVICES_VSOCK_VSOCK_DEVICE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/virtio_device.h"
#include "devices/vsock/connection.h"
#include "devices/vsock/counters.h"
#include "devices/vsock/unix_muxer.h"
#include "devices/vsock/vsock_config.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::vsock {

class VsockDevice : public virtio::VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;
  // Chains handled per loop pass before host events get a turn again.
  static constexpr int kPumpBudget = 256;

  // Validates `config`, listens on config.uds_path and starts the I/O thread.
  static absl::StatusOr<std::unique_ptr<VsockDevice>> Create(const VsockConfig& config);
  // Stops the I/O thread, closes every socket, removes uds_path.
  ~VsockDevice() override;

  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kQueueSize, kQueueSize, kQueueSize};
  }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(const virtio::ActivateContext& context) override;
  void NotifyQueue(uint16_t index) override;
  void Reset() override;
  absl::Status Pause() override;
  void Unpause() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view state) override;

  // Host → guest in process (for the sandbox library: no filesystem socket). `stream` must be a
  // connected SOCK_STREAM socket (e.g. one end of socketpair(AF_UNIX, SOCK_STREAM)); the device
  // sends the guest a REQUEST to `guest_port` and, once the guest answers, splices bytes between
  // the socket and the guest connection. Unlike a CONNECT'ed Unix client, no handshake line is
  // read from or written to the socket: the first byte on it is guest data.
  // Returns an error (and closes `stream`, without calling `done`) when the arguments are bad or
  // the guest driver is not active. Otherwise `done` runs exactly once on the device's I/O thread
  // (or in ~VsockDevice): with the connection's host port when the guest accepted; UNAVAILABLE
  // when it refused (nothing listens on the port); DEADLINE_EXCEEDED without an answer within
  // request_timeout; ABORTED on a device reset; RESOURCE_EXHAUSTED over max_connections — on
  // every error `stream` is closed. `done` must not block; it may call ConnectToGuest again.
  absl::Status ConnectToGuest(ScopedFd stream, uint32_t guest_port, ConnectCallback done);

  VsockCounters counters() const { return stats_.Snapshot(); }
  const VsockConfig& config() const { return config_; }

 private:
  struct Handover {
    ScopedFd stream;
    uint32_t guest_port;
    ConnectCallback done;
  };

  explicit VsockDevice(const VsockConfig& config);
  absl::Status Init();
  void Wake();
  void IoThread();
  // Handles tx then rx until neither moves or the budget is spent; true when work may be left.
  bool Pump(Clock::time_point now);
  // A ring error: stop the queues and ask the driver for a reset.
  void QueueBroken(const char* queue, const absl::Status& status);
  void ResetIo();
  // Pausing: gives back the rx chain kept in spare_rx_ (I/O thread).
  void EnterPause();
  // After a restored activation: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET into an event buffer.
  void SendTransportReset();
  // Ends awaiting_reset_ack_ once the guest re-posted an event buffer or kResetAckWait passed.
  void CheckResetAck(std::chrono::steady_clock::time_point now);

  const VsockConfig config_;
  VsockStats stats_;
  std::unique_ptr<VsockMuxer> muxer_;  // I/O thread only (after Create)
  ScopedFd epoll_;
  ScopedFd wake_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Under mu_.
  virtio::ActivateContext ctx_{};
  bool active_ = false;
  bool stopping_ = false;
  uint64_t reset_requested_ = 0;
  uint64_t reset_done_ = 0;
  bool paused_ = false;
  uint64_t pause_requested_ = 0;
  uint64_t pause_done_ = 0;
  bool reset_event_ = false;  // RestoreState: send TRANSPORT_RESET once active
  std::vector<Handover> handovers_;

  // I/O thread only.
  virtio::ActivateContext io_ctx_{};
  bool io_active_ = false;
  bool queue_broken_ = false;
  uint64_t io_reset_seen_ = 0;
  uint64_t io_pause_seen_ = 0;
  std::optional<virtio::DescriptorChain> spare_rx_;
  // After a restore's transport reset event: host→guest connections wait until the guest has
  // handled it (it re-posts the event buffer), else the guest answers them with its old CID (the
  // answer is dropped) or resets them when it gets to the event. At most kResetAckWait.
  bool awaiting_reset_ack_ = false;
  uint16_t event_pending_after_reset_ = 0;
  std::chrono::steady_clock::time_point reset_sent_at_;
  std::vector<Handover> deferred_handovers_;
  // The CID the restored guest had in the snapshot (guarded by mu_; the I/O thread's copy).
  uint64_t pre_reset_cid_ = 0;
  uint64_t io_pre_reset_cid_ = 0;
  RateLimiter log_;

  std::thread io_thread_;
};

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_VSOCK_DEVICE_H_
