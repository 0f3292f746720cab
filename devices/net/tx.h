// NetTx: the guest → tap direction of a virtio-net device. Each tx chain is a virtio_net_hdr_v1
// followed by an Ethernet frame, in any buffer layout (header split from the data or not, many
// segments, an indirect table); it is gathered into one buffer, checked, and written to the tap,
// header included. Every chain goes back to the driver (used length 0) whatever happened to it;
// a bad one is dropped, counted and logged (rate-limited) and the device carries on. Only a broken
// ring stops the queue.
//
// Used by the device's I/O thread only.
#ifndef VESSEL_DEVICES_NET_TX_H_
#define VESSEL_DEVICES_NET_TX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "devices/net/counters.h"
#include "devices/net/tap.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/queue.h"
#include "vmm/base/log.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::net {

class NetTx {
 public:
  // `tap`, `stats` and `log` must outlive this; `name` prefixes log lines.
  NetTx(Tap* tap, NetStats* stats, RateLimiter* log, std::string name);

  struct PassResult {
    bool used = false;    // chains were returned: maybe interrupt the driver
    bool more = false;    // the budget ran out with chains possibly left
    absl::Status broken;  // the ring is corrupt: stop using the queue
  };
  // Takes up to `budget` chains off `queue` and transmits each; re-enables the driver's kicks when
  // the queue is empty.
  PassResult Process(GuestMemory& memory, virtio::Queue& queue, uint64_t acked_features,
                     int budget);
  // Gathers, checks and writes one chain's frame; counts the outcome. Does not touch the ring.
  void Transmit(const GuestMemory& memory, const virtio::DescriptorChain& chain,
                uint64_t acked_features);

 private:
  void Drop(NetStats::Counter& counter, absl::string_view why);

  Tap* tap_;
  NetStats* stats_;
  RateLimiter* log_;
  std::string name_;
  std::vector<uint8_t> buffer_;
  std::vector<virtio::Descriptor> descriptors_;
};

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_TX_H_
