#include "tests/devices/vsock_test_guest.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "devices/virtio/virtio_ring.h"
#include "gtest/gtest.h"

namespace vessel::vsock::testing {
namespace {

using virtio::testing::FakeDriver;

GuestMemory MustCreateMemory(uint64_t bytes) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, bytes}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

constexpr uint16_t kMaxRxBufs = 160;  // what fits in the rx driver's data area

}  // namespace

void WaitableInterrupt::Bump(std::atomic<int>& counter) {
  {
    std::lock_guard lock(mu_);
    ++counter;
    ++total_;
  }
  cv_.notify_all();
}

void WaitableInterrupt::WaitChange(uint64_t seen, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return total_ != seen; });
}

FakeVsockGuest::FakeVsockGuest(std::function<void(uint16_t)> notify)
    : memory_(MustCreateMemory(3 * FakeDriver::kMemSize)),
      rx_(memory_, 0, kQueueSize),
      tx_(memory_, FakeDriver::kMemSize, kQueueSize),
      ev_(memory_, 2 * FakeDriver::kMemSize, kQueueSize),
      notify_(std::move(notify)) {
  for (uint16_t i = 0; i < kTxSlots; ++i) {
    slot_hdr_.push_back(tx_.AllocData(sizeof(virtio_vsock_hdr)));
    slot_payload_.push_back(tx_.AllocData(kTxSlotPayload));
  }
  slot_busy_.assign(kTxSlots, false);
}

virtio::ActivateContext FakeVsockGuest::Context() {
  return virtio::ActivateContext{&memory_, {&rx_.queue(), &tx_.queue(), &ev_.queue()}, 0, &irq_};
}

virtio_vsock_hdr FakeVsockGuest::Hdr(uint16_t op, uint32_t guest_port, uint32_t host_port,
                                     uint32_t len, uint32_t buf_alloc, uint32_t fwd_cnt,
                                     uint32_t flags) {
  virtio_vsock_hdr h{};
  h.src_cid = kGuestCid;
  h.dst_cid = 2;
  h.src_port = guest_port;
  h.dst_port = host_port;
  h.len = len;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.flags = flags;
  h.buf_alloc = buf_alloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

void FakeVsockGuest::PostRx(int n) {
  for (int i = 0; i < n; ++i) {
    size_t id = 0;
    while (id < rx_bufs_.size() && rx_is_posted_[id]) ++id;
    if (id == rx_bufs_.size()) {
      if (id >= kMaxRxBufs) {
        ADD_FAILURE() << "FakeVsockGuest: at most " << kMaxRxBufs << " rx buffers";
        return;
      }
      rx_bufs_.push_back(rx_.AllocData(kRxBufSize));
      rx_is_posted_.push_back(false);
      rx_.WriteDesc(static_cast<uint16_t>(id), rx_bufs_[id], kRxBufSize, VRING_DESC_F_WRITE);
    }
    rx_is_posted_[id] = true;
    rx_.Publish(static_cast<uint16_t>(id));
  }
  notify_(0);
}

void FakeVsockGuest::Send(const virtio_vsock_hdr& hdr, absl::Span<const uint8_t> payload) {
  ASSERT_LE(payload.size(), kTxSlotPayload);
  int slot = -1;
  WaitFor([&] {
    for (uint16_t i = 0; i < kTxSlots; ++i) {
      if (!slot_busy_[i]) {
        slot = i;
        return true;
      }
    }
    return false;
  });
  ASSERT_GE(slot, 0) << "no free tx slot: the device does not consume the tx queue";
  const uint16_t head = static_cast<uint16_t>(2 * slot);
  ASSERT_TRUE(memory_.WriteObj(slot_hdr_[slot], hdr).ok());
  if (!payload.empty()) {
    ASSERT_TRUE(memory_.Write(slot_payload_[slot], payload.data(), payload.size()).ok());
    tx_.WriteDesc(head, slot_hdr_[slot], sizeof(hdr), VRING_DESC_F_NEXT, head + 1);
    tx_.WriteDesc(head + 1, slot_payload_[slot], static_cast<uint32_t>(payload.size()), 0);
  } else {
    tx_.WriteDesc(head, slot_hdr_[slot], sizeof(hdr), 0);
  }
  slot_busy_[slot] = true;
  tx_.Publish(head);
  notify_(1);
}

void FakeVsockGuest::SendRaw(const std::vector<virtio::testing::Buf>& bufs,
                             const std::string& bytes) {
  std::vector<virtio::Descriptor> d = tx_.WriteChain(kRawDesc, bufs);
  size_t off = 0;
  for (const virtio::Descriptor& desc : d) {
    if (off >= bytes.size()) break;
    const size_t n = std::min<size_t>(desc.len, bytes.size() - off);
    ASSERT_TRUE(memory_.Write(desc.addr, bytes.data() + off, n).ok());
    off += n;
  }
  raw_busy_ = true;
  tx_.Publish(kRawDesc);
  notify_(1);
  EXPECT_TRUE(WaitFor([&] { return !raw_busy_; })) << "the device did not consume a raw chain";
}

bool FakeVsockGuest::WaitTxDrained() {
  return WaitFor([&] {
    if (raw_busy_) return false;
    for (bool b : slot_busy_) {
      if (b) return false;
    }
    return true;
  });
}

void FakeVsockGuest::Poll() {
  for (uint16_t used = tx_.UsedIdx(); tx_seen_used_ != used; ++tx_seen_used_) {
    const vring_used_elem e = tx_.UsedElem(tx_seen_used_ % kQueueSize);
    if (e.id == kRawDesc) {
      raw_busy_ = false;
    } else if (e.id % 2 == 0 && e.id / 2 < kTxSlots) {
      slot_busy_[e.id / 2] = false;
    } else {
      ADD_FAILURE() << "device returned tx head " << e.id << ", which was never published";
    }
  }
  for (uint16_t used = rx_.UsedIdx(); rx_seen_used_ != used; ++rx_seen_used_) {
    const vring_used_elem e = rx_.UsedElem(rx_seen_used_ % kQueueSize);
    if (e.id >= rx_bufs_.size()) {  // published by the test itself
      RxPacket foreign;
      foreign.used_len = e.len;
      inbox_.push_back(std::move(foreign));
      continue;
    }
    EXPECT_LE(e.len, kRxBufSize);
    RxPacket p;
    p.used_len = e.len;
    if (e.len >= sizeof(virtio_vsock_hdr)) {
      p.hdr = memory_.ReadObj<virtio_vsock_hdr>(rx_bufs_[e.id]).value();
      const uint32_t payload = e.len - static_cast<uint32_t>(sizeof(virtio_vsock_hdr));
      EXPECT_EQ(uint32_t{p.hdr.len}, payload) << "used length disagrees with the header";
      p.payload.resize(payload);
      EXPECT_TRUE(memory_.Read(rx_bufs_[e.id] + sizeof(virtio_vsock_hdr), p.payload.data(), payload).ok());
      // src_cid is the host (2) except in RSTs answering a packet to another CID.
      EXPECT_EQ(uint64_t{p.hdr.dst_cid}, kGuestCid);
    }
    inbox_.push_back(std::move(p));
    if (auto_repost_) {
      rx_.Publish(static_cast<uint16_t>(e.id));
      notify_(0);
    } else {
      rx_is_posted_[e.id] = false;
    }
  }
}

bool FakeVsockGuest::WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const uint64_t seen = irq_.total();
    Poll();
    if (pred()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    // Interrupts cover device progress; host-side progress is re-checked every few ms.
    irq_.WaitChange(seen, std::min(std::chrono::milliseconds(5),
                                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                       std::chrono::milliseconds(1)));
  }
}

