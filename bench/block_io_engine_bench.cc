// Which I/O engine should virtio-blk use? Measures the device's access pattern, a batch of
// `batch` 4 KiB reads at random sector-aligned offsets of a 64 MiB image, with
//   pread:    one synchronous pread per request on one thread (what BlockDevice does today)
//   io_uring: the whole batch submitted at once, completions reaped together (liburing)
// for a page-cache-backed image (/dev/shm) and an O_DIRECT image on the host disk (/var/tmp).
// Prints numbers only; the closing note of issue 3 says which engine is kept and why.
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"

namespace {

constexpr uint64_t kImageBytes = 64ull << 20;
constexpr uint32_t kBlock = 4096;

struct Image {
  std::string path;
  int fd = -1;
  ~Image() {
    if (fd >= 0) close(fd);
    if (!path.empty()) unlink(path.c_str());
  }
};

bool MakeImage(Image& img, const char* dir, bool direct) {
  img.path = std::string(dir) + "/vessel-io-bench-XXXXXX";
  int fd = mkstemp(img.path.data());
  if (fd < 0) return false;
  std::vector<char> chunk(1 << 20, 'x');
  for (uint64_t off = 0; off < kImageBytes; off += chunk.size()) {
    if (write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) return false;
  }
  fsync(fd);
  close(fd);
  img.fd = open(img.path.c_str(), O_RDONLY | (direct ? O_DIRECT : 0));
  return img.fd >= 0;
}

std::vector<uint64_t> Offsets(size_t n) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> out(n);
  for (auto& o : out) o = (rng() % (kImageBytes / kBlock)) * kBlock;
  return out;
}

void BM_IoEngine(benchmark::State& state) {
  const bool uring = state.range(0) == 1;
  const bool direct = state.range(1) == 1;
  const size_t batch = static_cast<size_t>(state.range(2));
  Image img;
  if (!MakeImage(img, direct ? "/var/tmp" : "/dev/shm", direct)) {
    state.SkipWithError("cannot create the image (O_DIRECT unsupported there?)");
    return;
  }
  void* mem = nullptr;
  if (posix_memalign(&mem, kBlock, batch * kBlock) != 0) return;
  std::unique_ptr<uint8_t, void (*)(void*)> bufs(static_cast<uint8_t*>(mem), free);
  io_uring ring;
  if (uring && io_uring_queue_init(static_cast<unsigned>(batch), &ring, 0) != 0) {
    state.SkipWithError("io_uring_queue_init failed");
    return;
  }
  const std::vector<uint64_t> offsets = Offsets(1 << 16);
  size_t next = 0;
  for (auto _ : state) {
    if (!uring) {
      for (size_t i = 0; i < batch; ++i) {
        if (pread(img.fd, bufs.get() + i * kBlock, kBlock, static_cast<off_t>(offsets[next++ % offsets.size()])) != kBlock) {
          state.SkipWithError("pread failed");
          return;
        }
      }
    } else {
      for (size_t i = 0; i < batch; ++i) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_read(sqe, img.fd, bufs.get() + i * kBlock, kBlock, offsets[next++ % offsets.size()]);
      }
      io_uring_submit_and_wait(&ring, static_cast<unsigned>(batch));
      for (size_t i = 0; i < batch; ++i) {
        io_uring_cqe* cqe;
        if (io_uring_wait_cqe(&ring, &cqe) != 0 || cqe->res != static_cast<int>(kBlock)) {
          state.SkipWithError("io_uring read failed");
          return;
        }
        io_uring_cqe_seen(&ring, cqe);
      }
    }
  }
  if (uring) io_uring_queue_exit(&ring);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(batch));
  state.SetLabel(std::string(uring ? "io_uring" : "pread") + (direct ? " O_DIRECT host disk" : " page cache"));
}
BENCHMARK(BM_IoEngine)
    ->ArgsProduct({{0, 1}, {0, 1}, {1, 32}})
    ->ArgNames({"uring", "direct", "batch"})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
