#include "devices/virtio/mmio_transport.h"

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/virtio/virtio_ring.h"
#include "vmm/base/errors.h"

namespace vessel::virtio {
namespace {

constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kVersion = 2;
constexpr uint32_t kVendorId = 0x4c535356;  // "VSSL"
constexpr uint64_t kFeatureVersion1 = 1ull << VIRTIO_F_VERSION_1;

}  // namespace

MmioTransport::MmioTransport(std::string name, std::unique_ptr<VirtioDevice> device,
                             GuestMemory* memory, std::shared_ptr<IrqLine> irq)
    : name_(std::move(name)), device_(std::move(device)), memory_(memory), irq_(std::move(irq)) {
  for (uint16_t max : device_->queue_max_sizes()) {
    absl::StatusOr<Queue> q = Queue::Create(max);
    if (!q.ok()) {
      LogError(name_, ": bad queue size ", max, " from the device: ", q.status().message());
      continue;
    }
    queues_.push_back(std::move(*q));
  }
}

MmioTransport::~MmioTransport() {
  std::lock_guard lock(mu_);
  if (active_) device_->Reset();
}

void MmioTransport::LogBadAccess(const char* what, uint64_t offset, uint64_t detail) {
  if (bad_access_log_.Allow()) {
    LogWarning(absl::StrFormat("%s: guest %s at register %#x (size or value %#x): ignored (%d so far)",
                               name_, what, offset, detail, bad_access_log_.count()));
  }
}

void MmioTransport::Read(uint64_t offset, absl::Span<uint8_t> data) {
  if (offset >= VIRTIO_MMIO_CONFIG) {
    device_->ReadConfig(offset - VIRTIO_MMIO_CONFIG, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    LogBadAccess("read of wrong width", offset, data.size());
    std::memset(data.data(), 0, data.size());
    return;
  }
  uint32_t value;
  {
    std::lock_guard lock(mu_);
    value = ReadRegister(offset);
  }
  std::memcpy(data.data(), &value, 4);
}

void MmioTransport::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (offset >= VIRTIO_MMIO_CONFIG) {
    device_->WriteConfig(offset - VIRTIO_MMIO_CONFIG, data);
    std::lock_guard lock(mu_);
    ++config_generation_;
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    LogBadAccess("write of wrong width", offset, data.size());
    return;
  }
  uint32_t value;
  std::memcpy(&value, data.data(), 4);
  if (offset == VIRTIO_MMIO_QUEUE_NOTIFY) {
    HandleNotify(value);
    return;
  }
  std::lock_guard lock(mu_);
  WriteRegister(offset, value);
}

void MmioTransport::HandleNotify(uint32_t queue) {
  // Outside the lock: the device may complete synchronously and signal an interrupt.
  bool deliver;
  {
    std::lock_guard lock(mu_);
    deliver = active_ && queue < queues_.size() && !(status_ & VIRTIO_CONFIG_S_NEEDS_RESET) &&
              !needs_reset_.load();
  }
  if (deliver) {
    device_->NotifyQueue(static_cast<uint16_t>(queue));
  } else {
    LogBadAccess("notify of an inactive or unknown queue", VIRTIO_MMIO_QUEUE_NOTIFY, queue);
  }
}

Queue* MmioTransport::SelectedQueue() {
  return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
}

uint32_t MmioTransport::ReadRegister(uint64_t offset) {
  Queue* q = SelectedQueue();
  switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE: return kMagic;
    case VIRTIO_MMIO_VERSION: return kVersion;
    case VIRTIO_MMIO_DEVICE_ID: return device_->device_type();
    case VIRTIO_MMIO_VENDOR_ID: return kVendorId;
    case VIRTIO_MMIO_DEVICE_FEATURES: {
      uint64_t f = device_->device_features() | kFeatureVersion1;
      if (device_features_sel_ == 0) return static_cast<uint32_t>(f);
      if (device_features_sel_ == 1) return static_cast<uint32_t>(f >> 32);
      return 0;
    }
    case VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? q->max_size() : 0;
    case VIRTIO_MMIO_QUEUE_READY: return q && q->ready() ? 1 : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS: return interrupt_status_.load();
    case VIRTIO_MMIO_STATUS: return status_ | (needs_reset_.load() ? VIRTIO_CONFIG_S_NEEDS_RESET : 0);
    case VIRTIO_MMIO_CONFIG_GENERATION: return config_generation_;
    case VIRTIO_MMIO_QUEUE_DESC_LOW: return q ? static_cast<uint32_t>(q->desc_table()) : 0;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH: return q ? static_cast<uint32_t>(q->desc_table() >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW: return q ? static_cast<uint32_t>(q->avail_ring()) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH: return q ? static_cast<uint32_t>(q->avail_ring() >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_USED_LOW: return q ? static_cast<uint32_t>(q->used_ring()) : 0;
    case VIRTIO_MMIO_QUEUE_USED_HIGH: return q ? static_cast<uint32_t>(q->used_ring() >> 32) : 0;
    default:
      LogBadAccess("read of an undefined register", offset, 4);
      return 0;
  }
}

void MmioTransport::WriteRegister(uint64_t offset, uint32_t value) {
  Queue* q = SelectedQueue();
  // Queue registers may change only while the driver configures, before DRIVER_OK.
  const bool configuring = (status_ & VIRTIO_CONFIG_S_FEATURES_OK) && !(status_ & VIRTIO_CONFIG_S_DRIVER_OK);
  auto set_low = [](uint64_t old, uint32_t v) { return (old & ~0xffffffffull) | v; };
  auto set_high = [](uint64_t old, uint32_t v) { return (old & 0xffffffffull) | (uint64_t{v} << 32); };
  switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL: device_features_sel_ = value; return;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL: driver_features_sel_ = value; return;
    case VIRTIO_MMIO_DRIVER_FEATURES:
      if ((status_ & VIRTIO_CONFIG_S_DRIVER) && !(status_ & VIRTIO_CONFIG_S_FEATURES_OK)) {
        if (driver_features_sel_ == 0) driver_features_ = set_low(driver_features_, value);
        else if (driver_features_sel_ == 1) driver_features_ = set_high(driver_features_, value);
      } else {
        LogBadAccess("feature write outside negotiation", offset, 4);
      }
      return;
    case VIRTIO_MMIO_QUEUE_SEL: queue_sel_ = value; return;
    case VIRTIO_MMIO_INTERRUPT_ACK: interrupt_status_.fetch_and(~value); return;
    case VIRTIO_MMIO_STATUS: SetStatus(value); return;
    default: break;
  }
  if (q == nullptr || !configuring) {
    LogBadAccess(q == nullptr ? "write to an unselected queue" : "queue write outside configuration",
                 offset, 4);
    return;
  }
  switch (offset) {
    case VIRTIO_MMIO_QUEUE_NUM:
      if (value > 0xffff || !q->SetSize(static_cast<uint16_t>(value)).ok()) {
        LogBadAccess("bad queue size", offset, value);
      }
      return;
    case VIRTIO_MMIO_QUEUE_READY: q->SetReady(value == 1); return;
    case VIRTIO_MMIO_QUEUE_DESC_LOW: q->SetDescTable(set_low(q->desc_table(), value)); return;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH: q->SetDescTable(set_high(q->desc_table(), value)); return;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW: q->SetAvailRing(set_low(q->avail_ring(), value)); return;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH: q->SetAvailRing(set_high(q->avail_ring(), value)); return;
    case VIRTIO_MMIO_QUEUE_USED_LOW: q->SetUsedRing(set_low(q->used_ring(), value)); return;
    case VIRTIO_MMIO_QUEUE_USED_HIGH: q->SetUsedRing(set_high(q->used_ring(), value)); return;
    default: LogBadAccess("write to an undefined register", offset, 4); return;
  }
}

void MmioTransport::SetStatus(uint32_t value) {
  if (value == 0) {
    ResetLocked();
    return;
  }
  // Bits only accumulate (except through reset); FAILED may be set at any time.
  if ((value & status_) != status_) {
    LogBadAccess("status write clearing bits", VIRTIO_MMIO_STATUS, value);
    return;
  }
  uint32_t added = value & ~status_;
  if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
    const uint64_t offered = device_->device_features() | kFeatureVersion1;
    if ((driver_features_ & ~offered) || !(driver_features_ & kFeatureVersion1)) {
      // Unoffered features or a legacy driver: FEATURES_OK does not stick, the driver sees it.
      LogWarning(name_, ": driver features ", absl::StrFormat("%#x", driver_features_),
                 " refused (offered ", absl::StrFormat("%#x", offered), ", VERSION_1 required)");
      value &= ~static_cast<uint32_t>(VIRTIO_CONFIG_S_FEATURES_OK);
    }
  }
  if ((added & VIRTIO_CONFIG_S_DRIVER_OK) && !active_) {
    if (!(value & VIRTIO_CONFIG_S_FEATURES_OK)) {
      LogBadAccess("DRIVER_OK without FEATURES_OK", VIRTIO_MMIO_STATUS, value);
      return;
    }
    absl::Status s = ActivateLocked();
    if (!s.ok()) {
      LogWarning(name_, ": ", s.message());
      status_ = value | VIRTIO_CONFIG_S_NEEDS_RESET;
      Raise(VIRTIO_MMIO_INT_CONFIG);
      return;
    }
  }
  status_ = value;
}

