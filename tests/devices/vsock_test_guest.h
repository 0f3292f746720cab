// FakeVsockGuest: a virtio-vsock guest driver for tests and benchmarks. Three FakeDrivers (rx, tx,
// event) share one GuestMemory, so one ActivateContext covers them. The guest posts rx buffers of
// kRxBufSize (header + 4 KiB, one descriptor each) and re-posts each one after reading it; it sends
// tx packets from reusable slots (header descriptor + payload descriptor). Everything the device
// wrote is read back through GuestMemory. Also small helpers for host-side Unix sockets.
#ifndef VESSEL_TESTS_DEVICES_VSOCK_TEST_GUEST_H_
#define VESSEL_TESTS_DEVICES_VSOCK_TEST_GUEST_H_

#include <linux/virtio_vsock.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "devices/virtio/virtio_device.h"
#include "tests/devices/fake_driver.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::vsock::testing {

inline constexpr uint64_t kGuestCid = 3;
inline constexpr auto kWait = std::chrono::seconds(5);

// Counts interrupts and wakes waiters.
class WaitableInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override { Bump(used); }
  void SignalConfigChange() override { Bump(config); }
  void SignalNeedsReset() override { Bump(needs_reset); }
  // Waits until an interrupt arrives after `seen` (or `timeout`).
  void WaitChange(uint64_t seen, std::chrono::milliseconds timeout);
  uint64_t total() {
    std::lock_guard lock(mu_);
    return total_;
  }
  std::atomic<int> used{0}, config{0}, needs_reset{0};

 private:
  void Bump(std::atomic<int>& counter);
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t total_ = 0;
};

struct RxPacket {
  virtio_vsock_hdr hdr{};
  std::string payload;
  uint32_t used_len = 0;
  uint16_t op() const { return hdr.op; }
  uint32_t src_port() const { return hdr.src_port; }
  uint32_t dst_port() const { return hdr.dst_port; }
};

class FakeVsockGuest {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kRxBufSize = 44 + 4096;
  static constexpr uint16_t kTxSlots = 120;             // descriptors 0..239
  static constexpr uint16_t kRawDesc = 240;             // 240..255: raw chains
  static constexpr uint32_t kTxSlotPayload = 4096;

  // `notify(queue)` is how the guest kicks the device (VsockDevice::NotifyQueue).
  explicit FakeVsockGuest(std::function<void(uint16_t)> notify);

  virtio::ActivateContext Context();
  GuestMemory& mem() { return memory_; }
  WaitableInterrupt& irq() { return irq_; }
  virtio::testing::FakeDriver& rx() { return rx_; }
  virtio::testing::FakeDriver& tx() { return tx_; }
  virtio::testing::FakeDriver& ev() { return ev_; }

  // A guest header: guest CID → host, STREAM, with the given credit fields.
  static virtio_vsock_hdr Hdr(uint16_t op, uint32_t guest_port, uint32_t host_port,
                              uint32_t len = 0, uint32_t buf_alloc = 256 * 1024,
                              uint32_t fwd_cnt = 0, uint32_t flags = 0);

  // Posts `n` more rx buffers (at most 160 exist); with auto-repost (the default) every buffer
  // read back by Poll is posted again.
  void PostRx(int n);
  void set_auto_repost(bool on) { auto_repost_ = on; }

  // Publishes header + payload (payload <= kTxSlotPayload) in a free slot, waiting for one.
  void Send(const virtio_vsock_hdr& hdr, absl::Span<const uint8_t> payload = {});
  void Send(const virtio_vsock_hdr& hdr, const std::string& payload) {
    Send(hdr, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
  }
  // Publishes a chain of fresh buffers (`bufs`, filled with `bytes` from the start) at kRawDesc
  // and waits until the device has consumed it.
  void SendRaw(const std::vector<virtio::testing::Buf>& bufs, const std::string& bytes);
  // Waits until the device consumed every tx chain published so far.
  bool WaitTxDrained();

  // Reads what the device completed (rx packets into the inbox, tx slots freed).
  void Poll();
  // Waits (with Poll) until `pred` holds.
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = kWait);
  // Removes and returns the first inbox packet that matches, waiting for one.
  std::optional<RxPacket> WaitPacket(const std::function<bool(const RxPacket&)>& match,
                                     std::chrono::milliseconds timeout = kWait);
  std::optional<RxPacket> WaitOp(uint16_t op, uint32_t guest_port, uint32_t host_port,
                                 std::chrono::milliseconds timeout = kWait);
  // Packets read back, in order. A used rx buffer that is not one of the guest's own (a test
  // published it by hand) shows up with a zero header and its used length.
  std::deque<RxPacket>& inbox() { return inbox_; }
  // RW payload bytes received for (guest_port, host_port), removing those packets from the inbox.
  std::string TakeData(uint32_t guest_port, uint32_t host_port);

 private:
  GuestMemory memory_;
  virtio::testing::FakeDriver rx_;
  virtio::testing::FakeDriver tx_;
  virtio::testing::FakeDriver ev_;
  WaitableInterrupt irq_;
  std::function<void(uint16_t)> notify_;

  std::vector<uint64_t> rx_bufs_;  // buffer address per rx descriptor
  std::vector<bool> rx_is_posted_;
  uint16_t rx_seen_used_ = 0;
  bool auto_repost_ = true;

  std::vector<uint64_t> slot_hdr_, slot_payload_;
  std::vector<bool> slot_busy_;
  uint16_t tx_seen_used_ = 0;
  bool raw_busy_ = false;
  std::deque<RxPacket> inbox_;
};

// --- Host-side socket helpers (test failures on errors) ---
// A fresh directory under the test temp dir, removed (with its files) by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};
ScopedFd UnixListen(const std::string& path);
ScopedFd UnixConnect(const std::string& path);
ScopedFd AcceptWithTimeout(int listener, std::chrono::milliseconds timeout = kWait);
void WriteAll(int fd, const std::string& bytes);
// Reads exactly `n` bytes (or fewer on EOF / timeout).
std::string ReadN(int fd, size_t n, std::chrono::milliseconds timeout = kWait);
// Reads up to and including "\n" (byte by byte).
std::string ReadLine(int fd, std::chrono::milliseconds timeout = kWait);
// True when the peer closed (read returns 0 or ECONNRESET) within `timeout`, discarding data.
bool WaitEof(int fd, std::chrono::milliseconds timeout = kWait);

}  // namespace vessel::vsock::testing

#endif  // VESSEL_TESTS_DEVICES_VSOCK_TEST_GUEST_H_
