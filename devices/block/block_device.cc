#include "devices/block/block_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <pthread.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/virtio/virtio_ring.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/seccomp/seccomp.h"

namespace vessel::block {
namespace {

constexpr uint64_t kMaxDiscardSectors = 1ull << 22;  // 2 GiB per segment
constexpr uint32_t kMaxDiscardSegments = 16;

}  // namespace

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Create(const BlockConfig& config) {
  if (config.serial.size() > VIRTIO_BLK_ID_BYTES) {
    return absl::InvalidArgumentError(absl::StrCat("disk ", config.path, ": serial '", config.serial,
                                                   "' is longer than ", VIRTIO_BLK_ID_BYTES, " bytes"));
  }
  absl::StatusOr<FileBackend> backend = FileBackend::Open(config.path, config.read_only, config.direct);
  if (!backend.ok()) return backend.status();
  if (backend->size_bytes() % kSectorSize != 0) {
    LogWarning("disk ", config.path, ": size ", backend->size_bytes(),
               " is not a multiple of 512; the last partial sector is not visible to the guest");
  }
  return std::unique_ptr<BlockDevice>(new BlockDevice(config, std::move(*backend)));
}

BlockDevice::BlockDevice(BlockConfig config, FileBackend backend)
    : config_(std::move(config)), backend_(std::move(backend)) {
  std::memset(&blk_config_, 0, sizeof(blk_config_));
  blk_config_.capacity = capacity_sectors();
  blk_config_.seg_max = kSegMax;
  // O_DIRECT needs aligned I/O: a 4 KiB logical block size makes the guest issue only that.
  blk_config_.blk_size = config_.direct ? 4096 : kSectorSize;
  blk_config_.max_discard_sectors = kMaxDiscardSectors;
  blk_config_.max_discard_seg = kMaxDiscardSegments;
  blk_config_.discard_sector_alignment = 8;
  blk_config_.max_write_zeroes_sectors = kMaxDiscardSectors;
  blk_config_.max_write_zeroes_seg = kMaxDiscardSegments;
  blk_config_.write_zeroes_may_unmap = 1;
  // Topology: 512-byte logical = physical blocks, no alignment offset, 4 KiB optimal I/O.
  blk_config_.physical_block_exp = 0;
  blk_config_.alignment_offset = 0;
  blk_config_.min_io_size = 1;
  blk_config_.opt_io_size = 8;
  io_thread_ = std::thread([this, filter = seccomp::ForNewThread(seccomp::ThreadKind::kBlock)] {
    pthread_setname_np(pthread_self(), "blk-io");
    filter.Install();
    IoThread();
  });
}

BlockDevice::~BlockDevice() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  io_thread_.join();
}

uint32_t BlockDevice::device_type() const { return VIRTIO_ID_BLOCK; }

