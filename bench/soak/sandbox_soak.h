// The real-boot soaks (bench tool only, never CI: each boot of the Linux guest costs ~40-80 s on
// kvm_pvm): sequential Sandbox::Create/Stop, and containers created, started, waited and removed
// in one booted sandbox through the SDK. Both check this process's fds, threads, VmRSS and mounts.
#ifndef VESSEL_BENCH_SOAK_SANDBOX_SOAK_H_
#define VESSEL_BENCH_SOAK_SANDBOX_SOAK_H_

#include <string>

#include "bench/soak/soak.h"

namespace vessel::soak {

struct SandboxSoakOptions {
  int iterations = 3;        // measured Create/Stop cycles
  int warmup = 1;            // the first sandbox of a process pays its one-time costs
  uint64_t memory_mib = 512;
  // RSS allowance: VmRSS after the last Stop vs after the warm-up sandbox's Stop.
  int64_t rss_allowance_kib = 2048;
  bool verbose = false;
};
// Needs root and /dev/kvm; the default kernel/initramfs (DefaultRuntimeConfig).
SoakResult SandboxSoak(const SandboxSoakOptions& options);

struct SandboxContainerSoakOptions {
  std::string rootfs;        // a busybox rootfs directory (the build's busybox-rootfs)
  int iterations = 20;
  int warmup = 1;
  uint64_t memory_mib = 512;
  int64_t rss_allowance_kib = 1024;
  // The guest drops its cached dentries every 16th removal (see ProcReport::fd_allowance).
  int fd_allowance = 16;
  bool verbose = false;
};
// One sandbox; `true` containers: CreateContainer -> Start -> Wait -> RemoveContainer.
SoakResult SandboxContainerSoak(const SandboxContainerSoakOptions& options);

}  // namespace vessel::soak

#endif  // VESSEL_BENCH_SOAK_SANDBOX_SOAK_H_
