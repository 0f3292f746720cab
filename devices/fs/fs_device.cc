#include "devices/fs/fs_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <pthread.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/virtio/virtio_ring.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/base/errors.h"
#include "vmm/seccomp/seccomp.h"

namespace vessel::fs {
namespace {

// The reply goes straight into the chain's writable buffers; READ data is read into them in
// place (PayloadBuffers: host views from GuestMemory::Slice, used for this request only).
class ChainSink : public ReplySink {
 public:
  ChainSink(GuestMemory& memory, absl::Span<const virtio::Descriptor> descs) : memory_(&memory) {
    for (const virtio::Descriptor& d : descs) {
      if (d.is_write && d.len > 0) {
        buffers_.push_back(d);
        capacity_ += d.len;
      }
    }
  }
  uint64_t capacity() const override { return capacity_; }
  uint64_t written() const { return pos_; }

  absl::Status Write(const void* data, uint64_t len) override {
    if (len > capacity_ - pos_) return absl::OutOfRangeError("virtio-fs reply: chain full");
    const auto* p = static_cast<const uint8_t*>(data);
    absl::Status s = ForEachPiece(pos_, len, [&](uint64_t gpa, uint64_t n) {
      absl::Status w = memory_->Write(gpa, p, n);
      p += n;
      return w.ok();
    });
    if (s.ok()) pos_ += len;
    return s;
  }
  bool PayloadBuffers(uint64_t offset, uint64_t len, std::vector<iovec>* iov) override {
    if (offset > capacity_ || len > capacity_ - offset) return false;
    iov->clear();
    return ForEachPiece(offset, len,
                        [&](uint64_t gpa, uint64_t n) {
                          absl::StatusOr<absl::Span<uint8_t>> slice = memory_->Slice(gpa, n);
                          if (!slice.ok())
                            return false;  // spans two regions: the server copies instead
                          iov->push_back({slice->data(), slice->size()});
                          return true;
                        })
        .ok();
  }
  absl::Status Advance(uint64_t len) override {
    if (len > capacity_ - pos_) return absl::OutOfRangeError("virtio-fs reply: chain full");
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  // Calls fn(gpa, n) for each buffer piece of the reply bytes [offset, offset + len).
  template <typename Fn>
  absl::Status ForEachPiece(uint64_t offset, uint64_t len, Fn fn) {
    uint64_t skip = offset;
    for (const virtio::Descriptor& d : buffers_) {
      if (len == 0) break;
      if (skip >= d.len) {
        skip -= d.len;
        continue;
      }
      const uint64_t n = std::min<uint64_t>(d.len - skip, len);
      if (!fn(d.addr + skip, n)) return absl::InternalError("virtio-fs reply: guest memory");
      skip = 0;
      len -= n;
    }
    return len == 0 ? absl::OkStatus() : absl::OutOfRangeError("virtio-fs reply: chain full");
  }

  GuestMemory* memory_;
  std::vector<virtio::Descriptor> buffers_;
  uint64_t capacity_ = 0;
  uint64_t pos_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FsDevice>> FsDevice::Create(const FsConfig& config) {
  absl::StatusOr<std::unique_ptr<FuseServer>> server = FuseServer::Create(config, kMaxWrite);
  if (!server.ok()) return server.status();
  return std::unique_ptr<FsDevice>(new FsDevice(config, std::move(*server)));
}

FsDevice::FsDevice(FsConfig config, std::unique_ptr<FuseServer> server)
    : config_(std::move(config)), server_(std::move(server)) {
  std::memset(&fs_config_, 0, sizeof(fs_config_));
  std::memcpy(fs_config_.tag, config_.tag.data(),
              std::min(config_.tag.size(), sizeof(fs_config_.tag)));
  fs_config_.num_request_queues = config_.num_request_queues;
  for (uint32_t i = 0; i < 1 + config_.num_request_queues; ++i) {
    workers_.push_back(std::make_unique<Worker>());
  }
  for (uint16_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->thread = std::thread([this, i, filter = seccomp::ForNewThread(seccomp::ThreadKind::kFs)] {
      pthread_setname_np(pthread_self(), "fs-io");
      filter.Install();
      IoThread(i);
    });
  }
}

FsDevice::~FsDevice() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (const std::unique_ptr<Worker>& w : workers_) w->thread.join();
}

uint32_t FsDevice::device_type() const { return VIRTIO_ID_FS; }

uint64_t FsDevice::device_features() const {
  return (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
         (1ull << VIRTIO_RING_F_INDIRECT_DESC);
}

std::vector<uint16_t> FsDevice::queue_max_sizes() const {
  return std::vector<uint16_t>(1 + config_.num_request_queues, kQueueSize);
}

void FsDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t o = offset + i;
    data[i] = o < sizeof(fs_config_) ? reinterpret_cast<const uint8_t*>(&fs_config_)[o] : 0;
  }
}

void FsDevice::WriteConfig(uint64_t, absl::Span<const uint8_t>) {
  // virtio-fs config space is read-only.
}

absl::Status FsDevice::Activate(const virtio::ActivateContext& context) {
  if (context.queues.size() != workers_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("virtio-fs ", config_.tag, ": driver set up ", context.queues.size(),
                     " queues, the device has ", workers_.size(), " (hiprio + ",
                     config_.num_request_queues, " request queues)"));
  }
  for (size_t i = 0; i < context.queues.size(); ++i) {
    if (context.queues[i] == nullptr || !context.queues[i]->ready()) {
      return absl::FailedPreconditionError(
          absl::StrCat("virtio-fs ", config_.tag, ": queue ", i, " is not ready"));
    }
  }
  {
    std::lock_guard lock(mu_);
    ctx_ = context;
    active_ = true;
    for (const std::unique_ptr<Worker>& w : workers_) {
      // A restored queue: process the chains already available (no kick will come for them).
      w->pending = restored_;
      w->broken = false;
    }
    restored_ = false;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void FsDevice::NotifyQueue(uint16_t index) {
  {
    std::lock_guard lock(mu_);
    if (!active_ || index >= workers_.size()) return;
    workers_[index]->pending = true;
  }
  cv_.notify_all();
}

void FsDevice::Reset() {
  {
    std::unique_lock lock(mu_);
    pause_requested_.store(true);  // workers stop after their request in flight
    cv_.wait(lock, [this] { return busy_ == 0; });  // requests in flight finish first
    active_ = false;
    paused_ = false;
    restored_ = false;
    pause_requested_.store(false);
    for (const std::unique_ptr<Worker>& w : workers_) w->pending = false;
    ctx_ = virtio::ActivateContext{};
  }
  server_->Reset();
}

absl::Status FsDevice::Pause() {
  std::unique_lock lock(mu_);
  if (!active_ || paused_) return absl::OkStatus();
  paused_ = true;
  pause_requested_.store(true);
  cv_.wait(lock, [this] { return busy_ == 0; });  // requests in flight finish first
  return absl::OkStatus();
}

void FsDevice::Unpause() {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return;
    paused_ = false;
    pause_requested_.store(false);
    // What became available meanwhile (and what a worker left when it stopped).
    for (const std::unique_ptr<Worker>& w : workers_) w->pending = true;
  }
  cv_.notify_all();
}

absl::StatusOr<std::string> FsDevice::SaveState() const {
  const FuseSession session = server_->session();
  snapshot::v1::FsState state;
  state.set_tag(config_.tag);
  state.set_session_initialized(session.initialized);
  state.set_fuse_minor(session.minor);
  state.set_max_write(session.max_write);
  state.set_init_flags(session.flags);
  state.set_next_nodeid(session.next_nodeid);
  state.set_next_fh(session.next_fh);
  return state.SerializeAsString();
}

absl::Status FsDevice::RestoreState(absl::string_view bytes) {
  snapshot::v1::FsState state;
  if (!state.ParseFromString(std::string(bytes)) || state.tag().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs ", config_.tag, ": the snapshot's device state is not a virtio-fs state (",
                     bytes.size(), " bytes)"));
  }
  if (state.tag() != config_.tag) {
    return absl::FailedPreconditionError(absl::StrCat(
        "virtio-fs: the snapshot's share has tag '", state.tag(), "', the restoring share '",
        config_.tag, "' (", config_.shared_dir,
        "): the guest mounted it by the old tag; restore the shares in the same order and tags"));
  }
  FuseSession session;
  session.initialized = state.session_initialized();
  session.minor = state.fuse_minor();
  session.max_write = state.max_write();
  session.flags = state.init_flags();
  session.next_nodeid = state.next_nodeid();
  session.next_fh = state.next_fh();
  VESSEL_RETURN_IF_ERROR(server_->RestoreSession(session));
  std::lock_guard lock(mu_);
  restored_ = true;
  return absl::OkStatus();
}

