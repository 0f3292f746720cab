#include "devices/vsock/vsock_device.h"

#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/vsock/packet.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/base/errors.h"
#include "vmm/seccomp/seccomp.h"

namespace vessel::vsock {
namespace {

constexpr uint64_t kWakeToken = 1;
constexpr uint64_t kMuxerToken = 2;

}  // namespace

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(const VsockConfig& config) {
  VESSEL_RETURN_IF_ERROR(ValidateVsockConfig(config));
  std::unique_ptr<VsockDevice> dev(new VsockDevice(config));
  VESSEL_RETURN_IF_ERROR(dev->Init());
  return dev;
}

VsockDevice::VsockDevice(const VsockConfig& config) : config_(config) {}

absl::Status VsockDevice::Init() {
  VESSEL_ASSIGN_OR_RETURN(muxer_, VsockMuxer::Create(config_, &stats_));
  const std::string& name = muxer_->name();
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoStatus(absl::StrCat(name, ": epoll_create1"));
  wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_.valid()) return ErrnoStatus(absl::StrCat(name, ": eventfd"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    return ErrnoStatus(absl::StrCat(name, ": epoll_ctl(eventfd)"));
  }
  ev.data.u64 = kMuxerToken;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, muxer_->epoll_fd(), &ev) != 0) {
    return ErrnoStatus(absl::StrCat(name, ": epoll_ctl(muxer)"));
  }
  io_thread_ = std::thread([this, filter = seccomp::ForNewThread(seccomp::ThreadKind::kVsock)] {
    filter.Install();
    IoThread();
  });
  return absl::OkStatus();
}

VsockDevice::~VsockDevice() {
  if (io_thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    Wake();
    cv_.notify_all();  // a paused I/O thread waits on cv_
    io_thread_.join();
  }
  // Pending hand-overs never reached the muxer.
  for (Handover& h : deferred_handovers_) handovers_.push_back(std::move(h));
  deferred_handovers_.clear();
  for (Handover& h : handovers_) {
    h.stream.reset();
    if (h.done) h.done(absl::AbortedError("vsock device destroyed before the connection was made"));
  }
  handovers_.clear();
}

uint32_t VsockDevice::device_type() const { return VIRTIO_ID_VSOCK; }

uint64_t VsockDevice::device_features() const { return 1ull << VIRTIO_F_VERSION_1; }

void VsockDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  virtio_vsock_config cfg{};
  cfg.guest_cid = config_.guest_cid;  // little endian on x86_64
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&cfg);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t o = offset + i;
    data[i] = o < sizeof(cfg) ? bytes[o] : 0;
  }
}

void VsockDevice::WriteConfig(uint64_t, absl::Span<const uint8_t>) {
  // The guest CID is read-only.
}

absl::Status VsockDevice::Activate(const virtio::ActivateContext& context) {
  if (context.queues.size() != 3 || context.queues[kRxQueue] == nullptr ||
      context.queues[kTxQueue] == nullptr || !context.queues[kRxQueue]->ready() ||
      !context.queues[kTxQueue]->ready()) {
    return absl::FailedPreconditionError(
        "virtio-vsock: the rx and tx queues must be set up and ready before DRIVER_OK");
  }
  {
    std::lock_guard lock(mu_);
    ctx_ = context;
    active_ = true;
  }
  Wake();
  return absl::OkStatus();
}

void VsockDevice::NotifyQueue(uint16_t) { Wake(); }

void VsockDevice::Wake() {
  const uint64_t one = 1;
  ssize_t unused = ::write(wake_.get(), &one, sizeof(one));
  (void)unused;  // EAGAIN: the counter is already non-zero, a wake-up is pending anyway
}

void VsockDevice::Reset() {
  std::unique_lock lock(mu_);
  active_ = false;
  paused_ = false;
  reset_event_ = false;
  ctx_ = virtio::ActivateContext{};
  const uint64_t target = ++reset_requested_;
  Wake();
  cv_.notify_all();  // a paused I/O thread waits on cv_
  // The I/O thread finishes its current pass, then drops the queues and every connection.
  cv_.wait(lock, [&] { return reset_done_ >= target || stopping_; });
}

absl::Status VsockDevice::Pause() {
  std::unique_lock lock(mu_);
  if (!active_ || paused_) return absl::OkStatus();
  paused_ = true;
  const uint64_t target = ++pause_requested_;
  Wake();
  // The I/O thread finishes its current pass, gives back a kept rx buffer, then parks.
  cv_.wait(lock, [&] { return pause_done_ >= target || stopping_; });
  return absl::OkStatus();
}

void VsockDevice::Unpause() {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return;
    paused_ = false;
  }
  cv_.notify_all();
  Wake();
}

