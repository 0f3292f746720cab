#include "devices/net/net_device.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/net/virtio_net_uapi.h"
#include "devices/virtio/virtio_ring.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/base/errors.h"
#include "vmm/seccomp/seccomp.h"

namespace vessel::net {
namespace {

constexpr uint64_t kWakeToken = 1;
constexpr uint64_t kTapToken = 2;

constexpr uint64_t Bit(unsigned bit) { return 1ull << bit; }

}  // namespace

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(const NetConfig& config) {
  VESSEL_RETURN_IF_ERROR(ValidateNetConfig(config));
  VESSEL_ASSIGN_OR_RETURN(Tap tap, Tap::Open(config.tap_name, config.netns_path));
  const MacAddress mac = config.mac.has_value() ? *config.mac : RandomMac();
  std::unique_ptr<NetDevice> dev(new NetDevice(config, mac, std::move(tap)));
  VESSEL_RETURN_IF_ERROR(dev->Init());
  return dev;
}

NetDevice::NetDevice(const NetConfig& config, MacAddress mac, Tap tap)
    : config_(config),
      name_(absl::StrCat("virtio-net ", tap.name())),
      tap_(std::move(tap)),
      mac_(mac),
      tx_(&tap_, &stats_, &log_, name_),
      rx_(&tap_, &stats_, &log_, name_) {}

absl::Status NetDevice::Init() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoStatus(absl::StrCat(name_, ": epoll_create1"));
  wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_.valid()) return ErrnoStatus(absl::StrCat(name_, ": eventfd"));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    return ErrnoStatus(absl::StrCat(name_, ": epoll_ctl(eventfd)"));
  }
  // Edge-triggered: the loop reads the tap until it is empty, or remembers that it stopped early
  // (budget, or no guest buffers: then the driver's kick brings it back).
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = kTapToken;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, tap_.fd(), &ev) != 0) {
    return ErrnoStatus(absl::StrCat(name_, ": epoll_ctl(tap)"));
  }
  io_thread_ = std::thread([this, filter = seccomp::ForNewThread(seccomp::ThreadKind::kNet)] {
    filter.Install();
    IoThread();
  });
  return absl::OkStatus();
}

NetDevice::~NetDevice() {
  if (io_thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    Wake();
    cv_.notify_all();  // a paused I/O thread waits on cv_
    io_thread_.join();
  }
}

uint32_t NetDevice::device_type() const { return VIRTIO_ID_NET; }

uint64_t NetDevice::device_features() const {
  return Bit(VIRTIO_F_VERSION_1) | Bit(VIRTIO_RING_F_INDIRECT_DESC) | Bit(VIRTIO_RING_F_EVENT_IDX) |
         Bit(VIRTIO_NET_F_MAC) | Bit(VIRTIO_NET_F_STATUS) | Bit(VIRTIO_NET_F_MRG_RXBUF) |
         Bit(VIRTIO_NET_F_CSUM) | Bit(VIRTIO_NET_F_GUEST_CSUM) | Bit(VIRTIO_NET_F_GUEST_TSO4) |
         Bit(VIRTIO_NET_F_GUEST_TSO6) | Bit(VIRTIO_NET_F_HOST_TSO4) | Bit(VIRTIO_NET_F_HOST_TSO6);
}

void NetDevice::ReadConfig(uint64_t offset, absl::Span<uint8_t> data) {
  virtio_net_config cfg{};
  const MacAddress mac = this->mac();
  std::memcpy(cfg.mac, mac.data(), mac.size());
  cfg.status = VIRTIO_NET_S_LINK_UP;  // little endian on x86_64
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&cfg);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t o = offset + i;
    data[i] = o < sizeof(cfg) ? bytes[o] : 0;
  }
}

void NetDevice::WriteConfig(uint64_t, absl::Span<const uint8_t>) {
  // The MAC is writable only in legacy virtio (and with CTRL_MAC_ADDR, not offered).
}

absl::Status NetDevice::Activate(const virtio::ActivateContext& context) {
  if (context.queues.size() != 2 || context.queues[kRxQueue] == nullptr ||
      context.queues[kTxQueue] == nullptr || !context.queues[kRxQueue]->ready() ||
      !context.queues[kTxQueue]->ready()) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, ": the rx and tx queues must be set up and ready before DRIVER_OK"));
  }
  VESSEL_RETURN_IF_ERROR(tap_.SetOffload(TapOffloadsForGuestFeatures(context.acked_features)));
  {
    std::lock_guard lock(mu_);
    ctx_ = context;
    active_ = true;
  }
  Wake();
  return absl::OkStatus();
}

void NetDevice::NotifyQueue(uint16_t) { Wake(); }

void NetDevice::Wake() {
  const uint64_t one = 1;
  ssize_t unused = ::write(wake_.get(), &one, sizeof(one));
  (void)unused;  // EAGAIN: the counter is already non-zero, a wake-up is pending anyway
}

void NetDevice::Reset() {
  {
    std::unique_lock lock(mu_);
    active_ = false;
    paused_ = false;
    ctx_ = virtio::ActivateContext{};
    const uint64_t target = ++reset_requested_;
    Wake();
    cv_.notify_all();  // a paused I/O thread waits on cv_
    // The I/O thread finishes its pass, then forgets the queues and the pending frame.
    cv_.wait(lock, [&] { return reset_done_ >= target || stopping_; });
  }
  // Frames queued in the tap until the next activation come fully checksummed and segmented.
  absl::Status s = tap_.SetOffload(0);
  if (!s.ok()) LogWarning(name_, ": ", s.message());
}