uint64_t BlockDevice::device_features() const {
  uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
               (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
               (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
               (1ull << VIRTIO_BLK_F_TOPOLOGY);
  if (config_.read_only) {
    f |= 1ull << VIRTIO_BLK_F_RO;
  } else {
    f |= (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
  }
  return f;
}

void BlockDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t o = offset + i;
    data[i] = o < sizeof(blk_config_) ? reinterpret_cast<const uint8_t*>(&blk_config_)[o] : 0;
  }
}

void BlockDevice::WriteConfig(uint64_t, absl::Span<const uint8_t>) {
  // Only the writeback toggle is writable in virtio-blk, and vessel does not offer CONFIG_WCE.
}

absl::Status BlockDevice::Activate(const virtio::ActivateContext& context) {
  if (context.queues.size() != 1 || !context.queues[0]->ready()) {
    return absl::FailedPreconditionError("virtio-blk: the request queue is not ready");
  }
  {
    std::lock_guard lock(mu_);
    ctx_ = context;
    active_ = true;
    queue_broken_ = false;
    // A restored queue: process the chains already available (no kick will come for them).
    if (restored_) kicked_ = true;
    restored_ = false;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void BlockDevice::NotifyQueue(uint16_t) {
  {
    std::lock_guard lock(mu_);
    if (!active_) return;
    kicked_ = true;
  }
  cv_.notify_all();
}

void BlockDevice::Reset() {
  std::unique_lock lock(mu_);
  pause_requested_.store(true);  // the I/O thread stops after the request in flight
  cv_.wait(lock, [this] { return !busy_; });  // in-flight requests finish first
  active_ = false;
  kicked_ = false;
  paused_ = false;
  restored_ = false;
  pause_requested_.store(false);
  ctx_ = virtio::ActivateContext{};
}

absl::Status BlockDevice::Pause() {
  std::unique_lock lock(mu_);
  if (!active_ || paused_) return absl::OkStatus();
  paused_ = true;
  pause_requested_.store(true);
  cv_.wait(lock, [this] { return !busy_; });  // the request in flight finishes first
  return absl::OkStatus();
}

void BlockDevice::Unpause() {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return;
    paused_ = false;
    pause_requested_.store(false);
    kicked_ = true;  // what became available meanwhile
  }
  cv_.notify_all();
}

absl::StatusOr<std::string> BlockDevice::SaveState() const {
  snapshot::v1::BlockState state;
  state.set_path(config_.path);
  state.set_st_dev(backend_.dev());
  state.set_st_ino(backend_.ino());
  state.set_size_bytes(backend_.size_bytes());
  state.set_read_only(config_.read_only);
  return state.SerializeAsString();
}

absl::Status BlockDevice::RestoreState(absl::string_view bytes) {
  snapshot::v1::BlockState state;
  if (!state.ParseFromString(std::string(bytes)) || state.path().empty() || state.st_ino() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "virtio-blk ", config_.path, ": the snapshot's device state is not a virtio-blk state (",
        bytes.size(), " bytes)"));
  }
  if (state.st_dev() != backend_.dev() || state.st_ino() != backend_.ino() ||
      state.size_bytes() != backend_.size_bytes()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "virtio-blk: the snapshot's disk %s (device %#x inode %d, %d bytes) is not the restoring "
        "disk %s (device %#x inode %d, %d bytes): a restore needs the very same file, unchanged "
        "in size",
        state.path(), state.st_dev(), state.st_ino(), state.size_bytes(), config_.path,
        backend_.dev(), backend_.ino(), backend_.size_bytes()));
  }
  if (state.read_only() != config_.read_only) {
    return absl::FailedPreconditionError(absl::StrCat(
        "virtio-blk: the snapshot's disk ", state.path(), " was ",
        state.read_only() ? "read-only" : "read-write", ", the restoring disk ", config_.path, " is ",
        config_.read_only ? "read-only" : "read-write"));
  }
  std::lock_guard lock(mu_);
  restored_ = true;
  return absl::OkStatus();
}

void BlockDevice::IoThread() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || (kicked_ && active_ && !paused_); });
    if (stopping_) return;
    kicked_ = false;
    busy_ = true;
    lock.unlock();
    ProcessQueue();
    lock.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void BlockDevice::ProcessQueue() {
  virtio::Queue* queue = ctx_.queues.empty() ? nullptr : ctx_.queues[0];
  if (queue == nullptr || queue_broken_) return;
  GuestMemory& memory = *ctx_.memory;
  bool completed = false;
  for (;;) {
    // Pause (or Reset): stop before the next request; Unpause kicks the queue again.
    if (pause_requested_.load()) break;
    absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = queue->Pop(memory);
    if (!chain.ok()) {
      // The ring itself is corrupt: stop using it until the driver resets the device.
      queue_broken_ = true;
      LogWarning("virtio-blk ", config_.path, ": request queue broken, stopped until reset: ",
                 chain.status().message());
      ctx_.interrupt->SignalNeedsReset();
      break;
    }
    if (!chain->has_value()) {
      // Re-arm the driver's kick; process anything that raced in meanwhile.
      absl::StatusOr<bool> more = queue->EnableNotification(memory);
      if (more.ok() && *more) continue;
      break;
    }
    uint32_t written = HandleRequest(**chain);
    if (queue_broken_) {
      ctx_.interrupt->SignalNeedsReset();
      break;
    }
    absl::Status used = queue->AddUsed(memory, (*chain)->head_index(), written);
    if (!used.ok()) {
      queue_broken_ = true;
      LogWarning("virtio-blk ", config_.path, ": used ring broken, stopped until reset: ", used.message());
      ctx_.interrupt->SignalNeedsReset();
      break;
    }
    completed = true;
  }
  if (completed) {
    absl::StatusOr<bool> notify = queue->NeedsNotification(memory);
    if (!notify.ok() || *notify) ctx_.interrupt->SignalUsedBuffers();
  }
}

