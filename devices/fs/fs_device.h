// FsDevice: virtio-fs (device id 26) with the FUSE server inline (no virtiofsd process, like Kata
// Dragonball): queue 0 is hiprio (FORGET, BATCH_FORGET, INTERRUPT), queues 1..N carry requests;
// config = the tag and N. Features: VIRTIO_F_VERSION_1, EVENT_IDX, INDIRECT_DESC.
//
// Requests run on the device's own I/O threads (one per queue, so a slow host file system call on
// one request queue does not hold up the others or FORGETs), never on a vCPU thread or an event
// loop; the FuseServer is shared and thread-safe. For each
// chain the readable buffers (fuse_in_header + arguments, at most kMaxRequestBytes are read) go to
// the FuseServer and its reply is written straight into the writable buffers (ChainWriter); the
// used length is what the reply took. A chain whose writable part cannot hold a fuse_out_header is
// returned with length 0 and counted; the device keeps serving. A corrupt ring or chain (Pop /
// Collect / AddUsed errors: nothing trustworthy to answer through) sets DEVICE_NEEDS_RESET and
// stops that queue until the driver resets the device.
// Reset() waits for the request in flight, stops using the queues and drops every open handle and
// every inode but the root (the next driver starts with FUSE_INIT).
// Snapshot: Pause() lets each worker finish its request in flight and parks them all until
// Unpause(), which processes every queue again. SaveState() is the tag and the FUSE session
// (FuseServer::session); RestoreState() refuses another tag and continues the session on this
// fresh server without a new INIT (FuseServer::RestoreSession: nodes from before answer ESTALE,
// handles EBADF, as after a FUSE daemon restart); the Activate() after it processes the chains
// already available.
#ifndef VESSEL_DEVICES_FS_FS_DEVICE_H_
#define VESSEL_DEVICES_FS_FS_DEVICE_H_

#include <linux/virtio_fs.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/fs/fs_config.h"
#include "devices/fs/fuse_server.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/virtio_device.h"
#include "vmm/base/log.h"

namespace vessel::fs {

// What the device did (a snapshot); the FUSE-level counters are FuseServer::counters().
struct FsDeviceCounters {
  uint64_t chains = 0;         // chains answered (used entries added)
  uint64_t empty_replies = 0;  // chains returned with length 0 (no reply / no room for one)
  uint64_t oversized = 0;      // requests longer than kMaxRequestBytes (truncated: EINVAL reply)
  uint64_t broken_queues = 0;  // DEVICE_NEEDS_RESET raised
};

class FsDevice : public virtio::VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 1024;
  static constexpr uint16_t kHiprioQueue = 0;
  static constexpr uint32_t kMaxWrite = FuseServer::kDefaultMaxWrite;
  // The longest request read from a chain: a WRITE of kMaxWrite plus its headers.
  static constexpr uint64_t kMaxRequestBytes = kMaxWrite + 4096;

  // Validates `config`, opens the share and starts the I/O threads.
  static absl::StatusOr<std::unique_ptr<FsDevice>> Create(const FsConfig& config);
  // Stops the I/O threads (after the requests in flight).
  ~FsDevice() override;

  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(const virtio::ActivateContext& context) override;
  void NotifyQueue(uint16_t index) override;
  void Reset() override;
  absl::Status Pause() override;
  void Unpause() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view state) override;

  // Runs queue `index` until it is empty, on the calling thread (its I/O thread; tests).
  void ProcessQueue(uint16_t index);
  // Answers one chain; returns the used length. Sets the queue broken when it cannot.
  uint32_t HandleChain(uint16_t index, const virtio::DescriptorChain& chain);

  FuseServer& server() { return *server_; }
  FsDeviceCounters counters() const;
  const FsConfig& config() const { return config_; }

 private:
  FsDevice(FsConfig config, std::unique_ptr<FuseServer> server);
  // One per queue: the thread that serves it and what only that thread touches.
  struct Worker {
    bool pending = false;             // notified, not processed yet (mu_)
    std::atomic<bool> broken{false};  // stopped until reset
    std::vector<uint8_t> request;     // the request being handled (its thread only)
    std::thread thread;
  };
  void IoThread(uint16_t index);
  void Broken(uint16_t index, absl::string_view what, const absl::Status& status);

  const FsConfig config_;
  std::unique_ptr<FuseServer> server_;
  virtio_fs_config fs_config_;

  std::mutex mu_;
  std::condition_variable cv_;
  virtio::ActivateContext ctx_{};
  bool active_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;  // hiprio, then the request queues
  int busy_ = 0;                                  // workers processing a queue
  bool stopping_ = false;
  bool paused_ = false;
  bool restored_ = false;  // RestoreState succeeded: the next Activate processes every queue
  // Set while paused (or resetting): workers stop before their next request (read without mu_).
  std::atomic<bool> pause_requested_{false};

  std::atomic<uint64_t> chains_{0};
  std::atomic<uint64_t> empty_replies_{0};
  std::atomic<uint64_t> oversized_{0};
  std::atomic<uint64_t> broken_queues_{0};
  RateLimiter log_;
};

}  // namespace vessel::fs

#endif  // VESSEL_DEVICES_FS_FS_DEVICE_H_