FsDeviceCounters FsDevice::counters() const {
  FsDeviceCounters c;
  c.chains = chains_.load(std::memory_order_relaxed);
  c.empty_replies = empty_replies_.load(std::memory_order_relaxed);
  c.oversized = oversized_.load(std::memory_order_relaxed);
  c.broken_queues = broken_queues_.load(std::memory_order_relaxed);
  return c;
}

void FsDevice::IoThread(uint16_t index) {
  Worker& worker = *workers_[index];
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || (active_ && !paused_ && worker.pending); });
    if (stopping_) return;
    worker.pending = false;
    ++busy_;
    lock.unlock();
    ProcessQueue(index);
    lock.lock();
    --busy_;
    cv_.notify_all();
  }
}

void FsDevice::Broken(uint16_t index, absl::string_view what, const absl::Status& status) {
  workers_[index]->broken = true;
  ++broken_queues_;
  LogWarning("virtio-fs ", config_.tag, ": queue ", index, " ", what,
             ", stopped until the driver resets the device: ", status.message());
  ctx_.interrupt->SignalNeedsReset();
}

void FsDevice::ProcessQueue(uint16_t index) {
  if (index >= ctx_.queues.size() || workers_[index]->broken) return;
  virtio::Queue* queue = ctx_.queues[index];
  GuestMemory& memory = *ctx_.memory;
  bool completed = false;
  for (;;) {
    // Pause (or Reset): stop before the next request; Unpause processes the queue again.
    if (pause_requested_.load()) break;
    absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = queue->Pop(memory);
    if (!chain.ok()) {
      Broken(index, "ring broken", chain.status());
      break;
    }
    if (!chain->has_value()) {
      absl::StatusOr<bool> more = queue->EnableNotification(memory);
      if (more.ok() && *more) continue;
      break;
    }
    const uint32_t used = HandleChain(index, **chain);
    if (workers_[index]->broken) break;
    absl::Status s = queue->AddUsed(memory, (*chain)->head_index(), used);
    if (!s.ok()) {
      Broken(index, "used ring broken", s);
      break;
    }
    ++chains_;
    if (used == 0) ++empty_replies_;
    completed = true;
  }
  if (completed) {
    absl::StatusOr<bool> notify = queue->NeedsNotification(memory);
    if (!notify.ok() || *notify) ctx_.interrupt->SignalUsedBuffers();
  }
}