absl::Status MmioTransport::ActivateLocked() {
  ActivateContext ctx{memory_, {}, driver_features_, this};
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue& q = queues_[i];
    q.SetEventIdx(driver_features_ & (1ull << VIRTIO_RING_F_EVENT_IDX));
    if (q.ready()) {
      absl::Status valid = q.Validate(*memory_);
      if (!valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("queue ", i, " rejected at DRIVER_OK: ", valid.message()));
      }
    }
    ctx.queues.push_back(&q);
  }
  absl::Status s = device_->Activate(ctx);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("activation failed: ", s.message()));
  active_ = true;
  return absl::OkStatus();
}

absl::Status MmioTransport::Pause() {
  std::lock_guard lock(mu_);
  if (paused_) return absl::OkStatus();
  if (active_) {
    absl::Status s = device_->Pause();
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(name_, ": pause: ", s.message()));
  }
  paused_ = true;
  return absl::OkStatus();
}

void MmioTransport::Unpause() {
  std::lock_guard lock(mu_);
  if (!paused_) return;
  paused_ = false;
  if (active_) device_->Unpause();
}

bool MmioTransport::paused() const {
  std::lock_guard lock(mu_);
  return paused_;
}

absl::StatusOr<snapshot::v1::VirtioMmioState> MmioTransport::SaveState() const {
  std::lock_guard lock(mu_);
  if (active_ && !paused_) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, ": saving its state needs the device paused (Pause()) or inactive"));
  }
  snapshot::v1::VirtioMmioState state;
  state.set_device_type(device_->device_type());
  state.set_status(status_);
  state.set_device_features_sel(device_features_sel_);
  state.set_driver_features_sel(driver_features_sel_);
  state.set_driver_features(driver_features_);
  state.set_queue_sel(queue_sel_);
  state.set_config_generation(config_generation_);
  state.set_active(active_);
  state.set_interrupt_status(interrupt_status_.load());
  state.set_needs_reset(needs_reset_.load());
  for (const Queue& q : queues_) *state.add_queues() = q.SaveState();
  absl::StatusOr<std::string> device_state = device_->SaveState();
  if (!device_state.ok()) {
    return absl::Status(device_state.status().code(),
                        absl::StrCat(name_, ": saving the device's state: ",
                                     device_state.status().message()));
  }
  state.set_device_state(std::move(*device_state));
  return state;
}

