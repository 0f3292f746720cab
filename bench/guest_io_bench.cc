// Guest I/O through vessel's in-process virtio-vsock and virtio-net, measured from the host with
// the project's Linux guest as the peer (one boot): hybrid-vsock connect latency (CONNECT to the
// guest's echo server until "OK"), vsock stream throughput (the host streams through the guest's
// echo, both directions at once), TCP throughput host -> guest and guest -> host over a tap in a
// scratch network namespace; virtio-fs metadata ops/s and sequential MiB/s in the guest, with the
// same workload on the host directory as the ceiling. Needs root. Prints the platform: on kvm_pvm
// the guest kernel is emulated and these are not product numbers; compare runs on one host only.
//   vessel_guest_io_bench [--bytes=N] [--connects=N]
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "guest/testing/fs_workload.h"
#include "tests/e2e/host_side.h"
#include "vmm/kvm/platform.h"

namespace vessel::e2e {
namespace {

using ::vessel::DetectPlatform;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double MiBps(uint64_t bytes, Clock::duration d) { return bytes / 1048576.0 / Seconds(d); }

// Waits for a whole console line starting with `prefix`; returns the rest of it (nullopt on
// timeout or EOF).
std::optional<std::string> WaitForLine(VmmProcess& vmm, const std::string& prefix, int seconds) {
  auto deadline = Clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    size_t at = vmm.output().find(prefix);
    if (at != std::string::npos) {
      size_t end = vmm.output().find('\n', at);
      if (end != std::string::npos) {
        std::string rest = vmm.output().substr(at + prefix.size(), end - at - prefix.size());
        if (!rest.empty() && rest.back() == '\r') rest.pop_back();
        return rest;
      }
    }
    if (Clock::now() > deadline || !vmm.Pump(200, /*echo=*/true)) return std::nullopt;
  }
}

int Main(int argc, char** argv) {
  uint64_t bytes = 16ull << 20;
  int connects = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (absl::StartsWith(a, "--bytes=")) (void)absl::SimpleAtoi(a.substr(8), &bytes);
    if (absl::StartsWith(a, "--connects=")) (void)absl::SimpleAtoi(a.substr(11), &connects);
  }
  std::printf("platform: %s\n", DetectPlatform().Name().c_str());
  ScratchNetns netns("iobench");
  if (!netns.ok()) {
    std::fprintf(stderr, "guest_io_bench: %s\n", netns.error().c_str());
    return 1;
  }
  const std::string uds = absl::StrCat("/tmp/vessel-iobench-", ::getpid(), ".vsock");
  const std::string share = absl::StrCat("/tmp/vessel-iobench-", ::getpid(), "-share");
  ::mkdir(share.c_str(), 0755);
  const std::string guest = VESSEL_GUEST_DIR;
  std::printf("booting the guest (about a minute on kvm_pvm)...\n");
  std::fflush(stdout);
  VmmProcess vmm({VESSEL_VMM_BINARY, "--kernel=" + guest + "/vmlinux",
                  "--initrd=" + guest + "/test-initramfs.cpio", "--mem-mib=256", "--vsock=3," + uds,
                  "--net=vtap0,netns=" + netns.path(), "--share=share0=" + share + ",cache=auto",
                  absl::StrCat("--append=vessel_test_iobench=", bytes)});
  if (!WaitForLine(vmm, "vessel-test: iobench ready", 600)) {
    std::fprintf(stderr, "guest_io_bench: the guest never got ready:\n%s\n", vmm.output().c_str());
    return 1;
  }

  // Connect latency: CONNECT until OK, then close.
  std::vector<double> connect_ms;
  for (int i = 0; i < connects; ++i) {
    std::string error;
    auto t = Clock::now();
    int s = HybridConnect(uds, 5000, &error);
    if (s < 0) {
      std::fprintf(stderr, "guest_io_bench: %s\n", error.c_str());
      return 1;
    }
    connect_ms.push_back(Seconds(Clock::now() - t) * 1e3);
    ::close(s);
  }
  std::sort(connect_ms.begin(), connect_ms.end());
  std::printf("vsock connect (CONNECT -> OK): p50 %.2f ms, max %.2f ms over %d\n",
              connect_ms[connect_ms.size() / 2], connect_ms.back(), connects);

