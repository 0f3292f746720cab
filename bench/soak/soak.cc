#include "bench/soak/soak.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/empty.pb.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/typed.h"
#include "tests/devices/net_test_env.h"
#include "tests/vmm/tiny_guest.h"
#include "vessel/agent/v1/agent.pb.h"
#include "vmm/base/log.h"
#include "vmm/kvm/platform.h"
#include "vmm/machine.h"

namespace vessel::soak {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int CountEntries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  }
  ::closedir(d);
  return n;
}

std::string ProcDir(pid_t pid) { return pid == 0 ? "/proc/self" : absl::StrCat("/proc/", pid); }

void ReadRss(pid_t pid, ProcSample& s) {
  std::ifstream in(ProcDir(pid) + "/status");
  std::string line;
  s.rss_kib = s.rss_anon_kib = s.rss_file_kib = -1;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::atoll(line.c_str() + 6);
    if (line.rfind("RssAnon:", 0) == 0) s.rss_anon_kib = std::atoll(line.c_str() + 8);
    if (line.rfind("RssFile:", 0) == 0) s.rss_file_kib = std::atoll(line.c_str() + 8);
  }
}

int CountLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return -1;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

nlohmann::json SampleJson(const ProcSample& s) {
  nlohmann::json j = {{"fds", s.fds},         {"threads", s.threads},
                      {"rss_kib", s.rss_kib}, {"rss_anon_kib", s.rss_anon_kib},
                      {"rss_file_kib", s.rss_file_kib}, {"mounts", s.mounts},
                      {"maps", s.maps}};
  if (s.heap_in_use_kib >= 0) j["heap_in_use_kib"] = s.heap_in_use_kib;
  return j;
}

}  // namespace

ProcSample Sample(pid_t pid) {
  ProcSample s;
  s.fds = CountEntries(ProcDir(pid) + "/fd");
  if (pid == 0 && s.fds > 0) --s.fds;  // the listing's own directory fd
  s.threads = CountEntries(ProcDir(pid) + "/task");
  ReadRss(pid, s);
  if (pid == 0) s.heap_in_use_kib = static_cast<int64_t>(::mallinfo2().uordblks / 1024);
  s.mounts = CountLines(ProcDir(pid) + "/mountinfo");
  s.maps = CountLines(ProcDir(pid) + "/maps");
  return s;
}

