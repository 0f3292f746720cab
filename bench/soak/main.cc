// vessel_soak: issue 10's soak harness ("no leaks over 1,000 sandboxes"). Creates and destroys
// many VMs / containers in one process and prints, per process, open fds, threads, VmRSS and mounts
// before, after the warm-up (the baseline) and at the end, plus the time per iteration; a table on
// stdout and one JSON object (also to --json FILE). Exit status 0 when everything came back to its
// baseline (RSS within its allowance), 1 otherwise, 2 on bad flags.
//
//   vessel_soak [--machines N] [--containers N] [--sandboxes N] [--sandbox-containers N] [--boot]
//               [--mem-mib M] [--no-net] [--machine-rss-allowance-kib K] [--json FILE] [--verbose]
//
//   --machines N            vessel::Machine soak (tiny guest, blk+vsock+net+fs), default 1000
//   --containers N          containers through vessel-agent in host mode, default 1000 (root)
//   --sandboxes N           Sandbox::Create/Stop with the real guest, default 0 (~40-80 s each on
//                           kvm_pvm) -- after 1 warm-up sandbox
//   --sandbox-containers N  `true` containers in one booted sandbox, default 0 (+1 warm-up)
//   --boot                  shorthand for --sandboxes 3 --sandbox-containers 20
// Counts of 0 skip that soak. The CI versions (smaller counts, assertions) are tests/soak/.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <sys/utsname.h>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "bench/soak/sandbox_soak.h"
#include "bench/soak/soak.h"
#include "nlohmann/json.hpp"
#include "vmm/base/log.h"

#ifndef VESSEL_AGENT_PATH
#error "VESSEL_AGENT_PATH must name the vessel-agent binary"
#endif

namespace {

bool root_at_start() { return ::geteuid() == 0; }

int Usage() {
  std::fprintf(stderr,
               "usage: vessel_soak [--machines N] [--containers N] [--sandboxes N] "
               "[--sandbox-containers N] [--boot] [--mem-mib M] [--no-net] "
               "[--machine-rss-allowance-kib K] [--json FILE] [--verbose]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vessel::soak;
  int machines = 1000, containers = 1000, sandboxes = 0, sandbox_containers = 0;
  uint64_t mem_mib = 128;
  int64_t machine_allowance = MachineSoakOptions().rss_allowance_kib;
  bool net = true, verbose = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next_int = [&](auto& out) {
      return i + 1 < argc && absl::SimpleAtoi(argv[++i], &out) && out >= 0;
    };
    if (a == "--machines") {
      if (!next_int(machines)) return Usage();
    } else if (a == "--containers") {
      if (!next_int(containers)) return Usage();
    } else if (a == "--sandboxes") {
      if (!next_int(sandboxes)) return Usage();
    } else if (a == "--sandbox-containers") {
      if (!next_int(sandbox_containers)) return Usage();
    } else if (a == "--boot") {
      sandboxes = 3;
      sandbox_containers = 20;
    } else if (a == "--mem-mib") {
      if (!next_int(mem_mib) || mem_mib == 0) return Usage();
    } else if (a == "--machine-rss-allowance-kib") {
      if (!next_int(machine_allowance)) return Usage();
    } else if (a == "--no-net") {
      net = false;
    } else if (a == "--json") {
      if (i + 1 >= argc) return Usage();
      json_path = argv[++i];
    } else if (a == "--verbose" || a == "-v") {
      verbose = true;
    } else {
      return Usage();
    }
  }
  // Before any thread exists: other programs' mounts must not move our mount counts.
  const absl::Status isolated = root_at_start() ? IsolateMounts() : absl::OkStatus();
  vessel::SetMinLogLevel(verbose ? vessel::LogLevel::kInfo : vessel::LogLevel::kWarning);
  const bool root = ::geteuid() == 0;
  const bool kvm = ::access("/dev/kvm", R_OK | W_OK) == 0;
  utsname u{};
  ::uname(&u);
  nlohmann::json out;
  out["schema"] = "vessel-soak/1";
  out["host"] = {{"platform", PlatformName()},
                 {"kernel", u.release},
                 {"cpus", std::thread::hardware_concurrency()}};
  out["mount_namespace"] = isolated.ok() && root ? "private (IsolateMounts)"
                                                  : "the host's: " + isolated.ToString();
  if (!isolated.ok() || !root) {
    std::printf("note: mount counts are of the host's mount namespace (%s)\n\n",
                isolated.ToString().c_str());
  }
  out["soaks"] = nlohmann::json::array();
  out["skipped"] = nlohmann::json::array();
  bool ok = true;
  auto report = [&](const SoakResult& r) {
    std::printf("%s\n", r.Table().c_str());
    std::fflush(stdout);
    out["soaks"].push_back(r.ToJson());
    ok = ok && r.Problems().empty();
  };
  auto skip = [&](const char* name, const char* why) {
    std::printf("== soak %s: skipped (%s)\n\n", name, why);
    out["skipped"].push_back({{"name", name}, {"reason", why}});
  };

  if (machines > 0) {
    if (!kvm) {
      skip("machines", "no usable /dev/kvm");
    } else {
      MachineSoakOptions o;
      o.iterations = machines;
      o.mem_mib = mem_mib;
      o.net = net;
      o.rss_allowance_kib = machine_allowance;
      o.verbose = verbose;
      // Each tiny guest logs the kvm_pvm compat warning (no vmlinux symbol table): expected.
      if (!verbose) vessel::SetMinLogLevel(vessel::LogLevel::kError);
      report(MachineSoak(o));
      vessel::SetMinLogLevel(verbose ? vessel::LogLevel::kInfo : vessel::LogLevel::kWarning);
    }
  }
  if (containers > 0) {
    if (!root) {
      skip("agent_containers", "needs root (the agent's namespaces, mounts, cgroups)");
    } else {
      AgentSoakOptions o;
      o.agent_path = VESSEL_AGENT_PATH;
      o.busybox_path = VESSEL_BUSYBOX_PATH;
      o.iterations = containers;
      o.verbose = verbose;
      report(AgentContainerSoak(o));
    }
  }
  if (sandboxes > 0) {
    if (!kvm || !root) {
      skip("sandboxes", "needs /dev/kvm and root");
    } else {
      SandboxSoakOptions o;
      o.iterations = sandboxes;
      o.verbose = verbose;
      report(SandboxSoak(o));
    }
  }
  if (sandbox_containers > 0) {
    if (!kvm || !root) {
      skip("sandbox_containers", "needs /dev/kvm and root");
    } else {
      SandboxContainerSoakOptions o;
      o.rootfs = VESSEL_DEFAULT_ROOTFS;
      o.iterations = sandbox_containers;
      o.verbose = verbose;
      report(SandboxContainerSoak(o));
    }
  }
  out["ok"] = ok;
  const std::string text = out.dump(2);
  std::printf("%s\n", text.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << text << "\n";
  return ok ? 0 : 1;
}