  // vsock stream through the guest's echo: bytes each way at once.
  {
    std::string error;
    int s = HybridConnect(uds, 5000, &error);
    if (s < 0) {
      std::fprintf(stderr, "guest_io_bench: %s\n", error.c_str());
      return 1;
    }
    auto t = Clock::now();
    std::thread writer([s, bytes] {
      SendStream(s, 5, bytes);
      ::shutdown(s, SHUT_WR);
    });
    std::string got = HashToEof(s);
    writer.join();
    auto d = Clock::now() - t;
    ::close(s);
    std::printf("vsock echo: %s each way in %.2f s: %.1f MiB/s each way (%s)\n",
                absl::StrCat(bytes).c_str(), Seconds(d), MiBps(bytes, d),
                got == ExpectedStream(5, bytes) ? "intact" : "CORRUPT");
  }

  // TCP host -> guest: until the guest reports what it received.
  {
    auto t = Clock::now();
    auto sent = InNetns(netns.path(), [bytes] {
      int s = TcpConnect("10.0.2.2", 7001);
      if (s < 0) return std::string("connect failed");
      SendStream(s, 11, bytes);
      ::close(s);
      return std::string("sent");
    });
    std::optional<std::string> rx = WaitForLine(vmm, "# iobench tcp_rx ", 1200);
    auto d = Clock::now() - t;
    bool intact = rx == ExpectedStream(11, bytes);
    std::printf("tcp host->guest: %.2f s: %.1f MiB/s (%s)\n", Seconds(d), MiBps(bytes, d),
                intact ? "intact" : "CORRUPT");
    sent.get();
  }

  // TCP guest -> host: from the accept to EOF.
  {
    std::promise<bool> listening;
    auto received = InNetns(netns.path(), [&listening, bytes] {
      int l = TcpListen("10.0.2.1", 7000);
      listening.set_value(l >= 0);
      if (l < 0) return std::string("listen failed");
      int c = ::accept(l, nullptr, nullptr);
      auto t = Clock::now();
      std::string got = HashToEof(c);
      auto d = Clock::now() - t;
      ::close(c);
      ::close(l);
      return absl::StrCat(absl::StrFormat("%.2f s: %.1f MiB/s", Seconds(d), MiBps(bytes, d)), " (",
                          got == ExpectedStream(7, bytes) ? "intact" : "CORRUPT", ")");
    });
    listening.get_future().get();
    vmm.WriteLine("go");
    std::printf("tcp guest->host: %s\n", received.get().c_str());
  }

  // virtio-fs: the same workload in the guest (on the share) and on the host directory itself.
  std::string guest_fs = WaitForLine(vmm, "# iobench fs ", 1800).value_or("(no result from the guest)");
  std::printf("virtio-fs in the guest (cache=auto), 1000 files, %s bytes: %s\n",
              absl::StrCat(bytes).c_str(), guest_fs.c_str());
  probe::FsWorkloadResult host = probe::RunFsWorkload(share, 1000, bytes);
  std::printf("host directory directly (ceiling): metadata_ops_per_s=%.0f write_mib_per_s=%.1f "
              "read_mib_per_s=%.1f%s\n",
              host.metadata_ops_per_s, host.write_mib_per_s, host.read_mib_per_s, host.ok ? "" : " (FAILED)");
  vmm.WriteLine("done");
  WaitForLine(vmm, "vessel-test: done, powering off", 300);
  std::printf("vessel-vmm exit status %d\n", vmm.Wait());
  std::filesystem::remove_all(share);
  return 0;
}

}  // namespace
}  // namespace vessel::e2e

int main(int argc, char** argv) { return vessel::e2e::Main(argc, argv); }
