// virtio-fs pause / save / restore through the virtio-mmio transport: FUSE requests in chains laid
// out by the fake driver over a scratch share.
#include <fcntl.h>
#include <linux/fuse.h>
#include <linux/virtio_ids.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "devices/fs/fs_device.h"
#include "devices/virtio/mmio_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/fs_test_util.h"
#include "tests/devices/mmio_driver.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel::fs {
namespace {

using ::testing::HasSubstr;
using testing::Args;
using testing::BuildRequest;
using testing::InitIn;
using testing::ScratchShare;
using virtio::MmioTransport;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;
using virtio::testing::WaitFor;

class FsSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ScratchShare::WriteFile(scratch_.share() + "/hello", "hello from the host");
    transport_ = MakeTransport(Config());
    ASSERT_NE(transport_, nullptr);
  }
  void TearDown() override { transport_.reset(); }

  FsConfig Config() {
    FsConfig config;
    config.tag = "myfs";
    config.shared_dir = scratch_.share();
    return config;
  }
  std::unique_ptr<MmioTransport> MakeTransport(const FsConfig& config) {
    absl::StatusOr<std::unique_ptr<FsDevice>> dev = FsDevice::Create(config);
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return nullptr;
    return std::make_unique<MmioTransport>("virtio-fs test", std::move(*dev), &mem_, nullptr);
  }
  void BringUp() { virtio::testing::MmioBringUp(*transport_, 0, {&hiprio_, &requests_}); }

  // Publishes `request` (readable) + one 4 KiB reply buffer on the request queue; no kick.
  std::vector<virtio::Descriptor> Publish(const std::vector<uint8_t>& request) {
    const uint16_t head = next_head_;
    next_head_ = static_cast<uint16_t>(next_head_ + 2);
    std::vector<virtio::Descriptor> d =
        requests_.WriteChain(head, {{static_cast<uint32_t>(request.size()), false}, {4096, true}});
    EXPECT_TRUE(mem_.Write(d[0].addr, request.data(), request.size()).ok());
    requests_.Publish(head);
    return d;
  }
  // The reply in used entry `slot` of the request queue, waiting for it.
  std::vector<uint8_t> Reply(const std::vector<virtio::Descriptor>& d, uint16_t slot) {
    EXPECT_TRUE(WaitFor([&] { return requests_.UsedIdx() > slot; }));
    const vring_used_elem e = requests_.UsedElem(slot);
    std::vector<uint8_t> out(std::min<uint32_t>(e.len, d[1].len));
    EXPECT_TRUE(mem_.Read(d[1].addr, out.data(), out.size()).ok());
    return out;
  }
  std::vector<uint8_t> Roundtrip(const std::vector<uint8_t>& request) {
    const uint16_t slot = requests_.UsedIdx();
    std::vector<virtio::Descriptor> d = Publish(request);
    transport_->HandleNotify(1);
    return Reply(d, slot);
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
    if (reply.size() >= sizeof(fuse_out_header) + sizeof(T)) {
      std::memcpy(&v, reply.data() + sizeof(fuse_out_header), sizeof(T));
    }
    return v;
  }
  void Init() {
    ASSERT_EQ(Header(Roundtrip(BuildRequest(FUSE_INIT, 0, Args().Add(InitIn()), 1))).error, 0);
  }
  uint64_t Lookup(const std::string& name) {
    std::vector<uint8_t> r = Roundtrip(BuildRequest(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Name(name)));
    EXPECT_EQ(Header(r).error, 0);
    return Payload<fuse_entry_out>(r).nodeid;
  }
  std::vector<uint8_t> Getattr(uint64_t nodeid) {
    return BuildRequest(FUSE_GETATTR, nodeid, Args().Add(fuse_getattr_in{}));
  }
  snapshot::v1::VirtioMmioState PausedState() {
    EXPECT_TRUE(transport_->Pause().ok());
    absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : snapshot::v1::VirtioMmioState{};
  }

  ScratchShare scratch_;
  GuestMemory mem_ = GuestMemory::Create({{0, 2 * FakeDriver::kMemSize}}).value();
  FakeDriver hiprio_{mem_, 0, 64, FsDevice::kQueueSize};
  FakeDriver requests_{mem_, FakeDriver::kMemSize, 64, FsDevice::kQueueSize};
  uint16_t next_head_ = 0;
  std::unique_ptr<MmioTransport> transport_;
};

TEST_F(FsSnapshotTest, PauseHoldsRequestsUntilUnpause) {
  BringUp();
  Init();
  ASSERT_TRUE(transport_->Pause().ok());
  std::vector<virtio::Descriptor> d = Publish(Getattr(FUSE_ROOT_ID));
  transport_->HandleNotify(1);
  usleep(50000);
  EXPECT_EQ(requests_.UsedIdx(), 1) << "a paused device served a request";
  transport_->Unpause();
  EXPECT_EQ(Header(Reply(d, 1)).error, 0);
}

TEST_F(FsSnapshotTest, BackToBackPausesWithRequestsInFlight) {
  BringUp();
  Init();
  for (int i = 0; i < 10; ++i) {
    Publish(Getattr(FUSE_ROOT_ID));
    transport_->HandleNotify(1);
    for (int j = 0; j < 20; ++j) {
      ASSERT_TRUE(transport_->Pause().ok());
      transport_->Unpause();
    }
  }
  EXPECT_TRUE(WaitFor([&] { return requests_.UsedIdx() == 11; }));
}