absl::Span<uint8_t> BlockDevice::Buffer(uint64_t bytes) {
  constexpr uint64_t kAlign = 4096;
  const uint64_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded > buffer_size_) {
    void* p = nullptr;
    if (posix_memalign(&p, kAlign, rounded) != 0) return {};
    buffer_.reset(static_cast<uint8_t*>(p));
    buffer_size_ = rounded;
  }
  return absl::MakeSpan(buffer_.get(), bytes);
}

uint8_t BlockDevice::CheckRange(uint64_t sector, uint64_t bytes) const {
  if (bytes % kSectorSize != 0) return VIRTIO_BLK_S_IOERR;
  uint64_t sectors = bytes / kSectorSize;
  if (sector > capacity_sectors() || sectors > capacity_sectors() - sector) return VIRTIO_BLK_S_IOERR;
  return VIRTIO_BLK_S_OK;
}

uint32_t BlockDevice::HandleRequest(const virtio::DescriptorChain& chain) {
  GuestMemory& memory = *ctx_.memory;
  absl::StatusOr<std::vector<virtio::Descriptor>> descs = chain.Collect();
  if (!descs.ok()) {
    // No trustworthy status byte to report through: the device needs a reset.
    LogWarning("virtio-blk ", config_.path, ": malformed chain, queue stopped until reset: ",
               descs.status().message());
    queue_broken_ = true;
    return 0;
  }
  std::vector<virtio::Descriptor> readable, writable;
  for (const virtio::Descriptor& d : *descs) (d.is_write ? writable : readable).push_back(d);
  // The status byte is the last byte of the last writable buffer.
  while (!writable.empty() && writable.back().len == 0) writable.pop_back();
  if (writable.empty()) {
    LogWarning("virtio-blk ", config_.path, ": request without a status byte, queue stopped until reset");
    queue_broken_ = true;
    return 0;
  }
  const uint64_t status_gpa = writable.back().addr + writable.back().len - 1;
  if (--writable.back().len == 0) writable.pop_back();

  virtio::ChainReader reader(memory, readable);
  absl::StatusOr<virtio_blk_outhdr> header = reader.ReadObj<virtio_blk_outhdr>();
  uint8_t status;
  uint32_t written = 0;
  if (!header.ok()) {
    status = VIRTIO_BLK_S_IOERR;
    if (log_.Allow()) LogWarning("virtio-blk ", config_.path, ": request shorter than its header");
  } else {
    status = Execute(header->type, header->sector, writable, &reader, &written);
  }
  if (!memory.WriteObj(status_gpa, status).ok()) return written;
  return written + 1;
}

