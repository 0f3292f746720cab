// Soak harness (issue 10: no leaks over 1,000 sandboxes): create and destroy many VMs or
// containers in one process and check that the process's open fds, threads, resident memory and
// mounts come back to their baseline. Used by the `vessel_soak` bench tool (bench/soak/main.cc,
// counts from flags, a table + JSON) and by the CI tests in tests/soak/ (smaller counts, asserts).
//
//   MachineSoak: vessel::Machine instances with the sandbox's device shape (virtio-vsock on a Unix
//     socket, a virtio-fs share, a virtio-blk disk, virtio-net on a tap in a scratch network
//     namespace when one can be made) around a tiny ELF kernel that powers off at once:
//     Create + Start + Wait + destroy, all in this process.
//   AgentContainerSoak: vessel-agent in host mode (a child process serving ttrpc on a Unix socket,
//     as tests/agent does): containers created, started, their stdout read to EOF, waited and
//     removed; the agent's numbers come from /proc/<pid>, the client's from /proc/self.
// The real-boot soaks (Sandbox::Create/Stop, containers in a booted sandbox) are in
// sandbox_soak.h: they link the sandbox SDK and each boot costs ~40 s on kvm_pvm.
#ifndef VESSEL_BENCH_SOAK_SOAK_H_
#define VESSEL_BENCH_SOAK_SOAK_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace vessel::soak {

// What one process holds. pid 0 = this process.
struct ProcSample {
  int fds = 0;         // entries of /proc/<pid>/fd (this process: without the one the listing uses)
  int threads = 0;     // entries of /proc/<pid>/task
  int64_t rss_kib = 0; // VmRSS of /proc/<pid>/status
  int mounts = 0;      // lines of /proc/<pid>/mountinfo
  int maps = 0;        // lines of /proc/<pid>/maps: a leaked guest RAM mapping that the guest
                       // never touched would not show in VmRSS, but shows here
  int64_t rss_anon_kib = 0, rss_file_kib = 0;  // RssAnon / RssFile (the split of VmRSS)
  int64_t heap_in_use_kib = -1;  // this process only: malloc'd bytes in use (mallinfo2)
};
ProcSample Sample(pid_t pid = 0);
// readlink of every /proc/<pid>/fd/N; socket and pipe inode numbers are replaced by "N".
std::vector<std::string> FdTargets(pid_t pid = 0);
// Counts settle (threads being joined, fds closed by exiting threads): samples until two samples
// 50 ms apart have the same fds/threads/mounts, for at most `timeout`.
ProcSample SettledSample(pid_t pid = 0,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

// One process's numbers across a soak: `start` before anything was created, `baseline` after the
// warm-up iterations (one-time costs paid: libraries' pages, malloc arenas, lazily built tables),
// `end` after the last iteration was destroyed; `trace` every `trace_every` iterations.
struct ProcReport {
  std::string who;  // "vmm process", "agent", "client"
  ProcSample start, baseline, end;
  std::vector<std::pair<int, ProcSample>> trace;  // (iterations done, sample)
  // What the fds point at (readlink of /proc/<pid>/fd/N) at the baseline and the end, so that a
  // growing count names its objects ("socket:[123]", "/tmp/x (deleted)", "anon_inode:[eventfd]").
  std::vector<std::string> fd_targets_baseline, fd_targets_end;
  // Allowed VmRSS growth from baseline to end, KiB (fds, threads, mounts and mappings: none).
  int64_t rss_allowance_kib = 0;
  // Allowed fd growth (0: none). Only the booted-sandbox container soak sets one: the guest agent
  // drops the guest's cached dentries every 16th container removal, until then each removed
  // container's share directory keeps an fd in the VMM (guest/agent/agent.cc, Agent::Dispose).
  int fd_allowance = 0;
  // Problems found: a count not back at its baseline, RSS beyond the allowance.
  std::vector<std::string> Check() const;
};

struct SoakResult {
  std::string name;         // "machines", "agent_containers", "sandboxes", "sandbox_containers"
  std::string platform;     // "kvm_pvm (software nested KVM)", "hardware KVM", "host mode (no VM)"
  int iterations = 0;       // measured iterations (after the warm-up)
  int warmup = 0;
  int completed = 0;        // measured iterations that finished without an error
  std::vector<std::string> errors;  // first few iteration errors
  std::vector<std::string> notes;   // e.g. "virtio-net skipped: ..."
  std::vector<double> iteration_ms; // wall time of each measured iteration
  double total_s = 0;
  std::vector<ProcReport> processes;
  // Every process's Check() problems plus the iteration errors.
  std::vector<std::string> Problems() const;
  nlohmann::json ToJson() const;
  // A human-readable table: per process start/baseline/end of each figure, and the iteration times.
  std::string Table() const;
};

struct MachineSoakOptions {
  int iterations = 1000;
  int warmup = 20;
  uint64_t mem_mib = 128;
  bool net = true;            // virtio-net on a tap, when a scratch netns and a tap can be made
  int trace_every = 100;
  // VmRSS after the last Machine vs after the warm-up. Measured here: +4..+12 KiB over 1,000
  // (malloc's free lists; the guest RAM is unmapped each time). 1 MiB catches any per-VM leak of
  // >= 3.5 KiB at 300 machines (a kvm_run page, a vsock/net buffer, a thread stack's touched
  // pages); leaks of fds, threads, mounts or mappings are caught exactly by the counts.
  int64_t rss_allowance_kib = 1024;
  bool verbose = false;       // one line per trace point on stderr
};
SoakResult MachineSoak(const MachineSoakOptions& options);

struct AgentSoakOptions {
  std::string agent_path;     // the vessel-agent binary
  std::string busybox_path;   // a static busybox for the rootfs
  int iterations = 1000;
  int warmup = 10;
  int trace_every = 100;
  // Measured here: the agent +16 KiB over 300 containers, +40 KiB over 20,000 (growing with the
  // log of the count: malloc fragmentation, not a per-container leak); the client +0..+4 KiB.
  // 512 KiB catches a per-container leak of >= 1.7 KiB at 300 containers in the agent.
  int64_t agent_rss_allowance_kib = 512;
  int64_t client_rss_allowance_kib = 1024;
  bool verbose = false;
};
// Needs root (the agent's namespaces, mounts, cgroups).
SoakResult AgentContainerSoak(const AgentSoakOptions& options);

// Moves this process into a private mount namespace (unshare(CLONE_NEWNS), then / made
// recursively private), so that mounts made by other programs on a shared host do not change the
// mount counts a soak compares. Call it first thing, while the process has one thread (the mount
// namespace is per thread until then). Needs CAP_SYS_ADMIN; the caller notes the error and goes on.
absl::Status IsolateMounts();

// Helpers shared with sandbox_soak.cc.
std::string PlatformName();
double Percentile(std::vector<double> v, double p);
void AddTracePoint(ProcReport& report, int done, pid_t pid, bool verbose);
// Reserves the result's per-iteration vectors before the baseline, so that the harness's own
// bookkeeping does not show up as growth.
void Reserve(SoakResult& r, ProcReport& p, int iterations, int trace_every);

}  // namespace vessel::soak

#endif  // VESSEL_BENCH_SOAK_SOAK_H_
