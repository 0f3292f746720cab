// The sandbox SDK end to end (issue 8's benchmarks), in this process:
//   - breakdown of Sandbox::Create -> agent ready -> container created -> started -> exited
//     (`true` in the busybox rootfs), from Sandbox::timeline() (VM setup, agent ready, sandbox
//     ready), the guest kernel's own printk time of "Run /init" (kernel boot, guest clock), and
//     steady_clock around CreateContainer / Start / Wait / RemoveContainer / Stop;
//   - VMM RSS overhead per sandbox: growth of this process's VmRSS from before Create, minus the
//     guest RAM the guest touched (the Rss of the guest RAM mappings in /proc/self/smaps: anonymous
//     mappings at least the guest memory size), after Create and again after the container exited;
//   - sandboxes created per second with N in parallel (threads of this process, each creating its
//     own sandbox with its own id): N / (wall time from the start until the last Create returned).
//     N=1 is the sequential repetitions; N>1 is one round each.
// Prints a table and, last, one JSON object (also written to --json FILE) in bench/run's schema.
//   vessel_sandbox_bench [--reps N] [--parallel 1,2] [--vcpus N] [--memory-mib M] [--rootfs DIR]
//                        [--json FILE] [--verbose] [--rss-detail]
// --rss-detail: per repetition, the mappings whose Rss grew most across Create.
// Needs root (share bind mounts) and /dev/kvm. On kvm_pvm hosts the guest kernel is emulated:
// every boot costs ~40-80 s there and the times measure the emulator, not the product.
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "vessel/sandbox/config.h"
#include "vessel/sandbox/sandbox.h"
#include "vmm/base/log.h"

#ifndef VESSEL_DEFAULT_ROOTFS
#error "VESSEL_DEFAULT_ROOTFS must name the busybox rootfs the build makes"
#endif

namespace vessel::sandbox {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Options {
  int reps = 3;
  std::vector<int> parallel = {1, 2};
  uint32_t vcpus = 1;
  uint64_t memory_mib = 512;
  std::string rootfs = VESSEL_DEFAULT_ROOTFS;
  std::string json_path;
  bool verbose = false;
  bool rss_detail = false;
};

// A "Name:  N kB" field of /proc/self/status (VmRSS, RssAnon, RssFile, RssShmem), KiB.
long StatusKib(const char* name) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(name);
  while (std::getline(f, line)) {
    if (line.compare(0, n, name) == 0 && line.size() > n && line[n] == ':') {
      return std::strtol(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return 0;
}
long VmRssKib() { return StatusKib("VmRSS"); }

// Sum of the Rss (KiB) of the guest RAM mappings: anonymous mappings of at least `size_kib` (the
// guest memory size; the kernel may merge two sandboxes' adjacent guest mappings into one VMA, and
// nothing else in the process maps that much: malloc arenas reserve 64 MiB).
// Returns {mappings found, rss KiB}.
std::pair<int, long> GuestRamRssKib(uint64_t size_kib) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool anon = false;
  long size = -1;
  int found = 0;
  long rss = 0;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    // Field lines are "Name: value"; a mapping's header is "start-end perms offset dev inode [path]",
    // anonymous when it has no 6th field.
    const std::string first = line.substr(0, line.find(' '));
    if (first.back() != ':') {
      std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
      anon = fields.size() < 6;
      size = -1;
      continue;
    }
    if (line.rfind("Size:", 0) == 0) {
      size = std::strtol(line.c_str() + 5, nullptr, 10);
    } else if (line.rfind("Rss:", 0) == 0 && anon && size >= static_cast<long>(size_kib)) {
      ++found;
      rss += std::strtol(line.c_str() + 4, nullptr, 10);
    }
  }
  return {found, rss};
}

// Rss (KiB) per mapping, keyed by "start-end perms path" (for --rss-detail).
std::map<std::string, long> MappingRss() {
  std::map<std::string, long> out;
  std::ifstream f("/proc/self/smaps");
  std::string line, key;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const std::string first = line.substr(0, line.find(' '));
    if (first.back() != ':') {
      std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
      key = absl::StrCat(fields[0], " ", fields.size() > 1 ? fields[1] : "", " ",
                         fields.size() > 5 ? fields[5] : "[anon]");
    } else if (line.rfind("Rss:", 0) == 0) {
      out[key] = std::strtol(line.c_str() + 4, nullptr, 10);
    }
  }
  return out;
}