absl::StatusOr<std::string> VsockDevice::SaveState() const {
  snapshot::v1::VsockState state;
  state.set_guest_cid(config_.guest_cid);
  return state.SerializeAsString();
}

absl::Status VsockDevice::RestoreState(absl::string_view bytes) {
  snapshot::v1::VsockState state;
  if (!state.ParseFromString(std::string(bytes)) || state.guest_cid() < kMinGuestCid ||
      state.guest_cid() >= kCidAny) {
    return absl::InvalidArgumentError(absl::StrCat(
        muxer_->name(), ": the snapshot's device state is not a virtio-vsock state (",
        bytes.size(), " bytes)"));
  }
  if (state.guest_cid() != config_.guest_cid) {
    LogInfo(muxer_->name(), ": restoring a guest that had CID ", state.guest_cid(),
            "; it gets CID ", config_.guest_cid, " (it re-reads it on the transport reset event)");
  }
  std::lock_guard lock(mu_);
  reset_event_ = true;
  pre_reset_cid_ = state.guest_cid();
  return absl::OkStatus();
}

absl::Status VsockDevice::ConnectToGuest(ScopedFd stream, uint32_t guest_port,
                                         ConnectCallback done) {
  const std::string& name = muxer_->name();
  if (!stream.valid()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ConnectToGuest needs an open socket"));
  }
  int type = 0;
  socklen_t len = sizeof(type);
  if (::getsockopt(stream.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ConnectToGuest needs a connected SOCK_STREAM socket (e.g. one end of "
              "socketpair(AF_UNIX, SOCK_STREAM))"));
  }
  if (guest_port == kPortAny) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": guest port ", guest_port, " is VMADDR_PORT_ANY: name a real port"));
  }
  const int flags = ::fcntl(stream.get(), F_GETFL);
  if (flags < 0 || ::fcntl(stream.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(absl::StrCat(name, ": making the hand-over socket non-blocking"));
  }
  if (!done) done = [](absl::StatusOr<uint32_t>) {};
  {
    std::lock_guard lock(mu_);
    if (!active_) {
      return absl::FailedPreconditionError(absl::StrCat(
          name, ": the guest's vsock driver is not active (the guest has not booted that far, or "
                "reset the device): retry once it is up"));
    }
    if (handovers_.size() >= config_.max_connections) {
      return absl::ResourceExhaustedError(absl::StrCat(
          name, ": ", handovers_.size(), " hand-overs are already waiting: retry later"));
    }
    handovers_.push_back(Handover{std::move(stream), guest_port, std::move(done)});
  }
  Wake();
  return absl::OkStatus();
}

void VsockDevice::IoThread() {
  pthread_setname_np(pthread_self(), "vsock-io");
  bool more = false;
  for (;;) {
    epoll_event events[4];
    const int n = ::epoll_wait(epoll_.get(), events, 4, more ? 0 : (awaiting_reset_ack_ ? 20 : -1));
    if (n < 0 && errno != EINTR && log_.Allow()) {
      LogError(muxer_->name(), ": epoll_wait failed: ", std::strerror(errno));
    }
    uint64_t counter;
    ssize_t unused = ::read(wake_.get(), &counter, sizeof(counter));
    (void)unused;

    uint64_t reset_target;
    bool active;
    bool paused;
    uint64_t pause_target;
    virtio::ActivateContext ctx;
    std::vector<Handover> handovers;
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      reset_target = reset_requested_;
      active = active_;
      paused = paused_;
      pause_target = pause_requested_;
      ctx = ctx_;
      if (!paused) handovers.swap(handovers_);  // hand-overs wait while paused
    }
    if (reset_target != io_reset_seen_) {
      // Outside mu_: ConnectCallbacks run here and may call ConnectToGuest.
      ResetIo();
      io_reset_seen_ = reset_target;
      {
        std::lock_guard lock(mu_);
        reset_done_ = reset_target;
      }
      cv_.notify_all();
    }
    if (active && !io_active_) {
      io_ctx_ = ctx;
      io_active_ = true;
      queue_broken_ = false;
      muxer_->SetListening(true);
      bool reset_event;
      {
        std::lock_guard lock(mu_);
        reset_event = reset_event_;
        reset_event_ = false;
        io_pre_reset_cid_ = pre_reset_cid_;
      }
      if (reset_event) SendTransportReset();
    }
    if (paused) {
      if (pause_target != io_pause_seen_) {
        EnterPause();
        io_pause_seen_ = pause_target;
        {
          std::lock_guard lock(mu_);
          pause_done_ = pause_target;
        }
        cv_.notify_all();
      }
      // Parked: nothing is touched until Unpause (or a reset, or shutdown).
      std::unique_lock lock(mu_);
      // A newer Pause (after an Unpause this thread has not seen yet) needs its own answer.
      cv_.wait(lock, [&] {
        return !paused_ || stopping_ || reset_requested_ != io_reset_seen_ ||
               pause_requested_ != io_pause_seen_;
      });
      more = true;  // look again at once, without waiting for an event
      continue;
    }
    const Clock::time_point now = Clock::now();
    if (awaiting_reset_ack_) {
      CheckResetAck(now);
      if (awaiting_reset_ack_) {
        for (Handover& h : handovers) deferred_handovers_.push_back(std::move(h));
        handovers.clear();
      } else {
        for (Handover& h : handovers) deferred_handovers_.push_back(std::move(h));
        handovers.swap(deferred_handovers_);
        deferred_handovers_.clear();
      }
    }
    for (Handover& h : handovers) {
      if (!io_active_) {
        h.stream.reset();
        h.done(absl::AbortedError(
            absl::StrCat(muxer_->name(), ": the guest reset the vsock device; retry")));
        continue;
      }
      muxer_->ConnectToGuest(std::move(h.stream), h.guest_port, std::move(h.done), now);
    }
    muxer_->HandleHostEvents(now);
    more = io_active_ && !queue_broken_ && Pump(now);
  }
  // Stopping: wake a Reset() that may be waiting.
  cv_.notify_all();
}

