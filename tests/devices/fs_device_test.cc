// virtio-fs through the device: FUSE requests in descriptor chains laid out by the fake driver,
// served by the device's I/O thread (or ProcessQueue on the test thread).
#include "devices/fs/fs_device.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/virtio_fs.h>
#include <linux/virtio_ids.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/fs_test_util.h"

namespace vessel::fs {
namespace {

using testing::Args;
using testing::BuildRequest;
using testing::InitIn;
using testing::ScratchShare;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;

class CountingInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override { ++used; }
  void SignalConfigChange() override { ++config; }
  void SignalNeedsReset() override { ++needs_reset; }
  std::atomic<int> used{0}, config{0}, needs_reset{0};
};

GuestMemory MakeMemory() { return GuestMemory::Create({{0, 2 * FakeDriver::kMemSize}}).value(); }

class FsDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ScratchShare::WriteFile(scratch_.share() + "/hello", "hello from the host");
    FsConfig config;
    config.tag = "myfs";
    config.shared_dir = scratch_.share();
    absl::StatusOr<std::unique_ptr<FsDevice>> dev = FsDevice::Create(config);
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    outside_before_ = ScratchShare::Snapshot(scratch_.outside());
    Activate();
  }
  void TearDown() override {
    EXPECT_EQ(ScratchShare::Snapshot(scratch_.outside()), outside_before_);
  }
  void Activate() {
    ASSERT_TRUE(dev_->Activate({&mem_, {&hiprio_.queue(), &requests_.queue()}, 0, &irq_}).ok());
  }

  // Publishes `request` in a readable buffer followed by writable buffers of `reply_lens`.
  std::vector<virtio::Descriptor> Publish(FakeDriver& driver, const std::vector<uint8_t>& request,
                                          std::vector<uint32_t> reply_lens) {
    std::vector<Buf> bufs = {{static_cast<uint32_t>(request.size()), false}};
    for (uint32_t len : reply_lens) bufs.push_back({len, true});
    const uint16_t head = next_head_;
    next_head_ = static_cast<uint16_t>(next_head_ + bufs.size());
    std::vector<virtio::Descriptor> d = driver.WriteChain(head, bufs);
    EXPECT_TRUE(mem_.Write(d[0].addr, request.data(), request.size()).ok());
    driver.Publish(head);
    return d;
  }
  // The reply bytes spread over the writable descriptors.
  std::vector<uint8_t> ReplyBytes(const std::vector<virtio::Descriptor>& d, uint32_t used) {
    std::vector<uint8_t> out;
    for (const virtio::Descriptor& desc : d) {
      if (!desc.is_write || out.size() >= used) continue;
      std::vector<uint8_t> part(std::min<uint64_t>(desc.len, used - out.size()));
      EXPECT_TRUE(mem_.Read(desc.addr, part.data(), part.size()).ok());
      out.insert(out.end(), part.begin(), part.end());
    }
    return out;
  }
  // Waits for the used idx of `driver` to reach `idx` (the I/O thread serves the queue).
  bool WaitUsed(FakeDriver& driver, uint16_t idx) {
    for (int i = 0; i < 2000; ++i) {
      if (driver.UsedIdx() == idx) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  // One request on the request queue through the I/O thread; returns the reply bytes.
  std::vector<uint8_t> Roundtrip(const std::vector<uint8_t>& request, std::vector<uint32_t> lens,
                                 uint32_t* used_len = nullptr) {
    std::vector<virtio::Descriptor> d = Publish(requests_, request, lens);
    const uint16_t want = static_cast<uint16_t>(requests_.UsedIdx() + 1);
    dev_->NotifyQueue(1);
    EXPECT_TRUE(WaitUsed(requests_, want));
    vring_used_elem e = requests_.UsedElem(static_cast<uint16_t>(want - 1));
    if (used_len != nullptr) *used_len = e.len;
    return ReplyBytes(d, e.len);
  }
  static fuse_out_header Header(const std::vector<uint8_t>& reply) {
    fuse_out_header h = {};
    EXPECT_GE(reply.size(), sizeof(h));
    if (reply.size() >= sizeof(h)) std::memcpy(&h, reply.data(), sizeof(h));
    return h;
  }
  template <typename T>
  static T Payload(const std::vector<uint8_t>& reply) {
    T v = {};
    EXPECT_GE(reply.size(), sizeof(fuse_out_header) + sizeof(T));
    if (reply.size() >= sizeof(fuse_out_header) + sizeof(T)) {
      std::memcpy(&v, reply.data() + sizeof(fuse_out_header), sizeof(T));
    }
    return v;
  }
  void Init() {
    std::vector<uint8_t> r = Roundtrip(BuildRequest(FUSE_INIT, 0, Args().Add(InitIn()), 1), {4096});
    ASSERT_EQ(Header(r).error, 0);
    ASSERT_EQ(Header(r).unique, 1u);
  }

  ScratchShare scratch_;
  std::string outside_before_;
  GuestMemory mem_ = MakeMemory();
  FakeDriver hiprio_{mem_, 0, 64, FsDevice::kQueueSize};
  FakeDriver requests_{mem_, FakeDriver::kMemSize, 64, FsDevice::kQueueSize};
  uint16_t next_head_ = 0;
  CountingInterrupt irq_;
  std::unique_ptr<FsDevice> dev_;
};

TEST_F(FsDeviceTest, IdentityConfigAndQueues) {
  EXPECT_EQ(dev_->device_type(), static_cast<uint32_t>(VIRTIO_ID_FS));
  EXPECT_TRUE(dev_->device_features() & (1ull << VIRTIO_F_VERSION_1));
  EXPECT_EQ(dev_->queue_max_sizes(),
            (std::vector<uint16_t>{FsDevice::kQueueSize, FsDevice::kQueueSize}));
  virtio_fs_config cfg = {};
  dev_->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&cfg), sizeof(cfg)));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(cfg.tag), 4), "myfs");
  EXPECT_EQ(cfg.tag[4], 0);
  EXPECT_EQ(cfg.num_request_queues, 1u);
  uint8_t past[4] = {1, 1, 1, 1};
  dev_->ReadConfig(sizeof(cfg), absl::MakeSpan(past));
  EXPECT_EQ(past[0], 0);
  // Wrong queue count.
  dev_->Reset();
  EXPECT_FALSE(dev_->Activate({&mem_, {&requests_.queue()}, 0, &irq_}).ok());
}