// Prints the mappings whose Rss grew most between two MappingRss() snapshots.
void PrintRssGrowth(const std::map<std::string, long>& before, const std::map<std::string, long>& after) {
  std::vector<std::pair<long, std::string>> grew;
  for (const auto& [key, rss] : after) {
    auto it = before.find(key);
    const long d = rss - (it == before.end() ? 0 : it->second);
    if (d != 0) grew.emplace_back(d, key);
  }
  std::sort(grew.rbegin(), grew.rend());
  for (size_t i = 0; i < grew.size() && i < 8; ++i) {
    std::printf("    rss %+8ld KiB  %s\n", grew[i].first, grew[i].second.c_str());
  }
}

// The guest kernel's printk time (s, guest clock since its start) of "Run /init", or -1.
double KernelBootSeconds(const std::string& console_log) {
  std::ifstream f(console_log);
  std::string line;
  while (std::getline(f, line)) {
    if (line.find("Run /init") == std::string::npos) continue;
    size_t open = line.find('[');
    size_t close = line.find(']');
    double s = 0;
    if (open != std::string::npos && close != std::string::npos && close > open &&
        absl::SimpleAtod(line.substr(open + 1, close - open - 1), &s)) {
      return s;
    }
  }
  return -1;
}

std::string HostPlatform() {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) return "none (no usable /dev/kvm)";
  if (std::filesystem::exists("/sys/module/kvm_pvm")) return "kvm_pvm (software nested KVM)";
  return "hardware KVM";
}

long HostMemoryMib() {
  std::ifstream f("/proc/meminfo");
  std::string k;
  long v = 0;
  while (f >> k >> v) {
    if (k == "MemTotal:") return v / 1024;
    f.ignore(1 << 10, '\n');
  }
  return 0;
}

std::string LoadAvg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

SandboxConfig MakeConfig(const Options& o, const std::string& id, const std::string& state_dir) {
  SandboxConfig c;
  c.id = id;
  c.runtime.vcpus = o.vcpus;
  c.runtime.memory_mib = o.memory_mib;
  c.runtime.state_dir = state_dir;
  return c;
}

// One sequential repetition: every phase in ms, RSS in KiB.
struct Rep {
  std::map<std::string, double> ms;
  std::map<std::string, double> kib;
  std::string platform;
  std::string error;
};

