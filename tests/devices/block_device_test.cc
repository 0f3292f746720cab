// virtio-blk request handling through the real device code, driven by the fake driver.
#include "devices/block/block_device.h"

#include <linux/virtio_blk.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"

namespace vessel::block {
namespace {

using virtio::testing::Buf;
using virtio::testing::FakeDriver;

class CountingInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override { ++used; }
  void SignalConfigChange() override { ++config; }
  void SignalNeedsReset() override { ++needs_reset; }
  std::atomic<int> used{0}, config{0}, needs_reset{0};
};

class BlockDeviceTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kDiskBytes = 64 * 512;

  void SetUp() override {
    path_ = ::testing::TempDir() + "/vessel-blk-XXXXXX";
    int fd = mkstemp(path_.data());
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> content(kDiskBytes);
    for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<uint8_t>(i * 7);
    ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
  }
  void TearDown() override { unlink(path_.c_str()); }

  void Open(bool read_only, std::string serial = "") {
    absl::StatusOr<std::unique_ptr<BlockDevice>> dev = BlockDevice::Create({path_, read_only, serial});
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    ASSERT_TRUE(dev_->Activate({&driver_.mem(), {&driver_.queue()}, 0, &irq_}).ok());
  }

  // Publishes a request: header, `data` buffers, one status byte. Returns the descriptors.
  std::vector<virtio::Descriptor> Request(uint32_t type, uint64_t sector, std::vector<Buf> data,
                                          uint16_t first = 0) {
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
  std::vector<uint8_t> FileBytes(uint64_t offset, size_t len) {
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    std::vector<uint8_t> out(len);
    f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(len));
    return out;
  }

  std::string path_;
  FakeDriver driver_{16};
  CountingInterrupt irq_;
  std::unique_ptr<BlockDevice> dev_;
};

TEST_F(BlockDeviceTest, ConfigReportsCapacityAndFeatures) {
  Open(false);
  uint64_t capacity = 0;
  dev_->ReadConfig(0, absl::MakeSpan(reinterpret_cast<uint8_t*>(&capacity), 8));
  EXPECT_EQ(capacity, kDiskBytes / 512);
  EXPECT_TRUE(dev_->device_features() & (1ull << VIRTIO_BLK_F_FLUSH));
  EXPECT_FALSE(dev_->device_features() & (1ull << VIRTIO_BLK_F_RO));
  Open(true);
  EXPECT_TRUE(dev_->device_features() & (1ull << VIRTIO_BLK_F_RO));
  EXPECT_FALSE(dev_->device_features() & (1ull << VIRTIO_BLK_F_DISCARD));
}

TEST_F(BlockDeviceTest, ReadReturnsFileContentAcrossSegments) {
  Open(false);
  auto d = Request(VIRTIO_BLK_T_IN, 2, {{512, true}, {512, true}});
  dev_->ProcessQueue();
  EXPECT_EQ(Status(d), VIRTIO_BLK_S_OK);
  std::vector<uint8_t> got(1024);
  ASSERT_TRUE(driver_.mem().Read(d[1].addr, got.data(), 512).ok());
  ASSERT_TRUE(driver_.mem().Read(d[2].addr, got.data() + 512, 512).ok());
  EXPECT_EQ(got, FileBytes(1024, 1024));
  EXPECT_EQ(driver_.UsedIdx(), 1);
  EXPECT_EQ(driver_.UsedElem(0).len, 1025u);
  EXPECT_EQ(irq_.used.load(), 1);
}

TEST_F(BlockDeviceTest, WriteReachesTheFile) {
  Open(false);
  auto d = Request(VIRTIO_BLK_T_OUT, 3, {{512, false}});
  std::vector<uint8_t> data(512, 0xab);
  ASSERT_TRUE(driver_.mem().Write(d[1].addr, data.data(), data.size()).ok());
  dev_->ProcessQueue();
  EXPECT_EQ(Status(d), VIRTIO_BLK_S_OK);
  EXPECT_EQ(FileBytes(3 * 512, 512), data);
  EXPECT_EQ(driver_.UsedElem(0).len, 1u);
}