absl::Status MmioTransport::RestoreState(const snapshot::v1::VirtioMmioState& state) {
  std::lock_guard lock(mu_);
  if (active_ || status_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        name_, ": restore needs a fresh transport, but a driver has already configured it"));
  }
  absl::Status s = RestoreLocked(state);
  if (!s.ok()) {
    // The device may hold restored state without being active: back to its initial state too.
    if (!active_) device_->Reset();
    ResetLocked();
    return absl::Status(s.code(), absl::StrCat(name_, ": snapshot state refused: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status MmioTransport::RestoreLocked(const snapshot::v1::VirtioMmioState& state) {
  if (state.device_type() != device_->device_type()) {
    return absl::InvalidArgumentError(absl::StrCat("device_type ", state.device_type(),
                                                   " in the snapshot, this device is type ",
                                                   device_->device_type()));
  }
  if (static_cast<size_t>(state.queues_size()) != queues_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the snapshot has ", state.queues_size(),
                                                   " queues, this device has ", queues_.size()));
  }
  const uint32_t status = state.status();
  const bool features_ok = status & VIRTIO_CONFIG_S_FEATURES_OK;
  if ((status & VIRTIO_CONFIG_S_DRIVER_OK) && !features_ok) {
    return absl::InvalidArgumentError(
        absl::StrFormat("status %#x has DRIVER_OK without FEATURES_OK", status));
  }
  if (state.active() && !(status & VIRTIO_CONFIG_S_DRIVER_OK)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the snapshot says active, but status %#x lacks DRIVER_OK", status));
  }
  if (features_ok) {
    const uint64_t offered = device_->device_features() | kFeatureVersion1;
    if ((state.driver_features() & ~offered) || !(state.driver_features() & kFeatureVersion1)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the driver accepted features %#x, this device offers %#x (a different configuration, "
          "e.g. read-only or not?)",
          state.driver_features(), offered));
    }
  }
  for (size_t i = 0; i < queues_.size(); ++i) {
    absl::Status q = queues_[i].RestoreState(state.queues(static_cast<int>(i)));
    if (!q.ok()) return absl::Status(q.code(), absl::StrCat("queue ", i, ": ", q.message()));
  }
  status_ = status;
  device_features_sel_ = state.device_features_sel();
  driver_features_sel_ = state.driver_features_sel();
  driver_features_ = state.driver_features();
  queue_sel_ = state.queue_sel();
  config_generation_ = state.config_generation();
  interrupt_status_.store(state.interrupt_status());
  needs_reset_.store(state.needs_reset());

  absl::Status dev = device_->RestoreState(state.device_state());
  if (!dev.ok()) {
    return absl::Status(dev.code(), absl::StrCat("device state: ", dev.message()));
  }
  if (state.active() && !state.needs_reset()) {
    // As on DRIVER_OK: ready queues are checked against guest memory, then the device runs.
    VESSEL_RETURN_IF_ERROR(ActivateLocked());
  }
  return absl::OkStatus();
}