TEST_F(FsSnapshotTest, PauseAndSaveOfAnInactiveDevice) {
  absl::StatusOr<std::unique_ptr<FsDevice>> dev = FsDevice::Create(Config());
  ASSERT_TRUE(dev.ok());
  EXPECT_TRUE((*dev)->Pause().ok());
  (*dev)->Unpause();
  absl::StatusOr<std::string> state = (*dev)->SaveState();
  ASSERT_TRUE(state.ok());
  snapshot::v1::FsState fs;
  ASSERT_TRUE(fs.ParseFromString(*state));
  EXPECT_EQ(fs.tag(), "myfs");
  EXPECT_FALSE(fs.session_initialized());
}

TEST_F(FsSnapshotTest, RestoredSessionServesWithoutInitAsARestartedDaemon) {
  BringUp();
  Init();
  const uint64_t hello = Lookup("hello");
  ASSERT_EQ(hello, FUSE_ROOT_ID + 1);
  fuse_open_in open_in = {};
  open_in.flags = O_RDONLY;
  std::vector<uint8_t> opened = Roundtrip(BuildRequest(FUSE_OPEN, hello, Args().Add(open_in)));
  ASSERT_EQ(Header(opened).error, 0);
  const uint64_t fh = Payload<fuse_open_out>(opened).fh;

  const snapshot::v1::VirtioMmioState state = PausedState();
  snapshot::v1::FsState fs;
  ASSERT_TRUE(fs.ParseFromString(state.device_state()));
  EXPECT_EQ(fs.tag(), "myfs");
  EXPECT_TRUE(fs.session_initialized());
  EXPECT_EQ(fs.fuse_minor(), 38u);
  EXPECT_EQ(fs.max_write(), FsDevice::kMaxWrite);
  EXPECT_TRUE(fs.init_flags() & FUSE_MAX_PAGES);
  EXPECT_FALSE(fs.init_flags() & FUSE_WRITEBACK_CACHE);
  EXPECT_EQ(fs.next_nodeid(), hello + 1);
  EXPECT_EQ(fs.next_fh(), fh + 1);
  // Made available after the snapshot point: the restored device serves it without a kick.
  const uint16_t slot = requests_.UsedIdx();
  std::vector<virtio::Descriptor> pending = Publish(Getattr(FUSE_ROOT_ID));
  transport_.reset();

  transport_ = MakeTransport(Config());
  ASSERT_TRUE(transport_->RestoreState(state).ok());
  EXPECT_EQ(Header(Reply(pending, slot)).error, 0) << "no INIT needed after the restore";
  // Nodes and handles from before are gone, as after a FUSE daemon restart.
  EXPECT_EQ(Header(Roundtrip(Getattr(hello))).error, -ESTALE);
  fuse_read_in read_in = {};
  read_in.fh = fh;
  read_in.size = 5;
  EXPECT_EQ(Header(Roundtrip(BuildRequest(FUSE_READ, hello, Args().Add(read_in)))).error, -EBADF);
  EXPECT_EQ(Header(Roundtrip(Getattr(hello + 100))).error, -ENOENT);  // never handed out
  // The guest looks the path up again: a new nodeid, never one it may still hold.
  const uint64_t again = Lookup("hello");
  EXPECT_GT(again, hello);
  EXPECT_EQ(Header(Roundtrip(Getattr(again))).error, 0);
  opened = Roundtrip(BuildRequest(FUSE_OPEN, again, Args().Add(open_in)));
  ASSERT_EQ(Header(opened).error, 0);
  EXPECT_GT(Payload<fuse_open_out>(opened).fh, fh);
}

TEST_F(FsSnapshotTest, RestoreRefusesAnotherTagOtherFlagsAndGarbage) {
  BringUp();
  Init();
  const snapshot::v1::VirtioMmioState state = PausedState();

  FsConfig other = Config();
  other.tag = "otherfs";
  std::unique_ptr<MmioTransport> t = MakeTransport(other);
  absl::Status s = t->RestoreState(state);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'myfs'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'otherfs'"));
  EXPECT_EQ(t->status(), 0u);

  // A session that negotiated WRITEBACK_CACHE cannot go on without `writeback`.
  snapshot::v1::VirtioMmioState writeback = state;
  snapshot::v1::FsState fs;
  ASSERT_TRUE(fs.ParseFromString(state.device_state()));
  fs.set_init_flags(fs.init_flags() | FUSE_WRITEBACK_CACHE);
  writeback.set_device_state(fs.SerializeAsString());
  t = MakeTransport(Config());
  s = t->RestoreState(writeback);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("init flags"));
  FsConfig with_writeback = Config();
  with_writeback.writeback = true;
  t = MakeTransport(with_writeback);
  EXPECT_TRUE(t->RestoreState(writeback).ok());

  for (const char* garbage : {"\xff\xff", ""}) {
    snapshot::v1::VirtioMmioState bad = state;
    bad.set_device_state(garbage);
    t = MakeTransport(Config());
    s = t->RestoreState(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("not a virtio-fs state"));
  }
  fs.set_init_flags(0);
  fs.set_fuse_minor(99);
  snapshot::v1::VirtioMmioState bad = state;
  bad.set_device_state(fs.SerializeAsString());
  t = MakeTransport(Config());
  EXPECT_THAT(std::string(t->RestoreState(bad).message()), HasSubstr("7.99"));

  FsConfig two_queues = Config();
  two_queues.num_request_queues = 2;
  t = MakeTransport(two_queues);
  EXPECT_THAT(std::string(t->RestoreState(state).message()), HasSubstr("2 queues"));
  bad = state;
  bad.set_device_type(VIRTIO_ID_BLOCK);
  t = MakeTransport(Config());
  EXPECT_FALSE(t->RestoreState(bad).ok());
  // After all those refusals the same state still restores (and the session works).
  t = MakeTransport(Config());
  ASSERT_TRUE(t->RestoreState(state).ok());
}

}  // namespace
}  // namespace vessel::fs
