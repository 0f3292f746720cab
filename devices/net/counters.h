// NetCounters: what a virtio-net device did, as a snapshot; NetStats: the live counters the I/O
// thread bumps (relaxed atomics) and any thread may read.
#ifndef VESSEL_DEVICES_NET_COUNTERS_H_
#define VESSEL_DEVICES_NET_COUNTERS_H_

#include <atomic>
#include <cstdint>

namespace vessel::net {

struct NetCounters {
  // Tap → guest: frames delivered and their bytes (Ethernet frame, without the vnet header).
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  // Frames dropped because they can never fit: larger than one rx chain without mergeable
  // buffers, larger than all the buffers the queue can hold with them, or larger than the device's
  // 65562-byte frame buffer.
  uint64_t rx_dropped_too_big = 0;
  // Frames dropped because the tap handed over offload metadata (partial checksum, GSO) the guest
  // did not negotiate (queued in the tap before a reset that renegotiated fewer offloads).
  uint64_t rx_dropped_offload = 0;
  // rx chains the device could not use (malformed, readable-only, shorter than the vnet header):
  // returned to the driver with length 0.
  uint64_t rx_buffers_malformed = 0;
  // Frames dropped because the driver reset the device while they waited for rx buffers.
  uint64_t rx_dropped_reset = 0;
  // Failed reads from the tap (other than "nothing to read").
  uint64_t rx_tap_errors = 0;

  // Guest → tap: frames written and their bytes (without the vnet header).
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  // tx chains dropped because of their shape: malformed descriptors, device-writable buffers,
  // shorter than the vnet header + an Ethernet header, or longer than 65562 bytes.
  uint64_t tx_dropped_malformed = 0;
  // tx frames dropped because their vnet header asks for an offload (partial checksum, a GSO type,
  // ECN) the driver did not negotiate.
  uint64_t tx_dropped_offload = 0;
  // tx frames the tap refused (write error: bad GSO metadata, tap gone, out of memory).
  uint64_t tx_dropped_tap_error = 0;

  // Used-buffer interrupts raised.
  uint64_t interrupts = 0;
};

struct NetStats {
  using Counter = std::atomic<uint64_t>;
  static void Add(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

  NetCounters Snapshot() const {
    auto get = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
    NetCounters s;
    s.rx_packets = get(rx_packets);
    s.rx_bytes = get(rx_bytes);
    s.rx_dropped_too_big = get(rx_dropped_too_big);
    s.rx_dropped_offload = get(rx_dropped_offload);
    s.rx_buffers_malformed = get(rx_buffers_malformed);
    s.rx_dropped_reset = get(rx_dropped_reset);
    s.rx_tap_errors = get(rx_tap_errors);
    s.tx_packets = get(tx_packets);
    s.tx_bytes = get(tx_bytes);
    s.tx_dropped_malformed = get(tx_dropped_malformed);
    s.tx_dropped_offload = get(tx_dropped_offload);
    s.tx_dropped_tap_error = get(tx_dropped_tap_error);
    s.interrupts = get(interrupts);
    return s;
  }

  Counter rx_packets{0}, rx_bytes{0}, rx_dropped_too_big{0}, rx_dropped_offload{0},
      rx_buffers_malformed{0}, rx_dropped_reset{0}, rx_tap_errors{0}, tx_packets{0}, tx_bytes{0},
      tx_dropped_malformed{0}, tx_dropped_offload{0}, tx_dropped_tap_error{0}, interrupts{0};
};

}  // namespace vessel::net

#endif  // VESSEL_DEVICES_NET_COUNTERS_H_
