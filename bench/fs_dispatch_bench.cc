// virtio-fs in-process dispatch cost: one FUSE request through FuseServer::HandleRequest (parse,
// table lookups, the host system call, reply into a host buffer) over a share in /dev/shm (RAM,
// so the numbers are server CPU + syscall cost, not disk). BM_FsDeviceRead4K adds the virtqueue
// side: chain walk, copy in/out of guest memory, used ring, notification decision (ProcessQueue on
// the benchmark thread, the fake driver as the guest).
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "benchmark/benchmark.h"
#include "devices/fs/fs_device.h"
#include "devices/fs/fuse_server.h"
#include "tests/devices/fake_driver.h"

namespace vessel::fs {
namespace {

class NullInterrupt : public virtio::Interrupt {
 public:
  void SignalUsedBuffers() override {}
  void SignalConfigChange() override {}
  void SignalNeedsReset() override {}
};

template <typename T>
std::vector<uint8_t> Request(uint32_t opcode, uint64_t nodeid, const T& arg,
                             const std::string& name = "") {
  fuse_in_header h = {};
  constexpr size_t kArgBytes = std::is_empty_v<T> ? 0 : sizeof(T);
  h.len = static_cast<uint32_t>(sizeof(h) + kArgBytes + (name.empty() ? 0 : name.size() + 1));
  h.opcode = opcode;
  h.unique = 1;
  h.nodeid = nodeid;
  std::vector<uint8_t> out;
  const auto* hp = reinterpret_cast<const uint8_t*>(&h);
  const auto* ap = reinterpret_cast<const uint8_t*>(&arg);
  out.insert(out.end(), hp, hp + sizeof(h));
  out.insert(out.end(), ap, ap + kArgBytes);
  if (!name.empty()) {
    out.insert(out.end(), name.begin(), name.end());
    out.push_back(0);
  }
  return out;
}

// A share in /dev/shm with a 1 MiB file "data"; removed on destruction.
class Share {
 public:
  Share() {
    std::string t = "/dev/shm/vessel-fs-bench-XXXXXX";
    ok_ = mkdtemp(t.data()) != nullptr;
    dir_ = t;
    if (ok_) std::ofstream(dir_ + "/data") << std::string(1 << 20, 'x');
  }
  ~Share() {
    std::error_code ec;
    if (ok_) std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  const std::string& dir() const { return dir_; }

 private:
  bool ok_;
  std::string dir_;
};

struct Empty {};

// An initialized server; `nodeid` and `fh` of the file "data" (opened read-only).
struct Server {
  std::unique_ptr<FuseServer> server;
  uint64_t nodeid = 0;
  uint64_t fh = 0;

