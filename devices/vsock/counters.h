// VsockCounters: what the vsock device did, as a snapshot; VsockStats: the live counters the I/O
// thread bumps (relaxed atomics) and any thread may read.
#ifndef VESSEL_DEVICES_VSOCK_COUNTERS_H_
#define VESSEL_DEVICES_VSOCK_COUNTERS_H_

#include <atomic>
#include <cstdint>

namespace vessel::vsock {

struct VsockCounters {
  // Guest → device (tx queue): packets taken off the queue, and RW payload bytes accepted.
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  // Device → guest (rx queue): packets delivered, and RW payload bytes delivered.
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  // RST packets sent to / received from the guest.
  uint64_t rsts_sent = 0;
  uint64_t rsts_received = 0;
  // Guest packets dropped without a reply (malformed chain, short header, foreign source CID).
  uint64_t tx_dropped = 0;
  // Guest packets answered with RST because they were invalid (type, length, op, address).
  uint64_t tx_invalid = 0;
  // Device → guest packets lost: rx buffers too small to use, RSTs dropped on overflow.
  uint64_t rx_dropped = 0;
  // Connections reset because the guest sent more than the credit we advertised.
  uint64_t credit_violations = 0;
  // Connections set up (either direction) and torn down.
  uint64_t connections_opened = 0;
  uint64_t connections_closed = 0;
  // Host clients closed before a connection existed (bad CONNECT line, timeout, over a limit).
  uint64_t host_clients_rejected = 0;
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET events put in the event queue (after a snapshot restore).
  uint64_t transport_resets = 0;
};

struct VsockStats {
  using Counter = std::atomic<uint64_t>;
  static void Add(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }

  VsockCounters Snapshot() const {
    auto get = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
    VsockCounters s;
    s.tx_packets = get(tx_packets);
    s.tx_bytes = get(tx_bytes);
    s.rx_packets = get(rx_packets);
    s.rx_bytes = get(rx_bytes);
    s.rsts_sent = get(rsts_sent);
    s.rsts_received = get(rsts_received);
    s.tx_dropped = get(tx_dropped);
    s.tx_invalid = get(tx_invalid);
    s.rx_dropped = get(rx_dropped);
    s.credit_violations = get(credit_violations);
    s.connections_opened = get(connections_opened);
    s.connections_closed = get(connections_closed);
    s.host_clients_rejected = get(host_clients_rejected);
    s.transport_resets = get(transport_resets);
    return s;
  }

  Counter tx_packets{0}, tx_bytes{0}, rx_packets{0}, rx_bytes{0}, rsts_sent{0}, rsts_received{0},
      tx_dropped{0}, tx_invalid{0}, rx_dropped{0}, credit_violations{0}, connections_opened{0},
      connections_closed{0}, host_clients_rejected{0}, transport_resets{0};
};

}  // namespace vessel::vsock

#endif  // VESSEL_DEVICES_VSOCK_COUNTERS_H_