TEST_F(FsDeviceTest, InitLookupOpenReadThroughTheIoThread) {
  Init();
  std::vector<uint8_t> r =
      Roundtrip(BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name("hello"), 2), {4096});
  ASSERT_EQ(Header(r).error, 0);
  const uint64_t nodeid = Payload<fuse_entry_out>(r).nodeid;
  EXPECT_EQ(Payload<fuse_entry_out>(r).attr.size, 19u);
  r = Roundtrip(BuildRequest(FUSE_OPEN, nodeid, Args().Add(fuse_open_in{O_RDONLY, 0}), 3), {4096});
  ASSERT_EQ(Header(r).error, 0);
  const uint64_t fh = Payload<fuse_open_out>(r).fh;
  // READ with the reply spread over three writable buffers: header | 5 bytes | the rest.
  fuse_read_in rin = {};
  rin.fh = fh;
  rin.size = 4096;
  uint32_t used = 0;
  r = Roundtrip(BuildRequest(FUSE_READ, nodeid, Args().Add(rin), 4),
                {sizeof(fuse_out_header), 5, 4096}, &used);
  EXPECT_EQ(used, sizeof(fuse_out_header) + 19);
  ASSERT_EQ(Header(r).error, 0);
  EXPECT_EQ(std::string(r.begin() + sizeof(fuse_out_header), r.end()), "hello from the host");
  EXPECT_GT(irq_.used.load(), 0);
  // FORGET on hiprio: no reply, used length 0.
  Publish(hiprio_, BuildRequest(FUSE_FORGET, nodeid, Args().Add(fuse_forget_in{1}), 5), {});
  dev_->NotifyQueue(FsDevice::kHiprioQueue);
  ASSERT_TRUE(WaitUsed(hiprio_, 1));
  EXPECT_EQ(hiprio_.UsedElem(0).len, 0u);
  EXPECT_EQ(dev_->server().inode_count(), 1u);
}