TEST_F(BlockDeviceTest, OutOfRangeAndPartialSectorsAreIoErrors) {
  Open(false);
  auto past_end = Request(VIRTIO_BLK_T_IN, 64, {{512, true}}, 0);
  auto straddle = Request(VIRTIO_BLK_T_OUT, 63, {{1024, false}}, 4);
  auto partial = Request(VIRTIO_BLK_T_OUT, 0, {{100, false}}, 8);
  auto huge_sector = Request(VIRTIO_BLK_T_IN, ~0ull, {{512, true}}, 12);
  const std::vector<uint8_t> before = FileBytes(0, kDiskBytes);
  dev_->ProcessQueue();
  EXPECT_EQ(Status(past_end), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(Status(straddle), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(Status(partial), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(Status(huge_sector), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(FileBytes(0, kDiskBytes), before);
  EXPECT_EQ(driver_.UsedIdx(), 4);
}

TEST_F(BlockDeviceTest, ReadOnlyDiskRefusesWritesDiscardAndZeroes) {
  Open(true);
  auto w = Request(VIRTIO_BLK_T_OUT, 0, {{512, false}}, 0);
  auto z = Request(VIRTIO_BLK_T_WRITE_ZEROES, 0, {{16, false}}, 4);
  const std::vector<uint8_t> before = FileBytes(0, kDiskBytes);
  dev_->ProcessQueue();
  EXPECT_EQ(Status(w), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(Status(z), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(FileBytes(0, kDiskBytes), before);
}

TEST_F(BlockDeviceTest, FlushGetIdAndUnsupported) {
  Open(false, "disk-serial-1");
  auto flush = Request(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  auto id = Request(VIRTIO_BLK_T_GET_ID, 0, {{20, true}}, 4);
  auto bad = Request(0x1234, 0, {}, 8);
  dev_->ProcessQueue();
  EXPECT_EQ(Status(flush), VIRTIO_BLK_S_OK);
  EXPECT_EQ(Status(id), VIRTIO_BLK_S_OK);
  char got[21] = {};
  ASSERT_TRUE(driver_.mem().Read(id[1].addr, got, 20).ok());
  EXPECT_STREQ(got, "disk-serial-1");
  EXPECT_EQ(Status(bad), VIRTIO_BLK_S_UNSUPP);
}

TEST_F(BlockDeviceTest, WriteZeroesZeroesTheRange) {
  Open(false);
  auto d = Request(VIRTIO_BLK_T_WRITE_ZEROES, 0, {{16, false}});
  virtio_blk_discard_write_zeroes seg = {};
  seg.sector = 4;
  seg.num_sectors = 2;
  ASSERT_TRUE(driver_.mem().WriteObj(d[1].addr, seg).ok());
  dev_->ProcessQueue();
  EXPECT_EQ(Status(d), VIRTIO_BLK_S_OK);
  EXPECT_EQ(FileBytes(4 * 512, 1024), std::vector<uint8_t>(1024, 0));
  EXPECT_NE(FileBytes(6 * 512, 512), std::vector<uint8_t>(512, 0));
}

TEST_F(BlockDeviceTest, ShortHeaderIsAnIoError) {
  Open(false);
  auto short_hdr = driver_.WriteChain(0, {{4, false}, {1, true}});
  driver_.Publish(0);
  const std::vector<uint8_t> before = FileBytes(0, kDiskBytes);
  dev_->ProcessQueue();
  EXPECT_EQ(driver_.UsedIdx(), 1);
  EXPECT_EQ(Status(short_hdr), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(FileBytes(0, kDiskBytes), before);
  EXPECT_EQ(irq_.needs_reset.load(), 0);
}

TEST_F(BlockDeviceTest, RequestWithoutStatusByteNeedsReset) {
  Open(false);
  driver_.WriteChain(0, {{sizeof(virtio_blk_outhdr), false}});
  driver_.Publish(0);
  Request(VIRTIO_BLK_T_IN, 0, {{512, true}}, 4);
  const std::vector<uint8_t> before = FileBytes(0, kDiskBytes);
  dev_->ProcessQueue();
  EXPECT_EQ(irq_.needs_reset.load(), 1);
  EXPECT_EQ(driver_.UsedIdx(), 0);  // stopped: nothing after the bad chain is processed
  EXPECT_EQ(FileBytes(0, kDiskBytes), before);
}

TEST_F(BlockDeviceTest, MalformedChainNeedsResetAndStopsTheQueue) {
  Open(false);
  driver_.WriteDesc(0, 0x7fffffff0000, 512, 0);  // outside RAM
  driver_.Publish(0);
  Request(VIRTIO_BLK_T_IN, 0, {{512, true}}, 4);
  dev_->ProcessQueue();
  EXPECT_EQ(irq_.needs_reset.load(), 1);
  EXPECT_EQ(driver_.UsedIdx(), 0);
  dev_->ProcessQueue();  // stays stopped until the driver resets the device
  EXPECT_EQ(driver_.UsedIdx(), 0);
}

TEST_F(BlockDeviceTest, CorruptAvailRingStopsTheQueueWithNeedsReset) {
  Open(false);
  auto first = Request(VIRTIO_BLK_T_IN, 0, {{512, true}});
  driver_.SetAvailIdx(100);  // 99 more chains than the 16-entry queue can hold
  dev_->ProcessQueue();
  EXPECT_EQ(irq_.needs_reset.load(), 1);
  EXPECT_EQ(driver_.UsedIdx(), 0);
  dev_->ProcessQueue();  // stays stopped until reset
  EXPECT_EQ(irq_.needs_reset.load(), 1);
  dev_->Reset();
}

TEST_F(BlockDeviceTest, NotifyRunsRequestsOnTheIoThread) {
  Open(false);
  auto d = Request(VIRTIO_BLK_T_IN, 0, {{512, true}});
  dev_->NotifyQueue(0);
  for (int i = 0; i < 2000 && irq_.used.load() == 0; ++i) usleep(1000);
  EXPECT_EQ(irq_.used.load(), 1);
  EXPECT_EQ(Status(d), VIRTIO_BLK_S_OK);
  dev_->Reset();
}

TEST_F(BlockDeviceTest, DirectIoDiskReadsAndWrites4KiBBlocks) {
  absl::StatusOr<std::unique_ptr<BlockDevice>> dev = BlockDevice::Create({path_, false, "", true});
  if (!dev.ok()) GTEST_SKIP() << "no O_DIRECT on this filesystem: " << dev.status();
  dev_ = std::move(*dev);
  ASSERT_TRUE(dev_->Activate({&driver_.mem(), {&driver_.queue()}, 0, &irq_}).ok());
  uint32_t blk_size = 0;
  dev_->ReadConfig(20, absl::MakeSpan(reinterpret_cast<uint8_t*>(&blk_size), 4));
  EXPECT_EQ(blk_size, 4096u);
  auto w = Request(VIRTIO_BLK_T_OUT, 8, {{4096, false}}, 0);
  std::vector<uint8_t> data(4096, 0x5c);
  ASSERT_TRUE(driver_.mem().Write(w[1].addr, data.data(), data.size()).ok());
  auto r = Request(VIRTIO_BLK_T_IN, 8, {{4096, true}}, 4);
  dev_->ProcessQueue();
  EXPECT_EQ(Status(w), VIRTIO_BLK_S_OK);
  EXPECT_EQ(Status(r), VIRTIO_BLK_S_OK);
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(driver_.mem().Read(r[1].addr, got.data(), got.size()).ok());
  EXPECT_EQ(got, data);
  EXPECT_EQ(FileBytes(8 * 512, 4096), data);
}

TEST_F(BlockDeviceTest, ResetMidFlightWaitsForInFlightRequestsAndStopsProcessing) {
  Open(false);
  std::vector<std::vector<virtio::Descriptor>> reqs;
  for (uint16_t i = 0; i < 4; ++i) reqs.push_back(Request(VIRTIO_BLK_T_IN, i, {{512, true}}, i * 3));
  dev_->NotifyQueue(0);
  dev_->Reset();  // returns only once the I/O thread is idle
  const uint16_t used = driver_.UsedIdx();
  // Every completed request has its status; nothing more is completed after the reset.
  for (uint16_t i = 0; i < used; ++i) EXPECT_EQ(Status(reqs[i]), VIRTIO_BLK_S_OK);
  Request(VIRTIO_BLK_T_IN, 9, {{512, true}}, 12);
  dev_->NotifyQueue(0);
  usleep(20000);
  EXPECT_EQ(driver_.UsedIdx(), used);
}

TEST_F(BlockDeviceTest, MissingFileNamesThePath) {
  absl::StatusOr<std::unique_ptr<BlockDevice>> dev = BlockDevice::Create({"/nonexistent/disk.img", false, ""});
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.status().message().find("/nonexistent/disk.img"), std::string::npos);
  EXPECT_FALSE(BlockDevice::Create({path_, false, std::string(21, 'x')}).ok());
}

}  // namespace
}  // namespace vessel::block
