// NetRx: the tap → guest direction of a virtio-net device.
//
// A frame (vnet header first) is read from the tap into the device's own buffer, then placed into
// guest rx chains. With VIRTIO_NET_F_MRG_RXBUF it may span several chains: as many are popped as
// the frame needs, the first one's header gets num_buffers, and all of them are published with one
// used-idx store (the driver sees the whole frame or nothing). Without it a frame must fit one
// chain.
//
// Backpressure: when the guest has too few buffers right now, the frame stays pending (with the
// chains already popped for it) and the tap is not read any further until the driver notifies the
// rx queue. Drops are explicit and counted, never a silent truncation: a frame larger than one
// chain (no MRG_RXBUF) or than everything the queue can hold (MRG_RXBUF: queue size chains), or
// larger than the 65562-byte frame buffer. Chains the device cannot use (malformed, or shorter
// than the vnet header) go back at once with length 0.
//
// Used by the device's I/O thread only.
#ifndef VESSEL_DEVICES_NET_RX_H_
#define VESSEL_DEVICES_NET_RX_H_

#include <cstdint>
#include <deque>
#include <optional>
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

class NetRx {
 public:
  // `tap`, `stats` and `log` must outlive this; `name` prefixes log lines.
  NetRx(Tap* tap, NetStats* stats, RateLimiter* log, std::string name);

  struct PassResult {
    bool used = false;     // chains were returned: maybe interrupt the driver
    bool more = false;     // the budget ran out with frames possibly left in the tap
    bool blocked = false;  // a frame waits for guest buffers; the driver's kick resumes
    absl::Status broken;   // the ring is corrupt: stop using the queue
  };
  // Moves frames from the tap into the guest until the tap is empty, the guest runs out of
  // buffers (blocked), or `budget` frames were handled.
  PassResult Process(GuestMemory& memory, virtio::Queue& queue, uint64_t acked_features,
                     int budget);

  // Forgets the pending frame and the chains held for it (device reset: the queue is gone).
  void Reset();
  // Gives the chains held for the pending frame back to the queue (pausing for a snapshot: a
  // restored device must not lose them). When they are the last chains popped they are un-popped
  // (Queue::UndoPop: the driver sees nothing); otherwise (an unusable chain was returned after
  // them) they go back used with length 0, which a driver drops as a short frame. The frame itself
  // stays pending. `used` is set when chains went back used.
  absl::Status ReleaseHeld(GuestMemory& memory, virtio::Queue& queue, bool* used);
  bool has_pending_frame() const { return frame_len_ != 0; }

 private:
  enum class Placement { kDelivered, kDropped, kNeedBuffers, kBroken };
  struct HeldChain {
    uint16_t head;
    uint64_t capacity;  // writable bytes
    std::vector<virtio::Descriptor> writable;
  };

  // Reads the next frame into frame_; false when there is none (or the read failed).
  bool ReadFrame(uint64_t acked_features);
  // Places the pending frame; pops chains as needed.
  Placement Place(GuestMemory& memory, virtio::Queue& queue, bool mergeable, PassResult& result);
  // Copies the pending frame into the first `chains` held chains and publishes them.
  Placement Deliver(GuestMemory& memory, virtio::Queue& queue, size_t chains, PassResult& result);
  void DropFrame(NetStats::Counter& counter, absl::string_view why);

  Tap* tap_;
  NetStats* stats_;
  RateLimiter* log_;
  std::string name_;
  std::vector<uint8_t> frame_;
  size_t frame_len_ = 0;        // 0: no frame pending
  std::deque<HeldChain> held_;  // popped, not used yet, in pop order
  uint64_t held_capacity_ = 0;
  // An unusable chain was returned (used) while chains were held: they are not the last popped.
  bool held_interleaved_ = false;
  std::vector<virtio::UsedElement> used_;
  bool notifications_enabled_ = true;
};

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_RX_H_
