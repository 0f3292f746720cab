// Sandbox templates against cold boots, in one run on one host (issue 14's benchmarks). Prints
// numbers, asserts nothing:
//   - Sandbox::Create to a ready agent, and to the first container command done: cold boot vs
//     restore from a template (median of --restores), and their ratio;
//   - memory: the PSS this process gains for N live sandboxes restored from one template vs N
//     cold-booted ones (the clones share the template's memory file pages they did not write);
//   - the template's size on disk vs its guest memory.
// Needs root and /dev/kvm. On kvm_pvm (software nested KVM) a cold boot emulates the guest kernel
// (~40 s), so only the ratios and the host-side figures carry over to hardware KVM.
//
//   vessel_template_bench [--restores N] [--clones N] [--cold N] [--json FILE]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sandbox/host_mounts.h"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"
#include "vessel/sandbox/template.h"
#include "vmm/base/log.h"
#include "vmm/kvm/platform.h"

namespace vessel::sandbox {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// This process's PSS and RSS in KiB (/proc/self/smaps_rollup).
std::pair<uint64_t, uint64_t> PssRssKib() {
  // The first line is the rollup's address range; then "Key:   value kB" lines.
  std::ifstream in("/proc/self/smaps_rollup");
  std::string line;
  uint64_t pss = 0, rss = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t value = 0;
    if (!(fields >> key >> value)) continue;
    if (key == "Pss:") pss = value;
    if (key == "Rss:") rss = value;
  }
  return {pss, rss};
}

struct Start {
  double agent_ms = 0;         // Sandbox::Create started -> the agent answered (after restore: and reseeded)
  double create_ms = 0;        // -> Sandbox::Create returned (sandbox set up)
  double first_command_ms = 0; // -> the first container command exited
  bool from_template = false;
};

std::string g_rootfs;

absl::StatusOr<std::unique_ptr<Sandbox>> CreateSandbox(const RuntimeConfig& rt, const std::string& id,
                                                       Start* start) {
  SandboxConfig config;
  config.id = id;
  config.runtime = rt;
  const auto t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<Sandbox>> s = Sandbox::Create(config);
  if (!s.ok()) return s;
  if (start != nullptr) {
    const SandboxTimeline t = (*s)->timeline();
    start->create_ms = Ms(Clock::now() - t0);
    start->agent_ms = Ms(t.vm_setup + t.agent_ready);
    start->from_template = t.from_template;
    ContainerConfig cc;
    cc.id = "first";
    cc.spec = DefaultOciSpec({"true"});
    cc.rootfs_dir = g_rootfs;
    absl::StatusOr<Container*> c = (*s)->CreateContainer(std::move(cc));
    if (!c.ok()) return c.status();
    if (absl::Status st = (*c)->Start(); !st.ok()) return st;
    absl::StatusOr<uint32_t> status = (*c)->Wait();
    if (!status.ok()) return status.status();
    start->first_command_ms = Ms(Clock::now() - t0);
    (void)(*s)->RemoveContainer("first");
  }
  return s;
}

