#include "devices/net/tx.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "devices/net/vnet_header.h"

namespace vessel::net {

NetTx::NetTx(Tap* tap, NetStats* stats, RateLimiter* log, std::string name)
    : tap_(tap), stats_(stats), log_(log), name_(std::move(name)), buffer_(kMaxFrameBytes) {}

NetTx::PassResult NetTx::Process(GuestMemory& memory, virtio::Queue& queue, uint64_t acked_features,
                                 int budget) {
  PassResult result;
  // No kicks while we are draining the queue anyway.
  if (absl::Status s = queue.DisableNotification(memory); !s.ok()) {
    result.broken = s;
    return result;
  }
  while (budget > 0) {
    absl::StatusOr<std::optional<virtio::DescriptorChain>> chain = queue.Pop(memory);
    if (!chain.ok()) {
      result.broken = chain.status();
      return result;
    }
    if (!chain->has_value()) {
      absl::StatusOr<bool> again = queue.EnableNotification(memory);
      if (!again.ok()) {
        result.broken = again.status();
        return result;
      }
      if (*again) continue;
      return result;
    }
    Transmit(memory, **chain, acked_features);
    if (absl::Status s = queue.AddUsed(memory, (*chain)->head_index(), 0); !s.ok()) {
      result.broken = s;
      return result;
    }
    result.used = true;
    --budget;
  }
  result.more = true;
  return result;
}

void NetTx::Drop(NetStats::Counter& counter, absl::string_view why) {
  NetStats::Add(counter);
  if (log_->Allow()) LogWarning(name_, ": tx frame dropped: ", why);
}

void NetTx::Transmit(const GuestMemory& memory, const virtio::DescriptorChain& chain,
                     uint64_t acked_features) {
  descriptors_.clear();
  // Walk the chain by hand (not Collect()) to reuse one vector across frames.
  virtio::DescriptorChain walk = chain;
  walk.Rewind();
  uint64_t total = 0;
  for (;;) {
    absl::StatusOr<std::optional<virtio::Descriptor>> d = walk.Next();
    if (!d.ok()) {
      Drop(stats_->tx_dropped_malformed, absl::StrCat("malformed chain: ", d.status().message()));
      return;
    }
    if (!d->has_value()) break;
    if ((*d)->is_write) {
      Drop(stats_->tx_dropped_malformed,
           absl::StrCat("chain ", chain.head_index(), " has a device-writable buffer"));
      return;
    }
    total += (*d)->len;
    if (total > kMaxFrameBytes) {
      Drop(stats_->tx_dropped_malformed,
           absl::StrCat("chain ", chain.head_index(), " holds more than ", kMaxFrameBytes,
                        " bytes (vnet header + 65550-byte frame)"));
      return;
    }
    descriptors_.push_back(**d);
  }
  if (total < kMinFrameBytes) {
    Drop(stats_->tx_dropped_malformed,
         absl::StrCat("chain ", chain.head_index(), " holds ", total,
                      " bytes, less than the vnet header + an Ethernet header (", kMinFrameBytes,
                      ")"));
    return;
  }
  virtio::ChainReader reader(memory, descriptors_);
  if (absl::Status s = reader.Read(buffer_.data(), total); !s.ok()) {
    Drop(stats_->tx_dropped_malformed,
         absl::StrCat("reading chain ", chain.head_index(), ": ", s.message()));
    return;
  }
  virtio_net_hdr_v1 hdr;
  std::memcpy(&hdr, buffer_.data(), sizeof(hdr));
  if (absl::string_view bad = SanitizeTxHeader(hdr, acked_features); !bad.empty()) {
    Drop(stats_->tx_dropped_offload, bad);
    return;
  }
  std::memcpy(buffer_.data(), &hdr, sizeof(hdr));
  if (absl::Status s = tap_->Write(absl::MakeConstSpan(buffer_.data(), total)); !s.ok()) {
    Drop(stats_->tx_dropped_tap_error, s.message());
    return;
  }
  NetStats::Add(stats_->tx_packets);
  NetStats::Add(stats_->tx_bytes, total - kVnetHdrSize);
}

}  // namespace vessel::net