  explicit Server(const std::string& dir) {
    FsConfig c;
    c.tag = "bench";
    c.shared_dir = dir;
    server = FuseServer::Create(c).value();
    fuse_init_in init = {};
    init.major = 7;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    BufferSink sink(4096);
    server->HandleRequest(Request(FUSE_INIT, 0, init), sink);
    sink.Clear();
    server->HandleRequest(Request(FUSE_LOOKUP, FUSE_ROOT_ID, Empty{}, "data"), sink);
    fuse_entry_out e;
    std::memcpy(&e, sink.data().data() + sizeof(fuse_out_header), sizeof(e));
    nodeid = e.nodeid;
    sink.Clear();
    server->HandleRequest(Request(FUSE_OPEN, nodeid, fuse_open_in{O_RDONLY, 0}), sink);
    fuse_open_out o;
    std::memcpy(&o, sink.data().data() + sizeof(fuse_out_header), sizeof(o));
    fh = o.fh;
  }
};

void Run(benchmark::State& state, FuseServer& server, const std::vector<uint8_t>& request,
         uint64_t capacity, bool forget_after) {
  BufferSink sink(capacity);
  std::vector<uint8_t> forget;
  if (forget_after) forget = Request(FUSE_FORGET, 0, fuse_forget_in{1});
  for (auto _ : state) {
    sink.Clear();
    uint32_t n = server.HandleRequest(request, sink);
    benchmark::DoNotOptimize(n);
    fuse_out_header oh;
    std::memcpy(&oh, sink.data().data(), sizeof(oh));
    if (oh.error != 0) {
      state.SkipWithError("request failed");
      return;
    }
    if (forget_after) {
      // Keep the lookup count bounded (the kernel forgets too).
      fuse_entry_out e;
      std::memcpy(&e, sink.data().data() + sizeof(fuse_out_header), sizeof(e));
      std::memcpy(forget.data() + offsetof(fuse_in_header, nodeid), &e.nodeid, sizeof(e.nodeid));
      sink.Clear();
      server.HandleRequest(forget, sink);
    }
  }
}

void BM_FsLookup(benchmark::State& state) {
  Share share;
  if (!share.ok()) return state.SkipWithError("no /dev/shm");
  Server s(share.dir());
  // LOOKUP + FORGET per iteration (an inode that stays known: the table-hit path).
  Run(state, *s.server, Request(FUSE_LOOKUP, FUSE_ROOT_ID, Empty{}, "data"), 4096, true);
}
BENCHMARK(BM_FsLookup);

void BM_FsGetattr(benchmark::State& state) {
  Share share;
  if (!share.ok()) return state.SkipWithError("no /dev/shm");
  Server s(share.dir());
  Run(state, *s.server, Request(FUSE_GETATTR, s.nodeid, fuse_getattr_in{}), 4096, false);
}
BENCHMARK(BM_FsGetattr);

void BM_FsRead4K(benchmark::State& state) {
  Share share;
  if (!share.ok()) return state.SkipWithError("no /dev/shm");
  Server s(share.dir());
  fuse_read_in in = {};
  in.fh = s.fh;
  in.size = 4096;
  in.offset = 8192;
  Run(state, *s.server, Request(FUSE_READ, s.nodeid, in), sizeof(fuse_out_header) + 4096, false);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_FsRead4K);

void BM_FsDeviceRead4K(benchmark::State& state) {
  Share share;
  if (!share.ok()) return state.SkipWithError("no /dev/shm");
  FsConfig c;
  c.tag = "bench";
  c.shared_dir = share.dir();
  auto dev = FsDevice::Create(c).value();
  GuestMemory mem = GuestMemory::Create({{0, 2 * virtio::testing::FakeDriver::kMemSize}}).value();
  virtio::testing::FakeDriver hiprio(mem, 0, 64, FsDevice::kQueueSize);
  virtio::testing::FakeDriver req(mem, virtio::testing::FakeDriver::kMemSize, 64,
                                  FsDevice::kQueueSize);
  NullInterrupt irq;
  if (!dev->Activate({&mem, {&hiprio.queue(), &req.queue()}, 0, &irq}).ok()) {
    return state.SkipWithError("activate failed");
  }
  // Set up through the server directly, then READ through the queue.
  uint64_t nodeid = 0, fh = 0;
  FuseServer& server = dev->server();
  {
    fuse_init_in init = {};
    init.major = 7;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    BufferSink sink(4096);
    server.HandleRequest(Request(FUSE_INIT, 0, init), sink);
    sink.Clear();
    server.HandleRequest(Request(FUSE_LOOKUP, FUSE_ROOT_ID, Empty{}, "data"), sink);
    fuse_entry_out e;
    std::memcpy(&e, sink.data().data() + sizeof(fuse_out_header), sizeof(e));
    sink.Clear();
    server.HandleRequest(Request(FUSE_OPEN, e.nodeid, fuse_open_in{O_RDONLY, 0}), sink);
    fuse_open_out o;
    std::memcpy(&o, sink.data().data() + sizeof(fuse_out_header), sizeof(o));
    nodeid = e.nodeid;
    fh = o.fh;
  }
  fuse_read_in in = {};
  in.fh = fh;
  in.size = 4096;
  std::vector<uint8_t> request = Request(FUSE_READ, nodeid, in);
  auto d = req.WriteChain(0, {{static_cast<uint32_t>(request.size()), false},
                              {sizeof(fuse_out_header), true},
                              {4096, true}});
  if (!mem.Write(d[0].addr, request.data(), request.size()).ok()) {
    return state.SkipWithError("guest write failed");
  }
  for (auto _ : state) {
    req.Publish(0);
    dev->ProcessQueue(1);
  }
  if (!mem.ReadObj<fuse_out_header>(d[1].addr).ok() ||
      mem.ReadObj<fuse_out_header>(d[1].addr)->error != 0 ||
      dev->counters().chains != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("READ through the device failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}
BENCHMARK(BM_FsDeviceRead4K);

}  // namespace
}  // namespace vessel::fs

BENCHMARK_MAIN();