std::vector<std::string> FdTargets(pid_t pid) {
  std::vector<std::string> out;
  const std::string dir = ProcDir(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.' || (pid == 0 && std::atoi(e->d_name) == ::dirfd(d))) continue;
    char buf[512];
    ssize_t n = ::readlinkat(::dirfd(d), e->d_name, buf, sizeof(buf) - 1);
    if (n < 0) continue;
    std::string t(buf, static_cast<size_t>(n));
    size_t bracket = t.find(":[");
    if (bracket != std::string::npos && t.find_first_not_of("0123456789]", bracket + 2) ==
                                            std::string::npos) {
      t = t.substr(0, bracket) + ":[N]";
    }
    out.push_back(std::move(t));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

ProcSample SettledSample(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  ProcSample prev = Sample(pid);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ProcSample cur = Sample(pid);
    if ((cur.fds == prev.fds && cur.threads == prev.threads && cur.mounts == prev.mounts &&
         cur.maps == prev.maps) ||
        Clock::now() > deadline) {
      return cur;
    }
    prev = cur;
  }
}

std::vector<std::string> ProcReport::Check() const {
  std::vector<std::string> problems;
  auto diff = [&](const char* what, int64_t base, int64_t end) {
    if (end != base) {
      problems.push_back(absl::StrFormat("%s: %s %d after warm-up, %d at the end (%+d)", who, what,
                                         base, end, end - base));
    }
  };
  const bool fds_ok = end.fds == baseline.fds ||
                      (end.fds > baseline.fds && end.fds - baseline.fds <= fd_allowance);
  if (!fds_ok) diff("open fds", baseline.fds, end.fds);
  if (!fds_ok && !fd_targets_end.empty()) {
    std::vector<std::string> added, removed;
    std::set_difference(fd_targets_end.begin(), fd_targets_end.end(), fd_targets_baseline.begin(),
                        fd_targets_baseline.end(), std::back_inserter(added));
    std::set_difference(fd_targets_baseline.begin(), fd_targets_baseline.end(),
                        fd_targets_end.begin(), fd_targets_end.end(), std::back_inserter(removed));
    if (added.size() > 12) added.resize(12);
    if (removed.size() > 12) removed.resize(12);
    problems.push_back(absl::StrCat(who, ": fds at the end, not at the baseline: ",
                                    absl::StrJoin(added, ", "), removed.empty() ? "" : "; gone: ",
                                    absl::StrJoin(removed, ", ")));
  }
  diff("threads", baseline.threads, end.threads);
  diff("mounts", baseline.mounts, end.mounts);
  diff("mappings", baseline.maps, end.maps);
  if (end.rss_kib - baseline.rss_kib > rss_allowance_kib) {
    problems.push_back(absl::StrFormat(
        "%s: VmRSS grew %d KiB from the warm-up baseline (%d -> %d KiB), allowance %d KiB", who,
        end.rss_kib - baseline.rss_kib, baseline.rss_kib, end.rss_kib, rss_allowance_kib));
  }
  return problems;
}

std::vector<std::string> SoakResult::Problems() const {
  std::vector<std::string> problems;
  for (const ProcReport& p : processes) {
    for (std::string& s : p.Check()) problems.push_back(std::move(s));
  }
  if (completed != iterations) {
    problems.push_back(absl::StrFormat("%s: %d of %d iterations completed", name, completed,
                                       iterations));
  }
  for (const std::string& e : errors) problems.push_back(absl::StrCat(name, ": ", e));
  return problems;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

nlohmann::json SoakResult::ToJson() const {
  nlohmann::json j;
  j["name"] = name;
  j["platform"] = platform;
  j["iterations"] = iterations;
  j["warmup"] = warmup;
  j["completed"] = completed;
  j["total_s"] = total_s;
  j["iteration_ms"] = {{"min", iteration_ms.empty() ? 0 : *std::min_element(iteration_ms.begin(), iteration_ms.end())},
                       {"p50", Percentile(iteration_ms, 0.5)},
                       {"p90", Percentile(iteration_ms, 0.9)},
                       {"p99", Percentile(iteration_ms, 0.99)},
                       {"max", iteration_ms.empty() ? 0 : *std::max_element(iteration_ms.begin(), iteration_ms.end())}};
  if (iteration_ms.size() <= 100) j["iteration_ms"]["samples"] = iteration_ms;
  j["notes"] = notes;
  j["errors"] = errors;
  nlohmann::json procs = nlohmann::json::array();
  for (const ProcReport& p : processes) {
    nlohmann::json pj;
    pj["who"] = p.who;
    pj["start"] = SampleJson(p.start);
    pj["baseline"] = SampleJson(p.baseline);
    pj["end"] = SampleJson(p.end);
    pj["rss_allowance_kib"] = p.rss_allowance_kib;
    pj["fd_allowance"] = p.fd_allowance;
    nlohmann::json trace = nlohmann::json::array();
    for (const auto& [n, s] : p.trace) {
      nlohmann::json t = SampleJson(s);
      t["done"] = n;
      trace.push_back(t);
    }
    pj["trace"] = trace;
    procs.push_back(pj);
  }
  j["processes"] = procs;
  std::vector<std::string> problems = Problems();
  j["problems"] = problems;
  j["ok"] = problems.empty();
  return j;
}

std::string SoakResult::Table() const {
  std::string out = absl::StrFormat(
      "== soak %s: %d iterations (+%d warm-up), %d completed, %.1f s, platform %s\n", name,
      iterations, warmup, completed, total_s, platform);
  for (const std::string& n : notes) absl::StrAppend(&out, "   note: ", n, "\n");
  absl::StrAppend(&out, absl::StrFormat("   %-14s %-9s %10s %10s %10s %10s  %s\n", "process",
                                        "figure", "start", "baseline", "end", "end-base",
                                        "allowed"));
  for (const ProcReport& p : processes) {
    auto row = [&](const char* fig, int64_t s, int64_t b, int64_t e, const std::string& allowed) {
      absl::StrAppend(&out, absl::StrFormat("   %-14s %-9s %10d %10d %10d %+10d  %s\n", p.who, fig,
                                            s, b, e, e - b, allowed));
    };
    row("fds", p.start.fds, p.baseline.fds, p.end.fds,
        p.fd_allowance == 0 ? "0" : absl::StrCat("<= ", p.fd_allowance));
    row("threads", p.start.threads, p.baseline.threads, p.end.threads, "0");
    row("rss_kib", p.start.rss_kib, p.baseline.rss_kib, p.end.rss_kib,
        absl::StrCat("<= ", p.rss_allowance_kib));
    row("mounts", p.start.mounts, p.baseline.mounts, p.end.mounts, "0");
    row("mappings", p.start.maps, p.baseline.maps, p.end.maps, "0");
  }
  for (const ProcReport& p : processes) {
    if (p.trace.empty()) continue;
    absl::StrAppend(&out, "   ", p.who, " after N iterations (fds/threads/rss_kib/mounts):");
    for (const auto& [n, s] : p.trace) {
      absl::StrAppend(&out, absl::StrFormat(" %d:%d/%d/%d/%d", n, s.fds, s.threads, s.rss_kib,
                                            s.mounts));
    }
    absl::StrAppend(&out, "\n");
    if (p.baseline.heap_in_use_kib >= 0) {
      absl::StrAppend(&out, absl::StrFormat("   %s malloc in use (KiB): baseline %d, end %d\n",
                                            p.who, p.baseline.heap_in_use_kib,
                                            p.end.heap_in_use_kib));
    }
  }
  absl::StrAppend(&out, absl::StrFormat(
                            "   per iteration: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                            Percentile(iteration_ms, 0.5), Percentile(iteration_ms, 0.9),
                            Percentile(iteration_ms, 0.99), Percentile(iteration_ms, 1.0)));
  std::vector<std::string> problems = Problems();
  absl::StrAppend(&out, problems.empty() ? "   result: back to baseline\n"
                                         : "   result: PROBLEMS\n");
  for (const std::string& p : problems) absl::StrAppend(&out, "   - ", p, "\n");
  return out;
}

void Reserve(SoakResult& r, ProcReport& p, int iterations, int trace_every) {
  // resize + clear, not reserve: a large reservation is an mmap whose pages would be first touched
  // (and counted in VmRSS) during the soak; resize writes them now, clear keeps the capacity.
  r.iteration_ms.resize(static_cast<size_t>(iterations));
  r.iteration_ms.clear();
  r.errors.reserve(16);
  p.trace.resize(static_cast<size_t>(trace_every > 0 ? iterations / trace_every + 2 : 2));
  p.trace.clear();
}

absl::Status IsolateMounts() {
  if (CountEntries("/proc/self/task") != 1) {
    return absl::FailedPreconditionError("IsolateMounts: the process already has several threads");
  }
  if (::unshare(CLONE_NEWNS) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("unshare(CLONE_NEWNS): ", std::strerror(errno)));
  }
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return absl::InternalError(absl::StrCat("mount / private: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string PlatformName() { return DetectPlatform().Name(); }

void AddTracePoint(ProcReport& report, int done, pid_t pid, bool verbose) {
  ProcSample s = Sample(pid);
  report.trace.emplace_back(done, s);
  if (verbose) {
    std::fprintf(stderr, "soak: %-12s after %5d: fds %d threads %d rss %lld KiB mounts %d\n",
                 report.who.c_str(), done, s.fds, s.threads, static_cast<long long>(s.rss_kib),
                 s.mounts);
  }
}

// ---- Machines ---------------------------------------------------------------------------------

SoakResult MachineSoak(const MachineSoakOptions& o) {
  SoakResult r;
  r.name = "machines";
  r.platform = PlatformName();
  r.iterations = o.iterations;
  r.warmup = o.warmup;
  ProcReport self;
  self.who = "vmm process";
  self.rss_allowance_kib = o.rss_allowance_kib;
  self.start = SettledSample();

  char tmpl[] = "/tmp/vessel-soak-machines-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    r.errors.push_back("mkdtemp failed");
    return r;
  }
  const std::string dir = tmpl;
  const std::string kernel = dir + "/tiny-kernel";
  const std::string share = dir + "/share";
  const std::string disk = dir + "/disk.img";
  {
    std::vector<uint8_t> elf = testing::TinyElfKernel(testing::PowerOffCode());
    std::ofstream(kernel, std::ios::binary)
        .write(reinterpret_cast<const char*>(elf.data()), static_cast<std::streamsize>(elf.size()));
    stdfs::create_directories(share);
    std::ofstream(share + "/hello.txt") << "soak\n";
    int fd = ::open(disk.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, 8 << 20) != 0) r.errors.push_back("cannot create the disk image");
    if (fd >= 0) ::close(fd);
  }
  // The tap's network namespace lives for the whole soak (before the baseline); each Machine
  // creates its own non-persistent tap in it, which vanishes when the Machine closes it.
  std::unique_ptr<net::testing::ScratchNetns> netns;
  if (o.net) {
    absl::StatusOr<std::unique_ptr<net::testing::ScratchNetns>> ns =
        net::testing::ScratchNetns::Create();
    if (ns.ok()) {
      netns = std::move(*ns);
    } else {
      r.notes.push_back(absl::StrCat("virtio-net skipped: ", ns.status().message()));
    }
  } else {
    r.notes.push_back("virtio-net skipped: --no-net");
  }
  if (netns != nullptr) {
    r.notes.push_back("devices: virtio-blk (8 MiB file), virtio-vsock (Unix socket), "
                      "virtio-net (tap in a scratch netns), virtio-fs (temp dir)");
  } else {
    r.notes.push_back("devices: virtio-blk (8 MiB file), virtio-vsock (Unix socket), "
                      "virtio-fs (temp dir)");
  }
  r.notes.push_back(absl::StrFormat("guest: tiny ELF kernel that powers off, 1 vCPU, %d MiB",
                                    o.mem_mib));

  auto one = [&](int i) -> absl::Status {
    MachineConfig c;
    c.mem_mib = o.mem_mib;
    c.kernel_path = kernel;
    block::BlockConfig b;
    b.path = disk;
    b.serial = "soak";
    c.disks.push_back(b);
    vsock::VsockConfig v;
    v.guest_cid = 3;
    v.uds_path = dir + "/vsock.sock";
    c.vsock = v;
    if (netns != nullptr) {
      net::NetConfig n;
      n.tap_name = "soak0";
      n.netns_path = netns->path();
      c.nets.push_back(n);
    }
    fs::FsConfig f;
    f.tag = "soak";
    f.shared_dir = share;
    c.shares.push_back(f);
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
    if (!m.ok()) return m.status();
    absl::Status s = (*m)->Start();
    if (!s.ok()) return s;
    MachineExit exit = (*m)->Wait();
    if (exit.reason != ExitReason::kPoweroff) {
      return absl::InternalError(absl::StrCat("machine ", i, " ended with ",
                                              ExitReasonName(exit.reason), ": ", exit.detail));
    }
    m->reset();
    if (::access(v.uds_path.c_str(), F_OK) == 0) {
      return absl::InternalError(absl::StrCat("machine ", i, " left its vsock socket behind"));
    }
    return absl::OkStatus();
  };

  for (int i = 0; i < o.warmup && r.errors.empty(); ++i) {
    absl::Status s = one(-1 - i);
    if (!s.ok()) r.errors.push_back(absl::StrCat("warm-up: ", s.message()));
  }
  Reserve(r, self, o.iterations, o.trace_every);
  self.baseline = SettledSample();
  self.fd_targets_baseline = FdTargets();
  AddTracePoint(self, 0, 0, o.verbose);
  const auto t0 = Clock::now();
  for (int i = 0; i < o.iterations && r.errors.size() < 5; ++i) {
    const auto a = Clock::now();
    absl::Status s = one(i);
    r.iteration_ms.push_back(Ms(Clock::now() - a));
    if (s.ok()) {
      ++r.completed;
    } else {
      r.errors.push_back(std::string(s.message()));
    }
    if (o.trace_every > 0 && (i + 1) % o.trace_every == 0) AddTracePoint(self, i + 1, 0, o.verbose);
  }
  r.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  self.end = SettledSample();
  self.fd_targets_end = FdTargets();
  r.processes.push_back(self);
  netns.reset();
  std::error_code ec;
  stdfs::remove_all(dir, ec);
  return r;
}

// ---- Containers through the agent in host mode ------------------------------------------------

namespace {

using google::protobuf::Empty;
namespace v1 = ::vessel::agent::v1;
constexpr char kService[] = "vessel.agent.v1.Agent";

struct HostAgent {
  std::string dir, root, stdio;
  pid_t pid = -1;
  ttrpc::IoThread io;
  std::shared_ptr<ttrpc::Client> client;

  template <typename Resp, typename Req>
  absl::StatusOr<Resp> Call(const char* method, const Req& req) {
    ttrpc::CallOptions options;
    options.timeout = absl::Seconds(30);
    return ttrpc::CallTyped<Resp>(*client, kService, method, req, options);
  }

  absl::Status Start(const std::string& agent_path, const std::string& busybox) {
    char tmpl[] = "/tmp/vessel-soak-agent-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    dir = tmpl;
    root = dir + "/root";
    stdio = dir + "/stdio";
    std::error_code ec;
    for (const char* d : {"/rootfs/bin", "/rootfs/proc", "/rootfs/tmp"}) {
      stdfs::create_directories(root + d, ec);
    }
    stdfs::create_directories(stdio, ec);
    stdfs::copy_file(busybox, root + "/rootfs/bin/busybox", ec);
    if (ec) return absl::FailedPreconditionError(absl::StrCat("copy ", busybox, ": ", ec.message()));
    for (const char* tool : {"sh", "echo", "true", "sleep"}) {
      stdfs::create_symlink("busybox", root + "/rootfs/bin/" + tool, ec);
    }
    pid = ::fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      std::string listen = "unix:" + dir + "/agent.sock";
      ::execl(agent_path.c_str(), agent_path.c_str(), "--listen", listen.c_str(), "--root",
              root.c_str(), "--stdio-dir", stdio.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && client == nullptr; ++i) {
      absl::StatusOr<std::shared_ptr<ttrpc::Client>> c =
          ttrpc::Client::ConnectUnix(io.io(), dir + "/agent.sock");
      if (c.ok()) {
        client = *c;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (client == nullptr) return absl::UnavailableError("the agent did not start serving");
    v1::CreateSandboxRequest sandbox;
    sandbox.set_sandbox_id("soak");
    sandbox.set_hostname("soak");
    return Call<Empty>("CreateSandbox", sandbox).status();
  }

  // The agent's host-mode cgroup (vessel-agent-test-<pid>): how many container cgroups it holds.
  int CgroupChildren() const {
    for (const char* base : {"/sys/fs/cgroup/", "/sys/fs/cgroup/unified/"}) {
      std::string path = absl::StrCat(base, "vessel-agent-test-", pid);
      if (!stdfs::exists(path)) continue;
      int n = 0;
      std::error_code ec;
      for (const auto& e : stdfs::directory_iterator(path, ec)) n += e.is_directory() ? 1 : 0;
      return n;
    }
    return -1;
  }

  // SIGTERM; true when it exited 0.
  bool Stop() {
    client.reset();
    bool ok = false;
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
      ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      pid = -1;
    }
    std::error_code ec;
    if (!dir.empty()) stdfs::remove_all(dir, ec);
    return ok;
  }
};

v1::CreateContainerRequest ContainerSpec(const std::string& id, uint32_t port,
                                         std::vector<std::string> args) {
  v1::CreateContainerRequest req;
  req.set_container_id(id);
  req.set_rootfs("/rootfs");
  for (v1::NamespaceType t : {v1::NAMESPACE_TYPE_MOUNT, v1::NAMESPACE_TYPE_PID,
                              v1::NAMESPACE_TYPE_UTS, v1::NAMESPACE_TYPE_IPC}) {
    req.add_namespaces()->set_type(t);
  }
  v1::Mount* proc = req.add_mounts();
  proc->set_destination("/proc");
  proc->set_type("proc");
  v1::Mount* tmp = req.add_mounts();
  tmp->set_destination("/tmp");
  tmp->set_type("tmpfs");
  tmp->add_options("size=1m");
  for (std::string& a : args) req.mutable_process()->add_args(std::move(a));
  req.mutable_process()->add_env("PATH=/bin");
  req.mutable_process()->set_cwd("/");
  req.mutable_stdio()->set_stdout_port(port);
  req.mutable_stdio()->set_stderr_port(port + 1);
  return req;
}

// Accepts one connection on `listener` and reads it to EOF (10 s at most).
absl::StatusOr<std::string> AcceptAndDrain(int listener) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return absl::DeadlineExceededError("no stdio connection");
  ScopedFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) return absl::InternalError("accept failed");
  std::string data;
  char buf[4096];
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    pollfd q{conn.get(), POLLIN, 0};
    if (::poll(&q, 1, 1000) < 0 || Clock::now() > deadline) {
      return absl::DeadlineExceededError("no EOF on stdio");
    }
    if (q.revents == 0) continue;
    ssize_t n = ::read(conn.get(), buf, sizeof(buf));
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

absl::Status RunContainer(HostAgent& a, int i, uint32_t port) {
  const std::string id = absl::StrCat("soak", i < 0 ? "w" : "", i < 0 ? -i : i);
  const std::string out_path = absl::StrCat(a.stdio, "/", port);
  const std::string err_path = absl::StrCat(a.stdio, "/", port + 1);
  absl::StatusOr<ScopedFd> out = ttrpc::ListenUnix(out_path);
  if (!out.ok()) return out.status();
  absl::StatusOr<ScopedFd> err = ttrpc::ListenUnix(err_path);
  if (!err.ok()) return err.status();
  const std::string expected = absl::StrCat("container ", id, "\n");
  absl::Status result = [&]() -> absl::Status {
    absl::StatusOr<v1::CreateContainerResponse> created = a.Call<v1::CreateContainerResponse>(
        "CreateContainer", ContainerSpec(id, port, {"echo", "container", id}));
    if (!created.ok()) return created.status();
    v1::StartContainerRequest start;
    start.set_container_id(id);
    absl::Status s = a.Call<Empty>("StartContainer", start).status();
    if (!s.ok()) return s;
    absl::StatusOr<std::string> stdout_text = AcceptAndDrain(out->get());
    if (!stdout_text.ok()) return stdout_text.status();
    absl::StatusOr<std::string> stderr_text = AcceptAndDrain(err->get());
    if (!stderr_text.ok()) return stderr_text.status();
    if (*stdout_text != expected) {
      return absl::InternalError(absl::StrCat(id, ": stdout '", *stdout_text, "'"));
    }
    v1::WaitProcessRequest wait;
    wait.set_container_id(id);
    absl::StatusOr<v1::WaitProcessResponse> waited =
        a.Call<v1::WaitProcessResponse>("WaitProcess", wait);
    if (!waited.ok()) return waited.status();
    if (waited->exit_status() != 0) {
      return absl::InternalError(absl::StrCat(id, ": exit status ", waited->exit_status()));
    }
    v1::RemoveContainerRequest remove;
    remove.set_container_id(id);
    return a.Call<Empty>("RemoveContainer", remove).status();
  }();
  out->reset();
  err->reset();
  ::unlink(out_path.c_str());
  ::unlink(err_path.c_str());
  return result;
}

}  // namespace

SoakResult AgentContainerSoak(const AgentSoakOptions& o) {
  SoakResult r;
  r.name = "agent_containers";
  r.platform = "host mode (no VM)";
  r.iterations = o.iterations;
  r.warmup = o.warmup;
  r.notes.push_back(
      "each container: CreateContainer (mount/pid/uts/ipc namespaces, /proc, tmpfs /tmp, "
      "stdout+stderr on Unix sockets) -> StartContainer -> stdout read to EOF -> WaitProcess -> "
      "RemoveContainer");
  ProcReport client;
  client.who = "client";
  client.rss_allowance_kib = o.client_rss_allowance_kib;
  ProcReport agent;
  agent.who = "agent";
  agent.rss_allowance_kib = o.agent_rss_allowance_kib;
  client.start = SettledSample();

  HostAgent a;
  absl::Status started = a.Start(o.agent_path, o.busybox_path);
  if (!started.ok()) {
    r.errors.push_back(absl::StrCat("agent: ", started.message()));
    a.Stop();
    return r;
  }
  agent.start = SettledSample(a.pid);
  for (int i = 0; i < o.warmup && r.errors.empty(); ++i) {
    absl::Status s = RunContainer(a, -1 - i, 100 + 2 * static_cast<uint32_t>(i));
    if (!s.ok()) r.errors.push_back(absl::StrCat("warm-up: ", s.message()));
  }
  Reserve(r, client, o.iterations, o.trace_every);
  agent.trace.resize(client.trace.capacity());
  agent.trace.clear();
  agent.baseline = SettledSample(a.pid);
  agent.fd_targets_baseline = FdTargets(a.pid);
  client.baseline = SettledSample();
  client.fd_targets_baseline = FdTargets();
  const int cgroups_before = a.CgroupChildren();
  AddTracePoint(agent, 0, a.pid, o.verbose);
  AddTracePoint(client, 0, 0, o.verbose);
  const auto t0 = Clock::now();
  for (int i = 0; i < o.iterations && r.errors.size() < 5; ++i) {
    const auto t = Clock::now();
    absl::Status s = RunContainer(a, i, 10000 + 2 * static_cast<uint32_t>(i));
    r.iteration_ms.push_back(Ms(Clock::now() - t));
    if (s.ok()) {
      ++r.completed;
    } else {
      r.errors.push_back(std::string(s.message()));
    }
    if (o.trace_every > 0 && (i + 1) % o.trace_every == 0) {
      AddTracePoint(agent, i + 1, a.pid, o.verbose);
      AddTracePoint(client, i + 1, 0, o.verbose);
    }
  }
  r.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  agent.end = SettledSample(a.pid);
  agent.fd_targets_end = FdTargets(a.pid);
  client.end = SettledSample();
  client.fd_targets_end = FdTargets();
  const int cgroups_after = a.CgroupChildren();
  if (cgroups_after != cgroups_before) {
    r.errors.push_back(absl::StrFormat("agent cgroup: %d container cgroups after warm-up, %d at "
                                       "the end",
                                       cgroups_before, cgroups_after));
  }
  int left = CountEntries(a.stdio);
  if (left != 0) r.errors.push_back(absl::StrFormat("%d entries left in the stdio dir", left));
  if (!a.Stop()) r.errors.push_back("the agent did not exit 0 on SIGTERM");
  r.processes.push_back(agent);
  r.processes.push_back(client);
  return r;
}

}  // namespace vessel::soak