void VsockDevice::ResetIo() {
  io_active_ = false;
  awaiting_reset_ack_ = false;
  for (Handover& h : deferred_handovers_) {
    h.stream.reset();
    h.done(absl::AbortedError(absl::StrCat(muxer_->name(), ": the guest reset the vsock device; retry")));
  }
  deferred_handovers_.clear();
  io_ctx_ = virtio::ActivateContext{};
  spare_rx_.reset();
  queue_broken_ = false;
  muxer_->Reset(absl::AbortedError(
      absl::StrCat(muxer_->name(), ": the guest reset the vsock device; retry")));
}

void VsockDevice::EnterPause() {
  if (!io_active_ || !spare_rx_.has_value()) return;
  // The kept rx buffer is the last chain popped from rx: un-pop it, so that a snapshot taken now
  // (whose queue state has it available again) loses no guest buffer. Popped again after Unpause.
  io_ctx_.queues[kRxQueue]->UndoPop(1);
  spare_rx_.reset();
}

void VsockDevice::SendTransportReset() {
  virtio::Queue* eventq =
      io_ctx_.queues.size() > kEventQueue ? io_ctx_.queues[kEventQueue] : nullptr;
  if (eventq == nullptr || !eventq->ready()) {
    LogWarning(muxer_->name(), ": restored without an event queue: the guest gets no transport "
                               "reset event, its connections from before the snapshot hang");
    return;
  }
  GuestMemory& memory = *io_ctx_.memory;
  absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = eventq->Pop(memory);
  if (!chain.ok()) {
    QueueBroken("event", chain.status());
    return;
  }
  if (!chain->has_value()) {
    LogWarning(muxer_->name(), ": restored, but the guest left no event buffer: it gets no "
                               "transport reset event, its connections from before the snapshot hang");
    return;
  }
  virtio_vsock_event event{};
  event.id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET;  // little endian on x86_64
  uint32_t written = 0;
  absl::StatusOr<virtio::ChainWriter> writer = virtio::ChainWriter::Create(memory, **chain);
  if (writer.ok() && writer->Write(&event, sizeof(event)).ok()) {
    written = sizeof(event);
  } else {
    LogWarning(muxer_->name(), ": the guest's event buffer cannot hold the transport reset event: ",
               writer.ok() ? "too small" : writer.status().message());
  }
  absl::Status used = eventq->AddUsed(memory, (*chain)->head_index(), written);
  if (!used.ok()) {
    QueueBroken("event", used);
    return;
  }
  VsockStats::Add(stats_.transport_resets);
  absl::StatusOr<uint16_t> pending = eventq->Pending(memory);
  awaiting_reset_ack_ = pending.ok();
  event_pending_after_reset_ = pending.ok() ? *pending : 0;
  reset_sent_at_ = Clock::now();
  absl::StatusOr<bool> need = eventq->NeedsNotification(memory);
  if (!need.ok() || *need) io_ctx_.interrupt->SignalUsedBuffers();
}

