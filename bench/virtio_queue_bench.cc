// Virtqueue device-side cost, measured with Google Benchmark. Prints numbers; asserts nothing.
//   BM_PopWalkAddUsed: one request = driver bumps avail idx, device Pop()s the chain, walks every
//   descriptor with Next() (all validation included), AddUsed()s it. Chains of 1 or 4 buffers,
//   direct or through an indirect table. BM_PopCollectAddUsed: the same with Collect() (a vector).
// Everything runs on host memory through GuestMemory; no VM, no /dev/kvm.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "devices/virtio/descriptor_chain.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_ring.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::virtio {
namespace {

constexpr uint16_t kSize = 256;
constexpr uint64_t kDesc = 0x1000;
constexpr uint64_t kAvail = 0x9000;
constexpr uint64_t kUsed = 0xb000;
constexpr uint64_t kIndirect = 0x10000;
constexpr uint64_t kData = 0x40000;

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "setup failed: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
}

struct Setup {
  GuestMemory mem;
  Queue queue;
};

// A ready queue whose every avail slot names head 0: a chain of `n` 512-byte buffers (the last
// one writable), direct in table entries 0..n-1 or in an indirect table.
Setup MakeSetup(int n, bool indirect) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}});
  Check(mem.status());
  absl::StatusOr<Queue> queue = Queue::Create(kSize);
  Check(queue.status());
  Setup s{std::move(*mem), std::move(*queue)};
  const uint64_t table = indirect ? kIndirect : kDesc;
  for (int i = 0; i < n; ++i) {
    vring_desc d{};
    d.addr = kData + 512 * static_cast<uint64_t>(i);
    d.len = 512;
    d.flags = i + 1 < n ? VRING_DESC_F_NEXT : VRING_DESC_F_WRITE;
    d.next = static_cast<uint16_t>(i + 1 < n ? i + 1 : 0);
    Check(s.mem.WriteObj(table + 16 * static_cast<uint64_t>(i), d));
  }
  if (indirect) {
    vring_desc d{};
    d.addr = kIndirect;
    d.len = 16 * static_cast<uint32_t>(n);
    d.flags = VRING_DESC_F_INDIRECT;
    Check(s.mem.WriteObj(kDesc, d));
  }
  for (uint16_t slot = 0; slot < kSize; ++slot)
    Check(s.mem.WriteObj<uint16_t>(kAvail + 4 + 2 * slot, 0));
  Check(s.queue.SetSize(kSize));
  s.queue.SetDescTable(kDesc);
  s.queue.SetAvailRing(kAvail);
  s.queue.SetUsedRing(kUsed);
  s.queue.SetReady(true);
  Check(s.queue.Validate(s.mem));
  return s;
}

template <bool kCollect>
void BM_Request(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const bool indirect = state.range(1) != 0;
  Setup s = MakeSetup(n, indirect);
  uint16_t avail_idx = 0;
  for (auto _ : state) {
    // Driver: publish one more chain (the ring slots already name head 0).
    ++avail_idx;
    Check(s.mem.WriteObj<uint16_t>(kAvail + 2, avail_idx));
    // Device.
    absl::StatusOr<std::optional<DescriptorChain>> chain = s.queue.Pop(s.mem);
    if (!chain.ok() || !chain->has_value()) std::abort();
    uint64_t bytes = 0;
    if constexpr (kCollect) {
      absl::StatusOr<std::vector<Descriptor>> all = (*chain)->Collect();
      if (!all.ok()) std::abort();
      for (const Descriptor& d : *all) bytes += d.len;
    } else {
      for (;;) {
        absl::StatusOr<std::optional<Descriptor>> d = (*chain)->Next();
        if (!d.ok()) std::abort();
        if (!d->has_value()) break;
        bytes += (*d)->len;
      }
    }
    benchmark::DoNotOptimize(bytes);
    Check(s.queue.AddUsed(s.mem, (*chain)->head_index(), 512));
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_PopWalkAddUsed(benchmark::State& state) { BM_Request<false>(state); }
void BM_PopCollectAddUsed(benchmark::State& state) { BM_Request<true>(state); }

BENCHMARK(BM_PopWalkAddUsed)
    ->ArgNames({"descs", "indirect"})
    ->Args({1, 0})
    ->Args({4, 0})
    ->Args({1, 1})
    ->Args({4, 1});
BENCHMARK(BM_PopCollectAddUsed)->ArgNames({"descs", "indirect"})->Args({4, 0})->Args({4, 1});

}  // namespace
}  // namespace vessel::virtio

BENCHMARK_MAIN();
