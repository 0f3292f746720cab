// libFuzzer target: descriptor-chain parsing plus virtio-blk request handling on guest memory
// the fuzzer writes entirely (descriptor table, avail ring, headers, buffers).
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_virtio_blk_fuzzer
// Run:           build-fuzz/tests/fuzz/vessel_virtio_blk_fuzzer -max_total_time=60
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "devices/block/block_device.h"
#include "devices/virtio/queue.h"

namespace {

constexpr uint64_t kMemBytes = 64 * 1024;
constexpr uint16_t kQueueSize = 16;

class NullInterrupt : public vessel::virtio::Interrupt {
 public:
  void SignalUsedBuffers() override {}
  void SignalConfigChange() override {}
  void SignalNeedsReset() override {}
};

const std::string& DiskPath() {
  static const std::string path = [] {
    std::string p = "/tmp/vessel-fuzz-disk-XXXXXX";
    int fd = mkstemp(p.data());
    if (fd >= 0) {
      if (ftruncate(fd, 64 * 512) != 0) abort();
      close(fd);
    }
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto* memory = new vessel::GuestMemory(vessel::GuestMemory::Create({{0, kMemBytes}}).value());
  static auto* device = vessel::block::BlockDevice::Create({DiskPath(), false, "fuzz"}).value().release();
  static NullInterrupt interrupt;
  memory->Fill(0, 0, kMemBytes).IgnoreError();
  memory->Write(0, data, std::min<uint64_t>(size, kMemBytes)).IgnoreError();
  vessel::virtio::Queue queue = vessel::virtio::Queue::Create(kQueueSize).value();
  queue.SetDescTable(0x0);
  queue.SetAvailRing(0x100);  // compact layout: short inputs reach every ring field
  queue.SetUsedRing(0x200);
  queue.SetEventIdx(size > 0 && (data[0] & 1));
  queue.SetReady(true);
  if (!device->Activate({memory, {&queue}, 0, &interrupt}).ok()) return 0;
  device->ProcessQueue();
  device->Reset();
  return 0;
}