TEST_F(FsDeviceTest, LargeReadLandsInPlaceAcrossBuffers) {
  std::string big(200 * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ScratchShare::WriteFile(scratch_.share() + "/big", big);
  Init();
  std::vector<uint8_t> r =
      Roundtrip(BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name("big"), 2), {4096});
  const uint64_t nodeid = Payload<fuse_entry_out>(r).nodeid;
  r = Roundtrip(BuildRequest(FUSE_OPEN, nodeid, Args().Add(fuse_open_in{O_RDONLY, 0}), 3), {4096});
  fuse_read_in rin = {};
  rin.fh = Payload<fuse_open_out>(r).fh;
  rin.offset = 1000;
  rin.size = 150 * 1024;
  uint32_t used = 0;
  // The header and the data share the first buffer; the data runs on over two more.
  r = Roundtrip(BuildRequest(FUSE_READ, nodeid, Args().Add(rin), 4), {100, 70 * 1024, 80 * 1024},
                &used);
  ASSERT_EQ(Header(r).error, 0);
  EXPECT_EQ(used, sizeof(fuse_out_header) + rin.size);
  EXPECT_EQ(Header(r).len, used);
  EXPECT_TRUE(std::string(r.begin() + sizeof(fuse_out_header), r.end()) ==
              big.substr(1000, rin.size));
  EXPECT_EQ(dev_->server().counters().reads_in_place.load(), 1u);
  // Near EOF: a short read.
  rin.offset = big.size() - 10;
  r = Roundtrip(BuildRequest(FUSE_READ, nodeid, Args().Add(rin), 5), {100, 70 * 1024, 80 * 1024},
                &used);
  EXPECT_EQ(used, sizeof(fuse_out_header) + 10);
  EXPECT_EQ(std::string(r.begin() + sizeof(fuse_out_header), r.end()), big.substr(big.size() - 10));
  // Larger than the writable buffers: EINVAL, nothing read.
  rin.offset = 0;
  r = Roundtrip(BuildRequest(FUSE_READ, nodeid, Args().Add(rin), 6), {100, 4096}, &used);
  EXPECT_EQ(Header(r).error, -EINVAL);
  EXPECT_EQ(used, sizeof(fuse_out_header));
}

TEST_F(FsDeviceTest, WriteThroughTheQueue) {
  Init();
  fuse_create_in ci = {};
  ci.flags = O_RDWR;
  ci.mode = 0644;
  std::vector<uint8_t> r =
      Roundtrip(BuildRequest(FUSE_CREATE, FUSE_ROOT_ID, Args().Add(ci).Name("w"), 2), {4096});
  ASSERT_EQ(Header(r).error, 0);
  const uint64_t nodeid = Payload<fuse_entry_out>(r).nodeid;
  fuse_open_out oo;
  std::memcpy(&oo, r.data() + sizeof(fuse_out_header) + sizeof(fuse_entry_out), sizeof(oo));
  fuse_write_in wi = {};
  wi.fh = oo.fh;
  wi.size = 5;
  r = Roundtrip(BuildRequest(FUSE_WRITE, nodeid, Args().Add(wi).Raw("guest"), 3), {4096});
  ASSERT_EQ(Header(r).error, 0);
  EXPECT_EQ(Payload<fuse_write_out>(r).size, 5u);
  EXPECT_EQ(ScratchShare::ReadFile(scratch_.share() + "/w"), "guest");
}

TEST_F(FsDeviceTest, ChainTooSmallForAReplyIsReturnedEmptyAndServingGoesOn) {
  Init();
  uint32_t used = 1;
  Roundtrip(BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 9), {8}, &used);
  EXPECT_EQ(used, 0u);
  Roundtrip(BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 9), {}, &used);
  EXPECT_EQ(used, 0u);
  EXPECT_EQ(dev_->counters().empty_replies, 2u);
  EXPECT_EQ(dev_->server().counters().unanswerable.load(), 2u);
  // Header len disagreeing with the readable bytes.
  std::vector<uint8_t> req =
      BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 10);
  req.resize(req.size() + 16);
  std::vector<uint8_t> r = Roundtrip(req, {4096});
  EXPECT_EQ(Header(r).error, -EINVAL);
  r = Roundtrip(BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 11),
                {4096});
  EXPECT_EQ(Header(r).error, 0);
  EXPECT_EQ(Header(r).unique, 11u);
  EXPECT_EQ(irq_.needs_reset.load(), 0);
}

TEST_F(FsDeviceTest, OversizedRequestIsTruncatedAndRefused) {
  Init();
  // A readable buffer longer than any request may be (it overlaps other guest memory: only read).
  const uint64_t reply = requests_.AllocData(4096);
  requests_.WriteDesc(10, 0, static_cast<uint32_t>(FsDevice::kMaxRequestBytes + 4096),
                      VRING_DESC_F_NEXT, 11);
  requests_.WriteDesc(11, reply, 4096, VRING_DESC_F_WRITE);
  requests_.Publish(10);
  dev_->ProcessQueue(1);
  EXPECT_EQ(dev_->counters().oversized, 1u);
  fuse_out_header h = requests_.Read<fuse_out_header>(reply);
  EXPECT_EQ(h.error, -EINVAL);
  EXPECT_EQ(irq_.needs_reset.load(), 0);
  std::vector<uint8_t> r = Roundtrip(
      BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 12), {4096});
  EXPECT_EQ(Header(r).error, 0);
}