uint32_t FsDevice::HandleChain(uint16_t index, const virtio::DescriptorChain& chain) {
  GuestMemory& memory = *ctx_.memory;
  absl::StatusOr<std::vector<virtio::Descriptor>> descs = chain.Collect();
  if (!descs.ok()) {
    Broken(index, "got a malformed chain", descs.status());
    return 0;
  }
  virtio::ChainReader reader(memory, *descs);
  uint64_t len = reader.remaining();
  if (len > kMaxRequestBytes) {
    // Read only a bounded prefix: its header's len disagrees with it, so the server answers
    // EINVAL (or the request is whatever the guest put in that prefix).
    ++oversized_;
    if (log_.Allow()) {
      LogWarning("virtio-fs ", config_.tag, ": request of ", len, " bytes is longer than ",
                 kMaxRequestBytes, "; truncated");
    }
    len = kMaxRequestBytes;
  }
  std::vector<uint8_t>& request = workers_[index]->request;
  if (request.size() < len) request.resize(len);
  if (!reader.Read(request.data(), len).ok()) len = 0;
  ChainSink sink(memory, *descs);
  const uint32_t written = server_->HandleRequest(absl::MakeConstSpan(request.data(), len), sink);
  return static_cast<uint32_t>(std::min<uint64_t>(written, sink.written()));
}

}  // namespace vessel::fs