void VsockDevice::CheckResetAck(Clock::time_point now) {
  constexpr auto kResetAckWait = std::chrono::seconds(2);
  virtio::Queue* eventq =
      io_active_ && io_ctx_.queues.size() > kEventQueue ? io_ctx_.queues[kEventQueue] : nullptr;
  absl::StatusOr<uint16_t> pending =
      eventq != nullptr ? eventq->Pending(*io_ctx_.memory) : absl::StatusOr<uint16_t>(uint16_t{0});
  if (pending.ok() && *pending > event_pending_after_reset_) {
    awaiting_reset_ack_ = false;  // the guest handled the event and re-posted its buffer
    return;
  }
  if (!pending.ok() || eventq == nullptr || now - reset_sent_at_ >= kResetAckWait) {
    awaiting_reset_ack_ = false;
    LogWarning(muxer_->name(), ": the guest did not re-post its event buffer within ",
               kResetAckWait.count(), " s of the transport reset; connecting anyway");
  }
}

void VsockDevice::QueueBroken(const char* queue, const absl::Status& status) {
  queue_broken_ = true;
  spare_rx_.reset();
  LogWarning(muxer_->name(), ": ", queue, " queue broken, device stopped until the driver resets it: ",
             status.message());
  io_ctx_.interrupt->SignalNeedsReset();
}

bool VsockDevice::Pump(Clock::time_point now) {
  GuestMemory& memory = *io_ctx_.memory;
  virtio::Queue& rxq = *io_ctx_.queues[kRxQueue];
  virtio::Queue& txq = *io_ctx_.queues[kTxQueue];
  int budget = kPumpBudget;
  bool tx_used = false;
  bool rx_used = false;
  bool progress = true;
  while (progress && budget > 0) {
    progress = false;
    // Guest → host.
    while (budget > 0 && muxer_->CanAcceptTx()) {
      absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = txq.Pop(memory);
      if (!chain.ok()) {
        QueueBroken("tx", chain.status());
        return false;
      }
      if (!chain->has_value()) {
        absl::StatusOr<bool> again = txq.EnableNotification(memory);
        if (again.ok() && *again) continue;
        break;
      }
      TxPacket packet = ParseTxPacket(memory, **chain, config_.guest_cid);
      if (packet.verdict == TxVerdict::kDrop && io_pre_reset_cid_ != config_.guest_cid &&
          packet.hdr.src_cid == io_pre_reset_cid_) {
        // Sent under the snapshot's CID before the guest read the transport reset: it concerns a
        // connection from before the snapshot, which no longer exists. Expected; not a warning.
        VsockStats::Add(stats_.tx_dropped);
      } else {
        muxer_->HandleTx(packet, now);
      }
      absl::Status used = txq.AddUsed(memory, (*chain)->head_index(), 0);
      if (!used.ok()) {
        QueueBroken("tx", used);
        return false;
      }
      tx_used = true;
      progress = true;
      --budget;
    }
    // Host → guest.
    while (budget > 0 && muxer_->HasPendingRx()) {
      std::optional<virtio::DescriptorChain> chain = std::move(spare_rx_);
      spare_rx_.reset();
      if (!chain.has_value()) {
        absl::StatusOr<std::optional<virtio::DescriptorChain>> popped = rxq.Pop(memory);
        if (!popped.ok()) {
          QueueBroken("rx", popped.status());
          return false;
        }
        if (!popped->has_value()) {
          absl::StatusOr<bool> again = rxq.EnableNotification(memory);
          if (again.ok() && *again) continue;
          break;
        }
        chain = std::move(*popped);
      }
      absl::StatusOr<virtio::ChainWriter> writer = virtio::ChainWriter::Create(memory, *chain);
      uint32_t written = 0;
      if (!writer.ok() || writer->remaining() <= kHeaderSize) {
        // Unusable buffer: hand it back empty so the driver can post a proper one.
        VsockStats::Add(stats_.rx_dropped);
        if (log_.Allow()) {
          LogWarning(muxer_->name(), ": rx buffer returned unused: ",
                     writer.ok() ? absl::StrCat("it has ", writer->remaining(),
                                                " writable bytes, a header + payload needs more than ",
                                                kHeaderSize)
                                 : std::string(writer.status().message()));
        }
      } else if (muxer_->FillRx(*writer, now)) {
        written = static_cast<uint32_t>(writer->bytes_written());
      } else {
        spare_rx_ = std::move(chain);  // nothing to send after all: keep it for next time
        break;
      }
      absl::Status used = rxq.AddUsed(memory, chain->head_index(), written);
      if (!used.ok()) {
        QueueBroken("rx", used);
        return false;
      }
      rx_used = true;
      progress = true;
      --budget;
    }
  }
  bool signal = false;
  if (tx_used) {
    absl::StatusOr<bool> need = txq.NeedsNotification(memory);
    signal = signal || !need.ok() || *need;
  }
  if (rx_used) {
    absl::StatusOr<bool> need = rxq.NeedsNotification(memory);
    signal = signal || !need.ok() || *need;
  }
  if (signal) io_ctx_.interrupt->SignalUsedBuffers();
  return budget == 0;
}

}  // namespace vessel::vsock