TEST_F(FsDeviceTest, MalformedChainNeedsReset) {
  // A descriptor outside guest RAM: nothing to answer through.
  requests_.WriteDesc(0, 1ull << 40, 64, 0);
  requests_.Publish(0);
  dev_->ProcessQueue(1);
  EXPECT_EQ(irq_.needs_reset.load(), 1);
  EXPECT_EQ(dev_->counters().broken_queues, 1u);
  // The queue stays stopped until reset; reset + activate serves again.
  dev_->ProcessQueue(1);
  EXPECT_EQ(irq_.needs_reset.load(), 1);
}

TEST_F(FsDeviceTest, ResetDropsInodesAndHandles) {
  Init();
  std::vector<uint8_t> r =
      Roundtrip(BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name("hello"), 2), {4096});
  const uint64_t nodeid = Payload<fuse_entry_out>(r).nodeid;
  Roundtrip(BuildRequest(FUSE_OPEN, nodeid, Args().Add(fuse_open_in{O_RDONLY, 0}), 3), {4096});
  EXPECT_EQ(dev_->server().inode_count(), 2u);
  EXPECT_EQ(dev_->server().handle_count(), 1u);
  dev_->Reset();
  EXPECT_EQ(dev_->server().inode_count(), 1u);
  EXPECT_EQ(dev_->server().handle_count(), 0u);
  // Notifications while reset are ignored.
  dev_->NotifyQueue(1);
}

TEST(FsDeviceMultiQueueTest, EveryRequestQueueIsServed) {
  ScratchShare scratch;
  ScratchShare::WriteFile(scratch.share() + "/f", "x");
  FsConfig config;
  config.tag = "mq";
  config.shared_dir = scratch.share();
  config.num_request_queues = 2;
  std::unique_ptr<FsDevice> dev = FsDevice::Create(config).value();
  EXPECT_EQ(dev->queue_max_sizes().size(), 3u);
  virtio_fs_config cfg = {};
  dev->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&cfg), sizeof(cfg)));
  EXPECT_EQ(cfg.num_request_queues, 2u);
  GuestMemory mem = GuestMemory::Create({{0, 3 * FakeDriver::kMemSize}}).value();
  FakeDriver hiprio(mem, 0, 16, FsDevice::kQueueSize);
  FakeDriver q1(mem, FakeDriver::kMemSize, 16, FsDevice::kQueueSize);
  FakeDriver q2(mem, 2 * FakeDriver::kMemSize, 16, FsDevice::kQueueSize);
  CountingInterrupt irq;
  ASSERT_TRUE(dev->Activate({&mem, {&hiprio.queue(), &q1.queue(), &q2.queue()}, 0, &irq}).ok());
  auto publish = [&](FakeDriver& d, uint16_t head, const std::vector<uint8_t>& req) {
    std::vector<virtio::Descriptor> descs =
        d.WriteChain(head, {{static_cast<uint32_t>(req.size()), false}, {4096, true}});
    EXPECT_TRUE(mem.Write(descs[0].addr, req.data(), req.size()).ok());
    d.Publish(head);
    return descs;
  };
  auto wait = [](FakeDriver& d, uint16_t idx) {
    for (int i = 0; i < 2000 && d.UsedIdx() != idx; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return d.UsedIdx() == idx;
  };
  publish(q1, 0, BuildRequest(FUSE_INIT, 0, Args().Add(InitIn()), 1));
  dev->NotifyQueue(1);
  ASSERT_TRUE(wait(q1, 1));
  // LOOKUPs on both request queues at once.
  for (uint16_t i = 0; i < 4; ++i) {
    publish(q1, static_cast<uint16_t>(2 + 2 * i),
            BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name("f"), 10 + i));
    publish(q2, static_cast<uint16_t>(2 * i),
            BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name("f"), 20 + i));
  }
  dev->NotifyQueue(1);
  dev->NotifyQueue(2);
  ASSERT_TRUE(wait(q1, 5));
  ASSERT_TRUE(wait(q2, 4));
  EXPECT_EQ(dev->server().inode_count(), 2u);
  EXPECT_EQ(dev->server().lookup_count(2), 8u);
  EXPECT_EQ(dev->counters().chains, 9u);
  dev->Reset();
  EXPECT_EQ(dev->server().inode_count(), 1u);
}

}  // namespace
}  // namespace vessel::fs
