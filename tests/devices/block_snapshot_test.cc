// virtio-blk pause / save / restore through the virtio-mmio transport, driven by the fake driver.
#include <linux/virtio_blk.h>
#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "devices/block/block_device.h"
#include "devices/virtio/mmio_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"
#include "tests/devices/mmio_driver.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel::block {
namespace {

using ::testing::HasSubstr;
using virtio::MmioTransport;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;
using virtio::testing::MmioBringUp;
using virtio::testing::WaitFor;

class BlockSnapshotTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kDiskBytes = 64 * 512;

  void SetUp() override {
    path_ = NewDisk();
    transport_ = MakeTransport({path_, false, ""});
    ASSERT_NE(transport_, nullptr);
  }
  void TearDown() override {
    transport_.reset();
    for (const std::string& p : disks_) unlink(p.c_str());
  }
  std::string NewDisk(uint64_t bytes = kDiskBytes) {
    std::string path = ::testing::TempDir() + "/vessel-blk-snap-XXXXXX";
    int fd = mkstemp(path.data());
    EXPECT_GE(fd, 0);
    std::vector<uint8_t> content(bytes);
    for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 7);
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
    disks_.push_back(path);
    return path;
  }
  std::unique_ptr<MmioTransport> MakeTransport(const BlockConfig& config) {
    absl::StatusOr<std::unique_ptr<BlockDevice>> dev = BlockDevice::Create(config);
    EXPECT_TRUE(dev.ok()) << dev.status();
    if (!dev.ok()) return nullptr;
    return std::make_unique<MmioTransport>("virtio-blk test", std::move(*dev), &driver_.mem(),
                                           nullptr);
  }
  // Publishes a request: header, `data` buffers, one status byte.
  std::vector<virtio::Descriptor> Request(uint32_t type, uint64_t sector, std::vector<Buf> data,
                                          uint16_t first) {
    std::vector<Buf> bufs = {{sizeof(virtio_blk_outhdr), false}};
    bufs.insert(bufs.end(), data.begin(), data.end());
    bufs.push_back({1, true});
    std::vector<virtio::Descriptor> d = driver_.WriteChain(first, bufs);
    virtio_blk_outhdr hdr = {};
    hdr.type = type;
    hdr.sector = sector;
    EXPECT_TRUE(driver_.mem().WriteObj(d[0].addr, hdr).ok());
    driver_.Publish(first);
    return d;
  }
  uint8_t Status(const std::vector<virtio::Descriptor>& d) {
    return driver_.mem().ReadObj<uint8_t>(d.back().addr).value();
  }
  std::vector<uint8_t> Data(const virtio::Descriptor& d) {
    std::vector<uint8_t> out(d.len);
    EXPECT_TRUE(driver_.mem().Read(d.addr, out.data(), out.size()).ok());
    return out;
  }
  bool WaitUsed(uint16_t n) {
    return WaitFor([&] { return driver_.UsedIdx() == n; });
  }
  snapshot::v1::VirtioMmioState PausedState() {
    EXPECT_TRUE(transport_->Pause().ok());
    absl::StatusOr<snapshot::v1::VirtioMmioState> state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : snapshot::v1::VirtioMmioState{};
  }

  FakeDriver driver_{16};
  std::string path_;
  std::vector<std::string> disks_;
  std::unique_ptr<MmioTransport> transport_;
};

TEST_F(BlockSnapshotTest, PauseHoldsRequestsUntilUnpause) {
  MmioBringUp(*transport_, 0, {&driver_});
  auto first = Request(VIRTIO_BLK_T_IN, 0, {{512, true}}, 0);
  transport_->HandleNotify(0);
  ASSERT_TRUE(WaitUsed(1));
  ASSERT_TRUE(transport_->Pause().ok());
  auto held = Request(VIRTIO_BLK_T_IN, 1, {{512, true}}, 3);
  transport_->HandleNotify(0);
  usleep(50000);
  EXPECT_EQ(driver_.UsedIdx(), 1) << "a paused device completed a request";
  EXPECT_EQ(Status(held), 0);
  transport_->Unpause();
  ASSERT_TRUE(WaitUsed(2));
  EXPECT_EQ(Status(held), VIRTIO_BLK_S_OK);
  EXPECT_EQ(Data(held[1])[0], static_cast<uint8_t>(512 * 7));
}

