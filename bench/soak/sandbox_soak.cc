#include "bench/soak/sandbox_soak.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"

namespace vessel::soak {
namespace {

using Clock = std::chrono::steady_clock;
using sandbox::Sandbox;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string MakeStateDir() {
  char tmpl[] = "/tmp/vessel-soak-sandbox-XXXXXX";
  return ::mkdtemp(tmpl) == nullptr ? "" : tmpl;
}

sandbox::SandboxConfig Config(const std::string& id, const std::string& state_dir,
                              uint64_t memory_mib) {
  sandbox::SandboxConfig c;
  c.id = id;
  c.runtime.memory_mib = memory_mib;
  c.runtime.state_dir = state_dir;
  return c;
}

// Warm-up (ids warm_prefix + i), the baseline, `iterations` timed runs of `one` (ids prefix + i,
// stopping after 3 errors) with a trace point each, and the end sample.
void RunIterations(SoakResult& r, ProcReport& self, const std::function<absl::Status(const std::string&)>& one,
                   int warmup, int iterations, const std::string& warm_prefix, const std::string& prefix,
                   bool verbose) {
  for (int i = 0; i < warmup && r.errors.empty(); ++i) {
    absl::Status s = one(absl::StrCat(warm_prefix, i));
    if (!s.ok()) r.errors.push_back(absl::StrCat("warm-up: ", s.ToString()));
  }
  Reserve(r, self, iterations, 1);
  self.baseline = SettledSample();
  self.fd_targets_baseline = FdTargets();
  AddTracePoint(self, 0, 0, verbose);
  const auto t0 = Clock::now();
  for (int i = 0; i < iterations && r.errors.size() < 3; ++i) {
    const auto t = Clock::now();
    absl::Status s = one(absl::StrCat(prefix, i));
    r.iteration_ms.push_back(Ms(Clock::now() - t));
    if (s.ok()) {
      ++r.completed;
    } else {
      r.errors.push_back(s.ToString());
    }
    AddTracePoint(self, i + 1, 0, verbose);
  }
  r.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  self.end = SettledSample();
  self.fd_targets_end = FdTargets();
}

}  // namespace

SoakResult SandboxSoak(const SandboxSoakOptions& o) {
  SoakResult r;
  r.name = "sandboxes";
  r.platform = PlatformName();
  r.iterations = o.iterations;
  r.warmup = o.warmup;
  r.notes.push_back(absl::StrCat("each: Sandbox::Create (real guest kernel + agent initramfs, 1 vCPU, ",
                                 o.memory_mib, " MiB) -> Stop -> destroy"));
  ProcReport self;
  self.who = "vmm process";
  self.rss_allowance_kib = o.rss_allowance_kib;
  self.start = SettledSample();
  const std::string state_dir = MakeStateDir();
  if (state_dir.empty()) {
    r.errors.push_back("mkdtemp failed");
    return r;
  }
  auto one = [&](const std::string& id) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Sandbox>> sb = Sandbox::Create(Config(id, state_dir, o.memory_mib));
    if (!sb.ok()) return sb.status();
    absl::Status s = (*sb)->Stop();
    sb->reset();
    return s;
  };
  RunIterations(r, self, one, o.warmup, o.iterations, "soak-w", "soak-", o.verbose);
  r.processes.push_back(self);
  std::error_code ec;
  std::filesystem::remove_all(state_dir, ec);
  return r;
}

SoakResult SandboxContainerSoak(const SandboxContainerSoakOptions& o) {
  SoakResult r;
  r.name = "sandbox_containers";
  r.platform = PlatformName();
  r.iterations = o.iterations;
  r.warmup = o.warmup;
  r.notes.push_back(absl::StrCat(
      "one booted sandbox (1 vCPU, ", o.memory_mib,
      " MiB); each: CreateContainer (DefaultOciSpec {\"true\"}, busybox rootfs on virtio-fs) -> "
      "Start -> Wait -> RemoveContainer; numbers of this (the VMM's) process, the guest agent "
      "is not visible from the host"));
  ProcReport self;
  self.who = "vmm process";
  self.rss_allowance_kib = o.rss_allowance_kib;
  self.fd_allowance = o.fd_allowance;
  self.start = SettledSample();
  const std::string state_dir = MakeStateDir();
  if (state_dir.empty()) {
    r.errors.push_back("mkdtemp failed");
    return r;
  }
  absl::StatusOr<std::unique_ptr<Sandbox>> sb =
      Sandbox::Create(Config("soak-containers", state_dir, o.memory_mib));
  if (!sb.ok()) {
    r.errors.push_back(absl::StrCat("Sandbox::Create: ", sb.status().ToString()));
    return r;
  }
  Sandbox& s = **sb;
  auto one = [&](const std::string& id) -> absl::Status {
    sandbox::ContainerConfig cc;
    cc.id = id;
    cc.spec = sandbox::DefaultOciSpec({"true"});
    cc.rootfs_dir = o.rootfs;
    absl::StatusOr<sandbox::Container*> c = s.CreateContainer(std::move(cc));
    if (!c.ok()) return c.status();
    absl::Status started = (*c)->Start();
    absl::StatusOr<uint32_t> status = started.ok() ? (*c)->Wait() : started;
    absl::Status removed = s.RemoveContainer(id);
    if (!status.ok()) return status.status();
    if (*status != 0) return absl::InternalError(absl::StrCat(id, ": `true` exited ", *status));
    return removed;
  };
  RunIterations(r, self, one, o.warmup, o.iterations, "w", "c", o.verbose);
  absl::Status stopped = s.Stop();
  if (!stopped.ok()) r.errors.push_back(absl::StrCat("Stop: ", stopped.ToString()));
  sb->reset();
  // After Stop: back to where the process was before the sandbox (the warm-up costs aside).
  ProcSample after = SettledSample();
  r.notes.push_back(absl::StrFormat(
      "after Stop: fds %d, threads %d, mounts %d (before Create: %d, %d, %d), VmRSS %lld KiB",
      after.fds, after.threads, after.mounts, self.start.fds, self.start.threads,
      self.start.mounts, static_cast<long long>(after.rss_kib)));
  if (after.fds != self.start.fds || after.threads != self.start.threads ||
      after.mounts != self.start.mounts) {
    r.errors.push_back("the sandbox's Stop left fds, threads or mounts behind");
  }
  r.processes.push_back(self);
  std::error_code ec;
  std::filesystem::remove_all(state_dir, ec);
  return r;
}

}  // namespace vessel::soak