uint8_t BlockDevice::Execute(uint32_t type, uint64_t sector,
                             absl::Span<const virtio::Descriptor> out_data, virtio::ChainReader* reader,
                             uint32_t* written) {
  GuestMemory& memory = *ctx_.memory;
  switch (type) {
    case VIRTIO_BLK_T_IN: {
      uint64_t bytes = 0;
      for (const virtio::Descriptor& d : out_data) bytes += d.len;
      if (bytes > kMaxRequestBytes || CheckRange(sector, bytes) != VIRTIO_BLK_S_OK) {
        if (log_.Allow()) LogWarning(absl::StrFormat("virtio-blk %s: read of %d bytes at sector %d is out of range", config_.path, bytes, sector));
        return VIRTIO_BLK_S_IOERR;
      }
      absl::Span<uint8_t> buf = Buffer(bytes);
      if (buf.size() != bytes || !backend_.ReadAt(sector * kSectorSize, buf).ok()) return VIRTIO_BLK_S_IOERR;
      virtio::ChainWriter writer(memory, out_data);
      if (!writer.Write(buf.data(), buf.size()).ok()) return VIRTIO_BLK_S_IOERR;
      *written = static_cast<uint32_t>(bytes);
      return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_OUT: {
      if (config_.read_only) {
        if (log_.Allow()) LogWarning("virtio-blk ", config_.path, ": write to a read-only disk refused");
        return VIRTIO_BLK_S_IOERR;
      }
      uint64_t bytes = reader->remaining();
      if (bytes > kMaxRequestBytes || CheckRange(sector, bytes) != VIRTIO_BLK_S_OK) {
        if (log_.Allow()) LogWarning(absl::StrFormat("virtio-blk %s: write of %d bytes at sector %d is out of range", config_.path, bytes, sector));
        return VIRTIO_BLK_S_IOERR;
      }
      absl::Span<uint8_t> buf = Buffer(bytes);
      if (buf.size() != bytes || !reader->Read(buf.data(), buf.size()).ok()) return VIRTIO_BLK_S_IOERR;
      return backend_.WriteAt(sector * kSectorSize, buf).ok() ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    }
    case VIRTIO_BLK_T_FLUSH:
      return backend_.Flush().ok() ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    case VIRTIO_BLK_T_GET_ID: {
      char id[VIRTIO_BLK_ID_BYTES] = {};
      std::memcpy(id, config_.serial.data(), std::min<size_t>(config_.serial.size(), sizeof(id)));
      uint64_t room = 0;
      for (const virtio::Descriptor& d : out_data) room += d.len;
      uint64_t n = std::min<uint64_t>(room, sizeof(id));
      virtio::ChainWriter writer(memory, out_data);
      if (!writer.Write(id, n).ok()) return VIRTIO_BLK_S_IOERR;
      *written = static_cast<uint32_t>(n);
      return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      if (config_.read_only) return VIRTIO_BLK_S_IOERR;
      return DoDiscardOrZero(type, reader);
    default:
      if (log_.Allow()) LogWarning("virtio-blk ", config_.path, ": unsupported request type ", type);
      return VIRTIO_BLK_S_UNSUPP;
  }
}

uint8_t BlockDevice::DoDiscardOrZero(uint32_t type, virtio::ChainReader* reader) {
  uint64_t bytes = reader->remaining();
  if (bytes == 0 || bytes % sizeof(virtio_blk_discard_write_zeroes) != 0 ||
      bytes / sizeof(virtio_blk_discard_write_zeroes) > kMaxDiscardSegments) {
    return VIRTIO_BLK_S_IOERR;
  }
  while (reader->remaining() > 0) {
    absl::StatusOr<virtio_blk_discard_write_zeroes> seg = reader->ReadObj<virtio_blk_discard_write_zeroes>();
    if (!seg.ok()) return VIRTIO_BLK_S_IOERR;
    const uint64_t sectors = seg->num_sectors;
    if (sectors > kMaxDiscardSectors || CheckRange(seg->sector, sectors * kSectorSize) != VIRTIO_BLK_S_OK) {
      return VIRTIO_BLK_S_IOERR;
    }
    // Discard takes no flags; write-zeroes may only carry UNMAP.
    if ((type == VIRTIO_BLK_T_DISCARD && seg->flags != 0) ||
        (seg->flags & ~uint32_t{VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP})) {
      return VIRTIO_BLK_S_UNSUPP;
    }
    absl::Status s = type == VIRTIO_BLK_T_DISCARD
                         ? backend_.Discard(seg->sector * kSectorSize, sectors * kSectorSize)
                         : backend_.WriteZeroes(seg->sector * kSectorSize, sectors * kSectorSize);
    if (!s.ok()) return VIRTIO_BLK_S_IOERR;
  }
  return VIRTIO_BLK_S_OK;
}

}  // namespace vessel::block