TEST_F(BlockSnapshotTest, BackToBackPausesWithRequestsInFlight) {
  MmioBringUp(*transport_, 0, {&driver_});
  for (uint16_t i = 0; i < 5; ++i) {
    Request(VIRTIO_BLK_T_IN, i, {{512, true}}, static_cast<uint16_t>(3 * i));
    transport_->HandleNotify(0);
    for (int j = 0; j < 20; ++j) {
      ASSERT_TRUE(transport_->Pause().ok());
      transport_->Unpause();
    }
  }
  EXPECT_TRUE(WaitUsed(5));
}

TEST_F(BlockSnapshotTest, PauseAndSaveOfAnInactiveDeviceAreNoOps) {
  absl::StatusOr<std::unique_ptr<BlockDevice>> dev = BlockDevice::Create({path_, false, ""});
  ASSERT_TRUE(dev.ok());
  EXPECT_TRUE((*dev)->Pause().ok());
  (*dev)->Unpause();
  absl::StatusOr<std::string> state = (*dev)->SaveState();
  ASSERT_TRUE(state.ok());
  snapshot::v1::BlockState block;
  ASSERT_TRUE(block.ParseFromString(*state));
  EXPECT_EQ(block.path(), path_);
  EXPECT_EQ(block.size_bytes(), kDiskBytes);
  EXPECT_NE(block.st_ino(), 0u);
  EXPECT_FALSE(block.read_only());
}

TEST_F(BlockSnapshotTest, RestoredDeviceServesPendingAndNewRequests) {
  MmioBringUp(*transport_, 0, {&driver_});
  auto write = Request(VIRTIO_BLK_T_OUT, 3, {{512, false}}, 0);
  std::vector<uint8_t> data(512, 0xab);
  ASSERT_TRUE(driver_.mem().Write(write[1].addr, data.data(), data.size()).ok());
  transport_->HandleNotify(0);
  ASSERT_TRUE(WaitUsed(1));
  const snapshot::v1::VirtioMmioState state = PausedState();
  // Made available after the snapshot point: the restored device must find it without a kick.
  auto pending = Request(VIRTIO_BLK_T_IN, 3, {{512, true}}, 3);
  transport_.reset();  // the snapshotted VM goes away (reset while paused)

  transport_ = MakeTransport({path_, false, ""});
  ASSERT_TRUE(transport_->RestoreState(state).ok());
  ASSERT_TRUE(WaitUsed(2));
  EXPECT_EQ(Status(pending), VIRTIO_BLK_S_OK);
  EXPECT_EQ(Data(pending[1]), data);
  // The driver carries on with kicks.
  auto next = Request(VIRTIO_BLK_T_IN, 3, {{512, true}}, 6);
  transport_->HandleNotify(0);
  ASSERT_TRUE(WaitUsed(3));
  EXPECT_EQ(Data(next[1]), data);
  EXPECT_EQ(driver_.UsedElem(2).id, 6u);
}

TEST_F(BlockSnapshotTest, RestoreRefusesAnotherFileOrSizeOrMode) {
  MmioBringUp(*transport_, 0, {&driver_});
  const snapshot::v1::VirtioMmioState state = PausedState();

  const std::string other = NewDisk();
  std::unique_ptr<MmioTransport> t = MakeTransport({other, false, ""});
  absl::Status s = t->RestoreState(state);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path_));
  EXPECT_THAT(std::string(s.message()), HasSubstr(other));
  EXPECT_EQ(t->status(), 0u);

  ASSERT_EQ(truncate(path_.c_str(), 2 * kDiskBytes), 0);  // same file, grown
  t = MakeTransport({path_, false, ""});
  s = t->RestoreState(state);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bytes"));
  ASSERT_EQ(truncate(path_.c_str(), kDiskBytes), 0);

  t = MakeTransport({path_, true, ""});  // read-only now
  s = t->RestoreState(state);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("read-only"));

  snapshot::v1::VirtioMmioState garbage = state;
  garbage.set_device_state("\xff\xff\xff garbage");
  t = MakeTransport({path_, false, ""});
  s = t->RestoreState(garbage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a virtio-blk state"));

  // The unchanged file restores.
  t = MakeTransport({path_, false, ""});
  EXPECT_TRUE(t->RestoreState(state).ok());
}

}  // namespace
}  // namespace vessel::block
