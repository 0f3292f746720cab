#include "devices/net/rx.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "devices/net/vnet_header.h"
#include "vmm/base/errors.h"

namespace vessel::net {

NetRx::NetRx(Tap* tap, NetStats* stats, RateLimiter* log, std::string name)
    : tap_(tap), stats_(stats), log_(log), name_(std::move(name)), frame_(kMaxFrameBytes) {}

void NetRx::Reset() {
  if (frame_len_ != 0) NetStats::Add(stats_->rx_dropped_reset);
  frame_len_ = 0;
  held_.clear();
  held_capacity_ = 0;
  held_interleaved_ = false;
  notifications_enabled_ = true;  // a fresh queue starts with kicks on
}

absl::Status NetRx::ReleaseHeld(GuestMemory& memory, virtio::Queue& queue, bool* used) {
  if (held_.empty()) return absl::OkStatus();
  if (!held_interleaved_) {
    queue.UndoPop(static_cast<uint16_t>(held_.size()));
  } else {
    used_.clear();
    for (const HeldChain& h : held_) used_.push_back({h.head, 0});
    VESSEL_RETURN_IF_ERROR(queue.AddUsedBatch(memory, used_));
    *used = true;
  }
  held_.clear();
  held_capacity_ = 0;
  held_interleaved_ = false;
  return absl::OkStatus();
}

void NetRx::DropFrame(NetStats::Counter& counter, absl::string_view why) {
  NetStats::Add(counter);
  frame_len_ = 0;
  if (log_->Allow()) LogWarning(name_, ": rx frame dropped: ", why);
}

bool NetRx::ReadFrame(uint64_t acked_features) {
  for (;;) {
    absl::StatusOr<size_t> n = tap_->Read(absl::MakeSpan(frame_));
    if (!n.ok()) {
      NetStats::Add(stats_->rx_tap_errors);
      if (log_->Allow()) LogWarning(name_, ": ", n.status().message());
      return false;
    }
    if (*n == 0) return false;
    if (*n > frame_.size()) {
      DropFrame(stats_->rx_dropped_too_big, absl::StrCat(*n, " bytes from the tap, more than the ",
                                                         frame_.size(), "-byte frame buffer"));
      continue;
    }
    if (*n < kMinFrameBytes) {
      NetStats::Add(stats_->rx_tap_errors);
      if (log_->Allow())
        LogWarning(name_, ": ", *n, "-byte read from the tap is shorter than a frame");
      continue;
    }
    virtio_net_hdr_v1 hdr;
    std::memcpy(&hdr, frame_.data(), sizeof(hdr));
    if (absl::string_view bad = SanitizeRxHeader(hdr, acked_features); !bad.empty()) {
      DropFrame(stats_->rx_dropped_offload, bad);
      continue;
    }
    std::memcpy(frame_.data(), &hdr, sizeof(hdr));
    frame_len_ = *n;
    return true;
  }
}

NetRx::PassResult NetRx::Process(GuestMemory& memory, virtio::Queue& queue, uint64_t acked_features,
                                 int budget) {
  PassResult result;
  const bool mergeable = (acked_features >> VIRTIO_NET_F_MRG_RXBUF) & 1;
  while (budget > 0) {
    if (frame_len_ == 0 && !ReadFrame(acked_features)) break;
    switch (Place(memory, queue, mergeable, result)) {
      case Placement::kDelivered:
      case Placement::kDropped:
        frame_len_ = 0;
        --budget;
        continue;
      case Placement::kNeedBuffers: {
        // Ask for a kick when buffers arrive, then look again: some may have raced in.
        absl::StatusOr<bool> again = queue.EnableNotification(memory);
        if (!again.ok()) {
          result.broken = again.status();
          return result;
        }
        notifications_enabled_ = true;
        if (*again) continue;
        result.blocked = true;
        return result;
      }
      case Placement::kBroken:
        return result;
    }
  }
  result.more = budget == 0;
  // Not waiting for buffers: the driver need not kick us when it adds some.
  if (notifications_enabled_) {
    if (absl::Status s = queue.DisableNotification(memory); !s.ok()) {
      result.broken = s;
      return result;
    }
    notifications_enabled_ = false;
  }
  return result;
}

NetRx::Placement NetRx::Place(GuestMemory& memory, virtio::Queue& queue, bool mergeable,
                              PassResult& result) {
  const uint64_t len = frame_len_;
  // A driver cannot have more chains outstanding than the queue size.
  const size_t max_chains = mergeable ? queue.size() : 1;
  for (;;) {
    if (held_capacity_ >= len || held_.size() >= max_chains) {
      uint64_t covered = 0;
      size_t chains = 0;
      while (chains < held_.size() && chains < max_chains && covered < len) {
        covered += held_[chains++].capacity;
      }
      if (covered >= len) return Deliver(memory, queue, chains, result);
    }
    if (held_.size() >= max_chains) {
      // The chains stay held for the next frame.
      DropFrame(stats_->rx_dropped_too_big,
                mergeable
                    ? absl::StrCat(len, "-byte frame (with vnet header) exceeds all ", held_.size(),
                                   " rx buffers the queue can hold (", held_capacity_, " bytes)")
                    : absl::StrCat(len, "-byte frame (with vnet header) does not fit the ",
                                   held_capacity_,
                                   "-byte rx buffer and mergeable rx buffers "
                                   "were not negotiated"));
      return Placement::kDropped;
    }
    absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = queue.Pop(memory);
    if (!chain.ok()) {
      result.broken = chain.status();
      return Placement::kBroken;
    }
    if (!chain->has_value()) return Placement::kNeedBuffers;
    virtio::DescriptorChain& c = **chain;
    HeldChain held{c.head_index(), 0, {}};
    absl::Status bad;
    for (;;) {
      absl::StatusOr<std::optional<virtio::Descriptor>> d = c.Next();
      if (!d.ok()) {
        bad = d.status();
        break;
      }
      if (!d->has_value()) break;
      if ((*d)->is_write && (*d)->len > 0) {
        held.writable.push_back(**d);
        held.capacity += (*d)->len;
      }
    }
    if (bad.ok() && held.capacity < kVnetHdrSize) {
      bad = absl::InvalidArgumentError(absl::StrCat("chain ", held.head, " has ", held.capacity,
                                                    " writable bytes, less than the ", kVnetHdrSize,
                                                    "-byte vnet header"));
    }
    if (!bad.ok()) {
      // Unusable: give it back empty at once (before the frame's own chains; the driver drops it).
      NetStats::Add(stats_->rx_buffers_malformed);
      if (log_->Allow()) LogWarning(name_, ": rx chain returned unused: ", bad.message());
      if (absl::Status s = queue.AddUsed(memory, held.head, 0); !s.ok()) {
        result.broken = s;
        return Placement::kBroken;
      }
      if (!held_.empty()) held_interleaved_ = true;
      result.used = true;
      continue;
    }
    held_capacity_ += held.capacity;
    held_.push_back(std::move(held));
  }
}

NetRx::Placement NetRx::Deliver(GuestMemory& memory, virtio::Queue& queue, size_t chains,
                                PassResult& result) {
  const uint64_t len = frame_len_;
  // num_buffers: little endian, in the first chain's header.
  const uint16_t num_buffers = static_cast<uint16_t>(chains);
  std::memcpy(frame_.data() + offsetof(virtio_net_hdr_v1, num_buffers), &num_buffers,
              sizeof(num_buffers));
  used_.clear();
  uint64_t offset = 0;
  for (size_t i = 0; i < chains; ++i) {
    const HeldChain& h = held_[i];
    const uint64_t n = std::min(h.capacity, len - offset);
    virtio::ChainWriter writer(memory, h.writable);
    if (absl::Status s = writer.Write(frame_.data() + offset, n); !s.ok()) {
      result.broken = s;
      return Placement::kBroken;
    }
    used_.push_back({h.head, static_cast<uint32_t>(n)});
    offset += n;
  }
  if (absl::Status s = queue.AddUsedBatch(memory, used_); !s.ok()) {
    result.broken = s;
    return Placement::kBroken;
  }
  for (size_t i = 0; i < chains; ++i) {
    held_capacity_ -= held_.front().capacity;
    held_.pop_front();
  }
  if (held_.empty()) held_interleaved_ = false;
  result.used = true;
  NetStats::Add(stats_->rx_packets);
  NetStats::Add(stats_->rx_bytes, len - kVnetHdrSize);
  return Placement::kDelivered;
}

}  // namespace vessel::net
