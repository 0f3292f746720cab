// BlockDevice: virtio-blk (device id 2) over a FileBackend.
//
// Requests are taken off the queue and executed on the device's own I/O thread, never on a vCPU
// thread; a request is completed to the guest only after its data is in the backend (FLUSH after
// fdatasync). Every request is checked: header and status present, data a multiple of 512 bytes,
// sectors within the disk, writes refused on a read-only disk; bad requests get
// VIRTIO_BLK_S_IOERR / S_UNSUPP and a rate-limited log line, never a write outside the image.
// A chain that is malformed or cannot carry a status byte has no in-band way to fail: the device
// sets DEVICE_NEEDS_RESET and stops the queue until the driver resets it.
// Snapshot: Pause() lets the request in flight finish and stops the I/O thread before the next
// one; SaveState() records the disk's identity (path, st_dev/st_ino, size, read-only) and
// RestoreState() refuses a different file; the Activate() after it processes the chains already
// available.
#ifndef VESSEL_DEVICES_BLOCK_BLOCK_DEVICE_H_
#define VESSEL_DEVICES_BLOCK_BLOCK_DEVICE_H_

#include <linux/virtio_blk.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/block/file_backend.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/virtio_device.h"
#include "vmm/base/log.h"

namespace vessel::block {

struct BlockConfig {
  std::string path;
  bool read_only = false;
  std::string serial;  // VIRTIO_BLK_T_GET_ID, at most 20 bytes
  bool direct = false;  // O_DIRECT: bypass the host page cache (data still reaches the disk on FLUSH)
};

class BlockDevice : public virtio::VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kSectorSize = 512;
  static constexpr uint32_t kSegMax = 128;
  static constexpr uint64_t kMaxRequestBytes = 64ull << 20;

  static absl::StatusOr<std::unique_ptr<BlockDevice>> Create(const BlockConfig& config);
  ~BlockDevice() override;

  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void ReadConfig(uint64_t offset, absl::Span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Activate(const virtio::ActivateContext& context) override;
  void NotifyQueue(uint16_t index) override;
  void Reset() override;
  absl::Status Pause() override;
  void Unpause() override;
  absl::StatusOr<std::string> SaveState() const override;
  absl::Status RestoreState(absl::string_view state) override;

  uint64_t capacity_sectors() const { return backend_.size_bytes() / kSectorSize; }
  // Runs the queue until it is empty, on the calling thread (the I/O thread; tests).
  void ProcessQueue();
  // Executes one request chain; returns the bytes written into the chain (data + status). Sets
  // queue_broken_ when the chain cannot be answered in-band.
  uint32_t HandleRequest(const virtio::DescriptorChain& chain);

 private:
  BlockDevice(BlockConfig config, FileBackend backend);
  void IoThread();
  // A buffer for `bytes` of I/O, aligned for O_DIRECT.
  absl::Span<uint8_t> Buffer(uint64_t bytes);
  // Runs one parsed request: `reader` is positioned after the header, `out_data` are the writable
  // buffers without the status byte.
  uint8_t Execute(uint32_t type, uint64_t sector, absl::Span<const virtio::Descriptor> out_data,
                  virtio::ChainReader* reader, uint32_t* written);
  uint8_t CheckRange(uint64_t sector, uint64_t bytes) const;
  uint8_t DoDiscardOrZero(uint32_t type, virtio::ChainReader* reader);

  BlockConfig config_;
  FileBackend backend_;
  virtio_blk_config blk_config_;

  std::mutex mu_;
  std::condition_variable cv_;
  virtio::ActivateContext ctx_{};
  bool active_ = false;
  bool kicked_ = false;
  bool busy_ = false;
  bool stopping_ = false;
  bool paused_ = false;
  bool restored_ = false;  // RestoreState succeeded: the next Activate processes the queue
  // Set while paused: ProcessQueue stops before the next request (read without mu_).
  std::atomic<bool> pause_requested_{false};
  bool queue_broken_ = false;
  std::thread io_thread_;
  RateLimiter log_;
  std::unique_ptr<uint8_t, void (*)(void*)> buffer_{nullptr, free};  // I/O thread only
  uint64_t buffer_size_ = 0;
};

}  // namespace vessel::block

#endif  // VESSEL_DEVICES_BLOCK_BLOCK_DEVICE_H_