absl::Status NetDevice::Pause() {
  std::unique_lock lock(mu_);
  if (!active_ || paused_) return absl::OkStatus();
  paused_ = true;
  const uint64_t target = ++pause_requested_;
  Wake();
  // The I/O thread finishes its pass, gives back held rx chains, then parks.
  cv_.wait(lock, [&] { return pause_done_ >= target || stopping_; });
  return absl::OkStatus();
}

void NetDevice::Unpause() {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return;
    paused_ = false;
  }
  cv_.notify_all();
  Wake();
}

absl::StatusOr<std::string> NetDevice::SaveState() const {
  snapshot::v1::NetState state;
  const MacAddress mac = this->mac();
  state.set_mac(std::string(mac.begin(), mac.end()));
  state.set_tap_name(tap_.name());
  return state.SerializeAsString();
}

absl::Status NetDevice::RestoreState(absl::string_view bytes) {
  snapshot::v1::NetState state;
  if (!state.ParseFromString(std::string(bytes)) || state.mac().size() != 6 ||
      state.tap_name().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name_, ": the snapshot's device state is not a virtio-net state (", bytes.size(),
        " bytes)"));
  }
  MacAddress saved;
  std::memcpy(saved.data(), state.mac().data(), saved.size());
  if (state.tap_name() != tap_.name()) {
    LogInfo(name_, ": restoring a guest NIC that was on tap ", state.tap_name(), " onto tap ",
            tap_.name());
  }
  std::lock_guard lock(mu_);
  if (!config_.mac.has_value()) {
    mac_ = saved;  // none configured: the guest keeps the address it has been using
  } else if (*config_.mac != saved) {
    LogInfo(name_, ": restored guest had MAC ", FormatMac(saved), "; config space now shows ",
            FormatMac(*config_.mac), " (a Linux guest reads it only when it probes the device)");
  }
  return absl::OkStatus();
}

void NetDevice::EnterPause() {
  if (!io_active_ || queue_broken_) return;
  GuestMemory& memory = *io_ctx_.memory;
  virtio::Queue& rxq = *io_ctx_.queues[kRxQueue];
  bool used = false;
  absl::Status s = rx_.ReleaseHeld(memory, rxq, &used);
  if (!s.ok()) {
    QueueBroken("rx", s);
    return;
  }
  if (used) {
    absl::StatusOr<bool> need = rxq.NeedsNotification(memory);
    if (!need.ok() || *need) io_ctx_.interrupt->SignalUsedBuffers();
  }
}

void NetDevice::IoThread() {
  pthread_setname_np(pthread_self(), "net-io");
  bool more = false;
  for (;;) {
    epoll_event events[4];
    const int n = ::epoll_wait(epoll_.get(), events, 4, more ? 0 : -1);
    if (n < 0 && errno != EINTR && log_.Allow()) {
      LogError(name_, ": epoll_wait failed: ", std::strerror(errno));
    }
    uint64_t counter;
    ssize_t unused = ::read(wake_.get(), &counter, sizeof(counter));
    (void)unused;

    uint64_t reset_target;
    bool active;
    bool paused;
    uint64_t pause_target;
    virtio::ActivateContext ctx;
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      reset_target = reset_requested_;
      active = active_;
      paused = paused_;
      pause_target = pause_requested_;
      ctx = ctx_;
    }
    if (reset_target != io_reset_seen_) {
      io_active_ = false;
      io_ctx_ = virtio::ActivateContext{};
      queue_broken_ = false;
      rx_.Reset();
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
      more = true;  // look again at once (the tap is edge-triggered: read it until empty)
      continue;
    }
    more = io_active_ && !queue_broken_ && Pump();
  }
  // Stopping: wake a Reset() that may be waiting.
  cv_.notify_all();
}

void NetDevice::QueueBroken(const char* queue, const absl::Status& status) {
  queue_broken_ = true;
  LogWarning(name_, ": ", queue,
             " queue broken, device stopped until the driver resets it: ", status.message());
  io_ctx_.interrupt->SignalNeedsReset();
}

bool NetDevice::Pump() {
  GuestMemory& memory = *io_ctx_.memory;
  virtio::Queue& rxq = *io_ctx_.queues[kRxQueue];
  virtio::Queue& txq = *io_ctx_.queues[kTxQueue];
  const uint64_t features = io_ctx_.acked_features;

  NetTx::PassResult tx = tx_.Process(memory, txq, features, kBudget);
  if (!tx.broken.ok()) {
    QueueBroken("tx", tx.broken);
    return false;
  }
  NetRx::PassResult rx = rx_.Process(memory, rxq, features, kBudget);
  if (!rx.broken.ok()) {
    QueueBroken("rx", rx.broken);
    return false;
  }
  bool signal = false;
  if (tx.used) {
    absl::StatusOr<bool> need = txq.NeedsNotification(memory);
    signal = signal || !need.ok() || *need;
  }
  if (rx.used) {
    absl::StatusOr<bool> need = rxq.NeedsNotification(memory);
    signal = signal || !need.ok() || *need;
  }
  if (signal) {
    NetStats::Add(stats_.interrupts);
    io_ctx_.interrupt->SignalUsedBuffers();
  }
  return tx.more || rx.more;
}

}  // namespace vessel::net