int Main(int argc, char** argv) {
  int restores = 3, clones = 10, cold = 10;
  bool latency = true;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--restores") {
      (void)absl::SimpleAtoi(next(), &restores);
    } else if (a == "--clones") {
      (void)absl::SimpleAtoi(next(), &clones);
    } else if (a == "--cold") {
      (void)absl::SimpleAtoi(next(), &cold);
    } else if (a == "--memory-only") {
      latency = false;
    } else if (a == "--json") {
      json_path = next();
    } else {
      std::fprintf(stderr, "usage: vessel_template_bench [--restores N] [--clones N] [--cold N] [--memory-only] [--json FILE]\n");
      return 2;
    }
  }
  if (::geteuid() != 0 || ::access("/dev/kvm", R_OK | W_OK) != 0) {
    std::fprintf(stderr, "vessel_template_bench: needs root and /dev/kvm\n");
    return 1;
  }
  SetMinLogLevel(LogLevel::kWarning);
  char tmpl[] = "/tmp/vessel-template-bench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  g_rootfs = dir + "/rootfs";
  if (std::system(absl::StrCat("cp -a ", VESSEL_DEFAULT_ROOTFS, " ", g_rootfs).c_str()) != 0) return 1;
  RuntimeConfig rt = DefaultRuntimeConfig();
  rt.state_dir = dir + "/state";
  rt.template_dir = dir + "/templates";
  nlohmann::json out;

  // Cold boot (templates off), then the template (its build is a second cold boot).
  RuntimeConfig cold_rt = rt;
  cold_rt.use_template = false;
  // N cold boots at once share the host's cores: each takes N/cores times longer here.
  cold_rt.boot_timeout = std::chrono::seconds(3600);
  Start cold_start;
  if (latency) {
    absl::StatusOr<std::unique_ptr<Sandbox>> s = CreateSandbox(cold_rt, "cold-0", &cold_start);
    if (!s.ok()) {
      std::fprintf(stderr, "cold boot: %s\n", std::string(s.status().message()).c_str());
      return 1;
    }
    (void)(*s)->Stop();
  }
  out["platform"] = DetectPlatform().Name();
  const auto b0 = Clock::now();
  absl::StatusOr<TemplateInfo> info = BuildTemplate(rt);
  const double build_ms = Ms(Clock::now() - b0);
  if (!info.ok()) {
    std::fprintf(stderr, "template build: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  std::vector<Start> restored;
  for (int i = 0; latency && i < restores; ++i) {
    Start st;
    absl::StatusOr<std::unique_ptr<Sandbox>> s = CreateSandbox(rt, absl::StrCat("restore-", i), &st);
    if (!s.ok()) {
      std::fprintf(stderr, "restore: %s\n", std::string(s.status().message()).c_str());
      return 1;
    }
    (void)(*s)->Stop();
    restored.push_back(st);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  std::vector<double> agent, first;
  for (const Start& s : restored) {
    agent.push_back(s.agent_ms);
    first.push_back(s.first_command_ms);
  }
  const double r_agent = median(agent), r_first = median(first);

  // Memory: N live clones, then N live cold boots (created concurrently).
  auto live = [&](const RuntimeConfig& config, int n, const std::string& prefix, bool parallel) {
    const auto [pss0, rss0] = PssRssKib();
    std::vector<std::unique_ptr<Sandbox>> boxes(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      auto make = [&, i] {
        absl::StatusOr<std::unique_ptr<Sandbox>> s = CreateSandbox(config, absl::StrCat(prefix, i), nullptr);
        if (s.ok()) boxes[static_cast<size_t>(i)] = std::move(*s);
        else std::fprintf(stderr, "%s%d: %s\n", prefix.c_str(), i, std::string(s.status().message()).c_str());
      };
      if (parallel) threads.emplace_back(make); else make();
    }
    for (std::thread& t : threads) t.join();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const auto [pss1, rss1] = PssRssKib();
    int alive = 0;
    for (auto& b : boxes) {
      if (b != nullptr) {
        ++alive;
        (void)b->Stop();
      }
    }
    return std::tuple<int, double, double>(alive, alive ? (double)(pss1 - pss0) / alive / 1024 : 0,
                                           alive ? (double)(rss1 - rss0) / alive / 1024 : 0);
  };
  auto [clones_alive, clone_pss, clone_rss] = live(rt, clones, "clone-", false);
  auto [cold_alive, cold_pss, cold_rss] = live(cold_rt, cold, "coldmem-", true);

  std::printf("platform: %s\n", out["platform"].get<std::string>().c_str());
  if (latency) {
    std::printf("%-44s %12s %12s %8s\n", "", "cold boot", "restore", "ratio");
    std::printf("%-44s %10.0f ms %10.1f ms %7.1fx\n", "Sandbox::Create -> agent answers", cold_start.agent_ms,
                r_agent, cold_start.agent_ms / std::max(r_agent, 0.001));
    std::printf("%-44s %10.0f ms %10.1f ms %7.1fx\n", "Sandbox::Create -> first command done",
                cold_start.first_command_ms, r_first, cold_start.first_command_ms / std::max(r_first, 0.001));
  }
  std::printf("template build (cold boot + pause + save): %.0f ms\n", build_ms);
  std::printf("template on disk: %.1f MiB for %llu MiB of guest memory (%.1f%%)\n",
              static_cast<double>(info->disk_bytes) / (1 << 20),
              static_cast<unsigned long long>(info->memory_file_bytes >> 20),
              100.0 * static_cast<double>(info->disk_bytes) / static_cast<double>(info->memory_file_bytes));
  std::printf("PSS per live sandbox: %.1f MiB for %d clones of one template, %.1f MiB for %d cold boots "
              "(RSS %.1f vs %.1f MiB)\n",
              clone_pss, clones_alive, cold_pss, cold_alive, clone_rss, cold_rss);

  out["cold"] = {{"agent_ms", cold_start.agent_ms}, {"first_command_ms", cold_start.first_command_ms}};
  out["restore"] = {{"agent_ms_median", r_agent}, {"first_command_ms_median", r_first}, {"runs", restores}};
  out["ratio"] = {{"agent", cold_start.agent_ms / std::max(r_agent, 0.001)},
                  {"first_command", cold_start.first_command_ms / std::max(r_first, 0.001)}};
  out["template"] = {{"build_ms", build_ms}, {"disk_bytes", info->disk_bytes},
                     {"memory_file_bytes", info->memory_file_bytes}};
  out["memory"] = {{"clones", clones_alive}, {"clone_pss_mib", clone_pss}, {"clone_rss_mib", clone_rss},
                   {"cold", cold_alive}, {"cold_pss_mib", cold_pss}, {"cold_rss_mib", cold_rss}};
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  if (!HasMountsUnder(dir)) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace vessel::sandbox

int main(int argc, char** argv) { return vessel::sandbox::Main(argc, argv); }