Rep RunOne(const Options& o, const std::string& id, const std::string& state_dir) {
  Rep r;
  const uint64_t guest_kib = o.memory_mib * 1024;
  const long rss0 = VmRssKib(), anon0 = StatusKib("RssAnon"), file0 = StatusKib("RssFile");
  const long guest0 = GuestRamRssKib(guest_kib).second;
  std::map<std::string, long> maps_before;
  if (o.rss_detail) maps_before = MappingRss();
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<Sandbox>> sb = Sandbox::Create(MakeConfig(o, id, state_dir));
  const Clock::time_point t1 = Clock::now();
  if (!sb.ok()) {
    r.error = absl::StrCat("Create: ", sb.status().ToString());
    return r;
  }
  Sandbox& s = **sb;
  r.platform = s.platform();
  const long rss1 = VmRssKib(), anon1 = StatusKib("RssAnon"), file1 = StatusKib("RssFile");
  const auto [maps1, guest1] = GuestRamRssKib(guest_kib);
  if (o.rss_detail) {
    std::printf("  %s: mappings whose Rss grew most across Sandbox::Create:\n", id.c_str());
    PrintRssGrowth(maps_before, MappingRss());
  }
  const SandboxTimeline tl = s.timeline();
  const double boot_s = KernelBootSeconds(s.dir() + "/console.log");

  ContainerConfig cc;
  cc.id = "c";
  cc.spec = DefaultOciSpec({"true"});
  cc.rootfs_dir = o.rootfs;
  absl::StatusOr<Container*> c = s.CreateContainer(std::move(cc));
  const Clock::time_point t2 = Clock::now();
  absl::Status started = c.ok() ? (*c)->Start() : c.status();
  const Clock::time_point t3 = Clock::now();
  absl::StatusOr<uint32_t> status = started.ok() ? (*c)->Wait() : started;
  const Clock::time_point t4 = Clock::now();
  const long rss2 = VmRssKib();
  const long guest2 = GuestRamRssKib(guest_kib).second;
  absl::Status removed = c.ok() ? s.RemoveContainer("c") : absl::OkStatus();
  const Clock::time_point t5 = Clock::now();
  absl::Status stopped = s.Stop();
  const Clock::time_point t6 = Clock::now();
  if (!status.ok()) {
    r.error = absl::StrCat("container: ", status.status().ToString(), "; console tail: ",
                           s.ConsoleTail(600));
    return r;
  }
  if (*status != 0) r.error = absl::StrCat("`true` exited ", *status);
  if (!removed.ok()) r.error = absl::StrCat("RemoveContainer: ", removed.ToString());
  if (!stopped.ok()) r.error = absl::StrCat("Stop: ", stopped.ToString());
  if (maps1 < 1) r.error = absl::StrCat("no guest RAM mapping of ", o.memory_mib, " MiB found");

  const double vm_setup = Ms(tl.vm_setup), agent_ready = Ms(tl.agent_ready);
  r.ms["create_total"] = Ms(t1 - t0);
  r.ms["vm_setup"] = vm_setup;
  r.ms["agent_ready"] = agent_ready;
  if (boot_s >= 0 && boot_s * 1e3 <= agent_ready) {
    r.ms["kernel_boot"] = boot_s * 1e3;
    r.ms["agent_start"] = agent_ready - boot_s * 1e3;
  }
  r.ms["sandbox_ready"] = Ms(tl.sandbox_ready);
  r.ms["create_container"] = Ms(t2 - t1);
  r.ms["start_container"] = Ms(t3 - t2);
  r.ms["run_to_exit"] = Ms(t4 - t3);
  r.ms["create_to_exited"] = Ms(t4 - t0);
  r.ms["remove_container"] = Ms(t5 - t4);
  r.ms["stop"] = Ms(t6 - t5);
  r.kib["rss_delta_after_create"] = rss1 - rss0;
  r.kib["guest_touched_after_create"] = guest1 - guest0;
  r.kib["vmm_overhead_after_create"] = (rss1 - rss0) - (guest1 - guest0);
  r.kib["vmm_overhead_after_exit"] = (rss2 - rss0) - (guest2 - guest0);
  r.kib["guest_touched_after_exit"] = guest2 - guest0;
  // Where the growth is: anonymous (guest RAM, heap, arenas, stacks) vs file-backed pages mapped.
  r.kib["rss_anon_delta_after_create"] = anon1 - anon0;
  r.kib["rss_file_delta_after_create"] = file1 - file0;
  return r;
}

struct Round {
  int n = 0;
  double wall_ms = 0;
  std::vector<double> create_ms;
  double overhead_kib_per_sandbox = 0;
  std::string error;
};

Round RunParallel(const Options& o, int n, const std::string& state_dir) {
  Round round;
  round.n = n;
  const uint64_t guest_kib = o.memory_mib * 1024;
  const long rss0 = VmRssKib();
  const long guest0 = GuestRamRssKib(guest_kib).second;
  std::vector<std::unique_ptr<Sandbox>> boxes(n);
  std::vector<double> create_ms(n, -1);
  std::vector<std::string> errors(n);
  std::barrier start(n + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      const Clock::time_point t0 = Clock::now();
      auto sb = Sandbox::Create(MakeConfig(o, absl::StrCat("bench-par", n, "-", i, "-", ::getpid()), state_dir));
      create_ms[i] = Ms(Clock::now() - t0);
      if (sb.ok()) {
        boxes[i] = std::move(*sb);
      } else {
        errors[i] = sb.status().ToString();
      }
    });
  }
  start.arrive_and_wait();
  const Clock::time_point t0 = Clock::now();
  for (std::thread& t : threads) t.join();
  round.wall_ms = Ms(Clock::now() - t0);
  const long rss1 = VmRssKib();
  const long guest1 = GuestRamRssKib(guest_kib).second;
  round.overhead_kib_per_sandbox = static_cast<double>((rss1 - rss0) - (guest1 - guest0)) / n;
  round.create_ms = create_ms;
  threads.clear();
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      if (boxes[i]) (void)boxes[i]->Stop();
      boxes[i].reset();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& e : errors) {
    if (!e.empty()) round.error = e;
  }
  return round;
}

