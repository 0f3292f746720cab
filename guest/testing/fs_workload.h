// The filesystem workloads of the virtio-fs benchmark, run the same way inside the guest (by
// vessel-probe, on the virtio-fs mount) and on the host (by bench/guest_io_bench, on the shared
// directory itself: the ceiling). Header-only, POSIX only.
#ifndef VESSEL_GUEST_TESTING_FS_WORKLOAD_H_
#define VESSEL_GUEST_TESTING_FS_WORKLOAD_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace vessel::probe {

inline double NowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct FsWorkloadResult {
  bool ok = false;
  double metadata_ops_per_s = 0;  // (create + stat + unlink) per second, counted as 3 ops each
  double write_mib_per_s = 0;
  double read_mib_per_s = 0;
};

// Creates, stats and unlinks `files` empty files in `dir`, then writes and reads back a file of
// `bytes` in 1 MiB blocks (fsync before the write is timed as done).
inline FsWorkloadResult RunFsWorkload(const std::string& dir, int files, uint64_t bytes) {
  FsWorkloadResult r;
  double t0 = NowSeconds();
  for (int i = 0; i < files; ++i) {
    std::string p = dir + "/bench-" + std::to_string(i);
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return r;
    ::close(fd);
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return r;
  }
  for (int i = 0; i < files; ++i) {
    if (::unlink((dir + "/bench-" + std::to_string(i)).c_str()) != 0) return r;
  }
  double t1 = NowSeconds();
  r.metadata_ops_per_s = 3.0 * files / (t1 - t0);

  std::vector<char> buf(1 << 20, 'v');
  std::string p = dir + "/bench-seq";
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return r;
  t0 = NowSeconds();
  for (uint64_t done = 0; done < bytes; done += buf.size()) {
    if (::write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) return r;
  }
  ::fsync(fd);
  ::close(fd);
  t1 = NowSeconds();
  r.write_mib_per_s = bytes / 1048576.0 / (t1 - t0);
  fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) return r;
  t0 = NowSeconds();
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
  t1 = NowSeconds();
  r.read_mib_per_s = bytes / 1048576.0 / (t1 - t0);
  ::unlink(p.c_str());
  r.ok = true;
  return r;
}

}  // namespace vessel::probe

#endif  // VESSEL_GUEST_TESTING_FS_WORKLOAD_H_
