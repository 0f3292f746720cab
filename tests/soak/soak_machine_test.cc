// Issue 10 soak, CI size: 300 vessel::Machine instances with the sandbox's device shape (virtio-blk
// on a temp file, virtio-vsock on a Unix socket, virtio-net on a tap in a scratch netns when one
// can be made, virtio-fs of a temp dir) around a tiny guest that powers off, created, started,
// waited and destroyed one after another in this process (~15 s here). Open fds, threads, mounts
// and mappings must be back at their post-warm-up baseline exactly, VmRSS within 1 MiB (why: see
// bench/soak/soak.h). The full 1,000-machine run is `vessel_soak` (bench/soak).
#include <unistd.h>

#include <cstdio>

#include "absl/status/status.h"
#include "bench/soak/soak.h"
#include "gtest/gtest.h"
#include "vmm/base/log.h"

namespace vessel::soak {
namespace {

TEST(SoakMachine, ThreeHundredMachinesReturnToBaseline) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  // Other programs' mounts on this shared host must not move the mount count.
  if (::geteuid() == 0) {
    absl::Status isolated = IsolateMounts();
    if (!isolated.ok()) std::printf("note: %s\n", isolated.ToString().c_str());
  }
  // Every tiny guest logs the kvm_pvm compat warning (no vmlinux symbols): expected here.
  SetMinLogLevel(LogLevel::kError);
  MachineSoakOptions o;
  o.iterations = 300;
  o.warmup = 20;
  o.trace_every = 50;
  SoakResult r = MachineSoak(o);
  std::printf("%s", r.Table().c_str());
  EXPECT_EQ(r.completed, o.iterations);
  for (const std::string& p : r.Problems()) ADD_FAILURE() << p;
}

}  // namespace
}  // namespace vessel::soak
