// virtio-blk request handling cost per 4 KiB request, through the real device code (descriptor
// chain walk, header parse, backend I/O, used ring, notification decision), driven by the fake
// driver, with the disk image in RAM (/dev/shm). The I/O thread is bypassed: ProcessQueue runs
// on the benchmark thread, so this is device CPU cost, not interrupt latency.
#include <linux/virtio_blk.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "benchmark/benchmark.h"
#include "devices/block/block_device.h"
#include "tests/devices/fake_driver.h"

namespace vessel::block {
namespace {

class NullInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override {}
  void SignalConfigChange() override {}
  void SignalNeedsReset() override {}
};

void BM_BlkRequest4K(benchmark::State& state) {
  const uint32_t type = static_cast<uint32_t>(state.range(0));
  std::string path = "/dev/shm/vessel-blk-bench-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0 || ftruncate(fd, 64 << 20) != 0) {
    state.SkipWithError("cannot create a RAM-backed disk in /dev/shm");
    return;
  }
  close(fd);
  auto dev = BlockDevice::Create({path, false, ""}).value();
  virtio::testing::FakeDriver driver(64);
  NullInterrupt irq;
  if (!dev->Activate({&driver.mem(), {&driver.queue()}, 0, &irq}).ok()) {
    state.SkipWithError("activate failed");
    return;
  }
  auto d = driver.WriteChain(0, {{sizeof(virtio_blk_outhdr), false}, {4096, type == VIRTIO_BLK_T_IN}, {1, true}});
  virtio_blk_outhdr hdr = {};
  hdr.type = type;
  uint64_t sector = 0;
  for (auto _ : state) {
    hdr.sector = sector;
    sector = (sector + 8) % ((64 << 20) / 512 - 8);
    driver.mem().WriteObj(d[0].addr, hdr).IgnoreError();
    driver.Publish(0);
    dev->ProcessQueue();
  }
  state.SetBytesProcessed(state.iterations() * 4096);
  dev->Reset();
  unlink(path.c_str());
}
BENCHMARK(BM_BlkRequest4K)->Arg(VIRTIO_BLK_T_IN)->Arg(VIRTIO_BLK_T_OUT)->ArgName("type");

}  // namespace
}  // namespace vessel::block

BENCHMARK_MAIN();