std::optional<RxPacket> FakeVsockGuest::WaitPacket(const std::function<bool(const RxPacket&)>& match,
                                                   std::chrono::milliseconds timeout) {
  std::optional<RxPacket> found;
  WaitFor(
      [&] {
        for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
          if (match(*it)) {
            found = std::move(*it);
            inbox_.erase(it);
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

std::optional<RxPacket> FakeVsockGuest::WaitOp(uint16_t op, uint32_t guest_port, uint32_t host_port,
                                               std::chrono::milliseconds timeout) {
  return WaitPacket(
      [&](const RxPacket& p) {
        return p.op() == op && p.dst_port() == guest_port && p.src_port() == host_port;
      },
      timeout);
}

std::string FakeVsockGuest::TakeData(uint32_t guest_port, uint32_t host_port) {
  std::string out;
  for (auto it = inbox_.begin(); it != inbox_.end();) {
    if (it->op() == VIRTIO_VSOCK_OP_RW && it->dst_port() == guest_port &&
        it->src_port() == host_port) {
      out += it->payload;
      it = inbox_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

// --- Host-side helpers ---

TempDir::TempDir() {
  std::string tmpl = "/tmp/vessel-vsock-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (DIR* d = opendir(path_.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") unlink((path_ + "/" + n).c_str());
    }
    closedir(d);
  }
  rmdir(path_.c_str());
}

namespace {
sockaddr_un Addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof(a.sun_path) - 1));
  return a;
}

bool PollFor(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}
}  // namespace

ScopedFd UnixListen(const std::string& path) {
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a = Addr(path);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd.get(), 128), 0);
  return fd;
}

ScopedFd UnixConnect(const std::string& path) {
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a = Addr(path);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0)
      << path << ": " << std::strerror(errno);
  return fd;
}

ScopedFd AcceptWithTimeout(int listener, std::chrono::milliseconds timeout) {
  if (!PollFor(listener, POLLIN, timeout)) return ScopedFd();
  return ScopedFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

void WriteAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      PollFor(fd, POLLOUT, kWait);
      continue;
    }
    ASSERT_GT(n, 0) << std::strerror(errno);
    off += static_cast<size_t>(n);
  }
}

std::string ReadN(int fd, size_t n, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (out.size() < n) {
    const auto left = std::max(std::chrono::milliseconds(0),
                               std::chrono::duration_cast<std::chrono::milliseconds>(
                                   deadline - std::chrono::steady_clock::now()));
    if (!PollFor(fd, POLLIN, left)) break;
    ssize_t r = ::recv(fd, buf, std::min(sizeof(buf), n - out.size()), MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

std::string ReadLine(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  while (out.empty() || out.back() != '\n') {
    std::string c = ReadN(fd, 1, timeout);
    if (c.empty()) break;
    out += c;
  }
  return out;
}

bool WaitEof(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !PollFor(fd, POLLIN, left)) return false;
    ssize_t r = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
  }
}

}  // namespace vessel::vsock::testing