void MmioTransport::ResetLocked() {
  if (active_) device_->Reset();
  active_ = false;
  paused_ = false;
  for (Queue& q : queues_) q.Reset();
  status_ = 0;
  needs_reset_.store(false);
  device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
  driver_features_ = 0;
  interrupt_status_.store(0);
}

uint32_t MmioTransport::status() const {
  std::lock_guard lock(mu_);
  return status_ | (needs_reset_.load() ? VIRTIO_CONFIG_S_NEEDS_RESET : 0);
}

void MmioTransport::SignalNeedsReset() {
  needs_reset_.store(true);
  Raise(VIRTIO_MMIO_INT_CONFIG);
}

void MmioTransport::Raise(uint32_t bits) {
  interrupt_status_.fetch_or(bits);
  // Edge-triggered IOAPIC pin: each signal is a fresh rising edge.
  if (irq_) {
    irq_->SetLevel(true);
    irq_->SetLevel(false);
  }
}

void MmioTransport::SignalUsedBuffers() { Raise(VIRTIO_MMIO_INT_VRING); }

void MmioTransport::SignalConfigChange() {
  {
    std::lock_guard lock(mu_);
    ++config_generation_;
  }
  Raise(VIRTIO_MMIO_INT_CONFIG);
}

}  // namespace vessel::virtio
