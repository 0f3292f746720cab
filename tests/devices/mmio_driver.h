// MmioDriver: a guest driver's view of an MmioTransport, for device snapshot tests: negotiates
// features and sets each queue up through the registers at the rings of a FakeDriver (which then
// lays out chains and reads the used ring), then sets DRIVER_OK. Also: a fresh transport + device
// restored from a saved state, and waiting for the used ring from a device's I/O thread.
#ifndef VESSEL_TESTS_DEVICES_MMIO_DRIVER_H_
#define VESSEL_TESTS_DEVICES_MMIO_DRIVER_H_

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "devices/virtio/mmio_transport.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"

namespace vessel::virtio::testing {

inline uint32_t MmioRead(MmioTransport& t, uint64_t offset) {
  uint8_t b[4];
  t.Read(offset, absl::MakeSpan(b, 4));
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}

inline void MmioWrite(MmioTransport& t, uint64_t offset, uint32_t value) {
  t.Write(offset, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&value), 4));
}

// Brings the device behind `t` up as a driver would: `features` (VERSION_1 added), queue i at
// queues[i]'s rings with its size, DRIVER_OK. Expects the device to end up active.
inline void MmioBringUp(MmioTransport& t, uint64_t features, const std::vector<FakeDriver*>& queues) {
  features |= 1ull << VIRTIO_F_VERSION_1;
  uint32_t status = VIRTIO_CONFIG_S_ACKNOWLEDGE;
  MmioWrite(t, VIRTIO_MMIO_STATUS, status);
  status |= VIRTIO_CONFIG_S_DRIVER;
  MmioWrite(t, VIRTIO_MMIO_STATUS, status);
  for (uint32_t sel = 0; sel < 2; ++sel) {
    MmioWrite(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
    MmioWrite(t, VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> (32 * sel)));
  }
  status |= VIRTIO_CONFIG_S_FEATURES_OK;
  MmioWrite(t, VIRTIO_MMIO_STATUS, status);
  for (uint32_t i = 0; i < queues.size(); ++i) {
    const uint64_t base = queues[i]->base();
    MmioWrite(t, VIRTIO_MMIO_QUEUE_SEL, i);
    MmioWrite(t, VIRTIO_MMIO_QUEUE_NUM, queues[i]->size());
    for (auto [low, gpa] : {std::pair<uint64_t, uint64_t>{VIRTIO_MMIO_QUEUE_DESC_LOW, base + FakeDriver::kDescTable},
                            {VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + FakeDriver::kAvailRing},
                            {VIRTIO_MMIO_QUEUE_USED_LOW, base + FakeDriver::kUsedRing}}) {
      MmioWrite(t, low, static_cast<uint32_t>(gpa));
      MmioWrite(t, low + 4, static_cast<uint32_t>(gpa >> 32));
    }
    MmioWrite(t, VIRTIO_MMIO_QUEUE_READY, 1);
  }
  status |= VIRTIO_CONFIG_S_DRIVER_OK;
  MmioWrite(t, VIRTIO_MMIO_STATUS, status);
  EXPECT_EQ(t.status(), status) << "the device did not come up";
}

// Polls `done` for up to `ms` milliseconds; its last value.
inline bool WaitFor(const std::function<bool()>& done, int ms = 5000) {
  for (int i = 0; i < ms; ++i) {
    if (done()) return true;
    usleep(1000);
  }
  return done();
}

}  // namespace vessel::virtio::testing

#endif  // VESSEL_TESTS_DEVICES_MMIO_DRIVER_H_