json Stat(const std::string& name, const std::string& unit, std::vector<double> v,
          const std::string& platform, const Options& o, const std::string& description) {
  std::sort(v.begin(), v.end());
  json j = {{"name", name}, {"unit", unit}, {"platform", platform}, {"vcpus", o.vcpus},
            {"memory_mib", o.memory_mib}, {"vm", true}, {"repetitions", v.size()},
            {"description", description}, {"samples", v}};
  if (!v.empty()) {
    j["min"] = v.front();
    j["median"] = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    j["max"] = v.back();
  }
  return j;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) -> const char* {
      if (std::strcmp(argv[i], name) == 0 && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    const char* v;
    int n = 0;
    if ((v = arg("--reps")) && absl::SimpleAtoi(v, &o.reps) && o.reps >= 1) {
    } else if ((v = arg("--parallel"))) {
      o.parallel.clear();
      for (absl::string_view p : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        if (!absl::SimpleAtoi(p, &n) || n < 1 || n > 64) {
          std::fprintf(stderr, "vessel_sandbox_bench: --parallel takes numbers 1..64\n");
          return 2;
        }
        o.parallel.push_back(n);
      }
    } else if ((v = arg("--vcpus")) && absl::SimpleAtoi(v, &o.vcpus) && o.vcpus >= 1) {
    } else if ((v = arg("--memory-mib")) && absl::SimpleAtoi(v, &o.memory_mib) && o.memory_mib >= 64) {
    } else if ((v = arg("--rootfs"))) {
      o.rootfs = v;
    } else if ((v = arg("--json"))) {
      o.json_path = v;
    } else if (std::strcmp(argv[i], "--verbose") == 0) {
      o.verbose = true;
    } else if (std::strcmp(argv[i], "--rss-detail") == 0) {
      o.rss_detail = true;
    } else {
      std::fprintf(stderr,
                   "usage: vessel_sandbox_bench [--reps N] [--parallel 1,2] [--vcpus N] "
                   "[--memory-mib M] [--rootfs DIR] [--json FILE] [--verbose] [--rss-detail]\n");
      return 2;
    }
  }
  SetMinLogLevel(o.verbose ? LogLevel::kInfo : LogLevel::kWarning);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "vessel_sandbox_bench: needs root (the sandbox share's bind mounts)\n");
    return 1;
  }
  const std::string host_platform = HostPlatform();
  if (host_platform.rfind("none", 0) == 0) {
    std::fprintf(stderr, "vessel_sandbox_bench: %s\n", host_platform.c_str());
    return 1;
  }
  char tmpl[] = "/tmp/vessel-sandbox-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string state_dir = tmpl;
  utsname u{};
  ::uname(&u);
  const unsigned host_cpus = std::thread::hardware_concurrency();
  const std::string load_before = LoadAvg();
  std::printf("# sandbox bench: platform %s; host %u CPUs, %ld MiB, kernel %s, load %s; guest %u vCPU, "
              "%llu MiB; %d sequential reps, parallel N=%s\n",
              host_platform.c_str(), host_cpus, HostMemoryMib(), u.release, load_before.c_str(),
              o.vcpus, static_cast<unsigned long long>(o.memory_mib), o.reps,
              absl::StrJoin(o.parallel, ",").c_str());
  std::fflush(stdout);

  std::vector<Rep> reps;
  std::string platform = host_platform;
  int failures = 0;
  for (int i = 0; i < o.reps; ++i) {
    Rep r = RunOne(o, absl::StrCat("bench-seq", i, "-", ::getpid()), state_dir);
    if (!r.platform.empty()) platform = r.platform;
    if (!r.error.empty()) {
      std::fprintf(stderr, "vessel_sandbox_bench: rep %d: %s\n", i, r.error.c_str());
      ++failures;
      if (r.ms.empty()) continue;
    }
    std::printf("rep %d: create %.0f ms (VM setup %.1f, agent ready %.0f [kernel boot %.0f, agent start "
                "%.0f], sandbox ready %.0f), container create %.1f start %.1f run->exit %.1f, "
                "stop %.0f ms; VMM RSS overhead %.0f KiB after create, %.0f KiB after exit "
                "(guest touched %.0f KiB; RssAnon %+.0f KiB, RssFile %+.0f KiB)\n",
                i, r.ms["create_total"], r.ms["vm_setup"], r.ms["agent_ready"],
                r.ms.count("kernel_boot") ? r.ms["kernel_boot"] : -1.0,
                r.ms.count("agent_start") ? r.ms["agent_start"] : -1.0, r.ms["sandbox_ready"],
                r.ms["create_container"], r.ms["start_container"], r.ms["run_to_exit"], r.ms["stop"],
                r.kib["vmm_overhead_after_create"], r.kib["vmm_overhead_after_exit"],
                r.kib["guest_touched_after_create"], r.kib["rss_anon_delta_after_create"],
                r.kib["rss_file_delta_after_create"]);
    std::fflush(stdout);
    reps.push_back(std::move(r));
  }
  std::vector<Round> rounds;
  for (int n : o.parallel) {
    if (n == 1) continue;  // N=1 is the sequential repetitions
    Round r = RunParallel(o, n, state_dir);
    if (!r.error.empty()) {
      std::fprintf(stderr, "vessel_sandbox_bench: parallel N=%d: %s\n", n, r.error.c_str());
      ++failures;
    }
    std::printf("parallel N=%d: %d sandboxes created in %.0f ms wall = %.4f sandboxes/s; per-sandbox "
                "Create %s ms; VMM RSS overhead %.0f KiB per sandbox\n",
                n, n, r.wall_ms, n / (r.wall_ms / 1e3),
                absl::StrJoin(r.create_ms, ", ", [](std::string* out, double d) {
                  absl::StrAppend(out, static_cast<long>(d));
                }).c_str(),
                r.overhead_kib_per_sandbox);
    std::fflush(stdout);
    rounds.push_back(std::move(r));
  }
  std::error_code ec;
  std::filesystem::remove_all(state_dir, ec);

  // Statistics.
  struct Phase {
    const char* key;
    const char* description;
  };
  const Phase phases[] = {
      {"vm_setup", "Sandbox::Create: config checks, share dir, Machine::Create, vCPUs started"},
      {"kernel_boot", "guest kernel start -> 'Run /init' (guest printk clock)"},
      {"agent_start", "'Run /init' -> the agent answered Version (agent_ready - kernel_boot)"},
      {"agent_ready", "vCPUs started -> the agent answered Version (kernel boot + agent start)"},
      {"sandbox_ready", "agent CreateSandbox (virtio-fs share mounted)"},
      {"create_total", "Sandbox::Create wall time (vm_setup + agent_ready + sandbox_ready)"},
      {"create_container", "CreateContainer (rootfs bind-shared, agent CreateContainer)"},
      {"start_container", "Container::Start (the init execs `true`)"},
      {"run_to_exit", "Start returned -> Wait returned the exit status"},
      {"create_to_exited", "Sandbox::Create called -> the container's exit status known"},
      {"remove_container", "RemoveContainer"},
      {"stop", "Sandbox::Stop (agent DestroySandbox, VM end, cleanup)"},
  };
  json results = json::array();
  std::printf("\n%-34s %10s %10s %10s %5s  [%s, guest %u vCPU %llu MiB]\n", "metric", "min", "median",
              "max", "n", platform.c_str(), o.vcpus, static_cast<unsigned long long>(o.memory_mib));
  auto row = [&](const json& j) {
    if (!j.contains("median")) return;
    const char* f = j["max"].get<double>() < 10 ? "%-34s %10.4f %10.4f %10.4f %5zu  %s\n"
                                                 : "%-34s %10.1f %10.1f %10.1f %5zu  %s\n";
    std::printf(f, j["name"].get<std::string>().c_str(), j["min"].get<double>(),
                j["median"].get<double>(), j["max"].get<double>(), j["repetitions"].get<size_t>(),
                j["unit"].get<std::string>().c_str());
  };
  for (const Phase& p : phases) {
    std::vector<double> v;
    for (Rep& r : reps) {
      if (r.ms.count(p.key)) v.push_back(r.ms[p.key]);
    }
    if (v.empty()) continue;
    json j = Stat(absl::StrCat("sandbox.", p.key), "ms", v, platform, o, p.description);
    row(j);
    results.push_back(j);
  }
  const Phase mem[] = {
      {"vmm_overhead_after_create", "VmRSS growth from before Create minus the guest RAM mapping's Rss (guest-touched pages), agent ready"},
      {"vmm_overhead_after_exit", "the same after the container ran and exited"},
      {"guest_touched_after_create", "Rss of the guest RAM mapping (anonymous, guest memory size) after Create"},
      {"rss_delta_after_create", "VmRSS growth of the process across Sandbox::Create"},
      {"rss_anon_delta_after_create", "RssAnon growth across Sandbox::Create (guest RAM, heap, arenas, stacks)"},
      {"rss_file_delta_after_create", "RssFile growth across Sandbox::Create (file pages mapped: binaries, images)"},
  };
  for (const Phase& p : mem) {
    std::vector<double> v;
    for (Rep& r : reps) {
      if (r.kib.count(p.key)) v.push_back(r.kib[p.key] / 1024.0);
    }
    if (v.empty()) continue;
    json j = Stat(absl::StrCat("sandbox.", p.key), "MiB", v, platform, o, p.description);
    row(j);
    results.push_back(j);
  }
  {
    std::vector<double> v;
    for (Rep& r : reps) v.push_back(1e3 / r.ms["create_total"]);
    if (!v.empty()) {
      json j = Stat("sandbox.create_rate_parallel_1", "sandboxes/s", v, platform, o,
                    "1 / Sandbox::Create wall time, one at a time (the sequential repetitions)");
      j["parallel"] = 1;
      row(j);
      results.push_back(j);
    }
  }
  for (const Round& r : rounds) {
    if (!r.error.empty()) continue;
    json j = Stat(absl::StrCat("sandbox.create_rate_parallel_", r.n), "sandboxes/s",
                  {r.n / (r.wall_ms / 1e3)}, platform, o,
                  absl::StrCat(r.n, " threads each Sandbox::Create at once: N / wall time until the last returned"));
    j["parallel"] = r.n;
    j["create_ms"] = r.create_ms;
    j["vmm_overhead_mib_per_sandbox"] = r.overhead_kib_per_sandbox / 1024.0;
    if (!reps.empty()) {
      json base = results.back();
      for (const json& x : results) {
        if (x["name"] == "sandbox.create_rate_parallel_1") base = x;
      }
      j["ratio_to"] = "sandbox.create_rate_parallel_1";
      j["ratio"] = j["median"].get<double>() / base["median"].get<double>();
    }
    row(j);
    results.push_back(j);
  }
  json timeline = json::array();
  for (Rep& r : reps) timeline.push_back(r.ms);
  char date[64];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  json out = {{"bench", "sandbox"},
              {"date", date},
              {"platform", platform},
              {"host", {{"cpus", host_cpus}, {"memory_mib", HostMemoryMib()}, {"kernel", u.release},
                        {"load_before", load_before}, {"load_after", LoadAvg()}}},
              {"guest", {{"vcpus", o.vcpus}, {"memory_mib", o.memory_mib}, {"rootfs", o.rootfs},
                         {"command", "true"}}},
              {"rss_method",
               "VmRSS (/proc/self/status) growth across Create minus the Rss of the guest RAM "
               "mapping(s) (/proc/self/smaps: anonymous, at least the guest memory size)"},
              {"failures", failures},
              {"timeline", timeline},
              {"results", results}};
  std::printf("\n%s\n", out.dump().c_str());
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << out.dump(2) << "\n";
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vessel::sandbox

int main(int argc, char** argv) { return vessel::sandbox::Main(argc, argv); }
