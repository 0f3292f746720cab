#include "guest/agent/cgroups.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::agent {
namespace {

uint64_t ReadU64(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path);
  uint64_t v = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &v)) return 0;
  return v;
}

// "key value" lines.
uint64_t ReadKey(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t v = 0;
    if (f.size() == 2 && f[0] == key && absl::SimpleAtoi(f[1], &v)) return v;
  }
  return 0;
}

absl::Status WriteLimit(const std::string& dir, const char* file, const std::string& value,
                        const char* controller) {
  std::string path = absl::StrCat(dir, "/", file);
  if (::access(path.c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot set ", file, ": the ", controller, " cgroup controller is not available in ", dir));
  }
  return WriteSmallFile(path, value);
}

}  // namespace

absl::StatusOr<CgroupRoot> CgroupRoot::Create(std::string path) {
  CgroupRoot root;
  if (path.empty()) return root;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string parent = path.substr(0, path.rfind('/'));
  struct statfs fs;
  if (::statfs(parent.c_str(), &fs) != 0) return ErrnoStatus(absl::StrCat("statfs ", parent));
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    return absl::FailedPreconditionError(absl::StrCat(parent, " is not a cgroup2 file system"));
  }
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    return ErrnoStatus(absl::StrCat("mkdir ", path));
  // Let the sandbox cgroup and its children use what the parent has.
  absl::StatusOr<std::string> controllers = ReadSmallFile(parent + "/cgroup.controllers");
  if (controllers.ok()) {
    for (absl::string_view c :
         absl::StrSplit(*controllers, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      std::string enable = absl::StrCat("+", c);
      (void)WriteSmallFile(parent + "/cgroup.subtree_control",
                           enable);  // best effort: may already be on
      absl::Status s = WriteSmallFile(path + "/cgroup.subtree_control", enable);
      if (!s.ok())
        LogWarning("agent: cannot enable cgroup controller ", c, " for containers: ", s.message());
    }
  }
  root.path_ = std::move(path);
  return root;
}

void CgroupRoot::Remove() {
  if (!path_.empty() && ::rmdir(path_.c_str()) != 0 && errno != ENOENT) {
    LogWarning("agent: rmdir ", path_, ": ", strerror(errno));
  }
}

absl::StatusOr<ContainerCgroup> ContainerCgroup::Create(const CgroupRoot& root,
                                                        const std::string& container_id,
                                                        const v1::LinuxResources& r) {
  ContainerCgroup cg;
  if (!root.enabled()) {
    if (r.has_memory_limit() || r.has_cpu_quota() || r.has_cpu_shares() || r.has_pids_limit()) {
      return absl::FailedPreconditionError(
          "resource limits given but the agent runs without cgroups");
    }
    return cg;
  }
  std::string path = root.ContainerPath(container_id);
  if (::mkdir(path.c_str(), 0755) != 0) return ErrnoStatus(absl::StrCat("mkdir cgroup ", path));
  cg.path_ = path;  // from here the destructor removes it
  if (r.has_memory_limit()) {
    std::string v = r.memory_limit() < 0 ? "max" : absl::StrCat(r.memory_limit());
    VESSEL_RETURN_IF_ERROR(WriteLimit(path, "memory.max", v, "memory"));
    // The limit is the whole budget: no swap on top (a guest has none; a host-mode test might).
    std::string swap = path + "/memory.swap.max";
    if (r.memory_limit() >= 0 && ::access(swap.c_str(), F_OK) == 0)
      VESSEL_RETURN_IF_ERROR(WriteSmallFile(swap, "0"));
  }
  if (r.has_cpu_quota() || r.has_cpu_period()) {
    uint64_t period = r.has_cpu_period() && r.cpu_period() > 0 ? r.cpu_period() : 100000;
    std::string quota =
        !r.has_cpu_quota() || r.cpu_quota() < 0 ? "max" : absl::StrCat(r.cpu_quota());
    VESSEL_RETURN_IF_ERROR(WriteLimit(path, "cpu.max", absl::StrCat(quota, " ", period), "cpu"));
  }
  if (r.has_cpu_shares() && r.cpu_shares() != 0) {
    // runc's conversion of cgroup v1 shares [2, 262144] to v2 weight [1, 10000].
    uint64_t shares = std::clamp<uint64_t>(r.cpu_shares(), 2, 262144);
    uint64_t weight = 1 + ((shares - 2) * 9999) / 262142;
    VESSEL_RETURN_IF_ERROR(WriteLimit(path, "cpu.weight", absl::StrCat(weight), "cpu"));
  }
  if (r.has_pids_limit()) {
    std::string v = r.pids_limit() <= 0 ? "max" : absl::StrCat(r.pids_limit());
    VESSEL_RETURN_IF_ERROR(WriteLimit(path, "pids.max", v, "pids"));
  }
  return cg;
}

ContainerCgroup& ContainerCgroup::operator=(ContainerCgroup&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

ContainerCgroup::~ContainerCgroup() {
  absl::Status s = Remove();
  if (!s.ok()) LogWarning("agent: ", s.message());
}

absl::StatusOr<ScopedFd> ContainerCgroup::OpenProcs() const {
  std::string path = path_ + "/cgroup.procs";
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  return fd;
}

std::vector<pid_t> ContainerCgroup::Pids() const {
  std::vector<pid_t> pids;
  if (path_.empty()) return pids;
  absl::StatusOr<std::string> text = ReadSmallFile(path_ + "/cgroup.procs");
  if (!text.ok()) return pids;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    int pid = 0;
    if (absl::SimpleAtoi(line, &pid) && pid > 0) pids.push_back(pid);
  }
  return pids;
}

v1::StatsContainerResponse ContainerCgroup::Stats() const {
  v1::StatsContainerResponse out;
  if (path_.empty()) return out;
  std::string cpu = ReadSmallFile(path_ + "/cpu.stat").value_or("");
  v1::CpuStats* c = out.mutable_cpu();
  c->set_usage_usec(ReadKey(cpu, "usage_usec"));
  c->set_user_usec(ReadKey(cpu, "user_usec"));
  c->set_system_usec(ReadKey(cpu, "system_usec"));
  c->set_nr_periods(ReadKey(cpu, "nr_periods"));
  c->set_nr_throttled(ReadKey(cpu, "nr_throttled"));
  c->set_throttled_usec(ReadKey(cpu, "throttled_usec"));
  v1::MemoryStats* m = out.mutable_memory();
  m->set_usage_bytes(ReadU64(path_ + "/memory.current"));
  m->set_limit_bytes(ReadU64(path_ + "/memory.max"));  // "max" reads as 0 = no limit
  m->set_swap_usage_bytes(ReadU64(path_ + "/memory.swap.current"));
  std::string stat = ReadSmallFile(path_ + "/memory.stat").value_or("");
  m->set_anon_bytes(ReadKey(stat, "anon"));
  m->set_file_bytes(ReadKey(stat, "file"));
  std::string events = ReadSmallFile(path_ + "/memory.events").value_or("");
  m->set_oom_events(ReadKey(events, "oom"));
  m->set_oom_kill_events(ReadKey(events, "oom_kill"));
  out.mutable_pids()->set_current(ReadU64(path_ + "/pids.current"));
  out.mutable_pids()->set_limit(ReadU64(path_ + "/pids.max"));
  std::string io = ReadSmallFile(path_ + "/io.stat").value_or("");
  for (absl::string_view line : absl::StrSplit(io, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty()) continue;
    std::pair<absl::string_view, absl::string_view> dev = absl::StrSplit(f[0], ':');
    v1::IoDeviceStats* d = out.add_io();
    uint32_t major = 0, minor = 0;
    (void)absl::SimpleAtoi(dev.first, &major);
    (void)absl::SimpleAtoi(dev.second, &minor);
    d->set_dev_major(major);
    d->set_dev_minor(minor);
    for (size_t i = 1; i < f.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(f[i], '=');
      uint64_t v = 0;
      if (!absl::SimpleAtoi(kv.second, &v)) continue;
      if (kv.first == "rbytes") d->set_read_bytes(v);
      if (kv.first == "wbytes") d->set_write_bytes(v);
      if (kv.first == "rios") d->set_read_ios(v);
      if (kv.first == "wios") d->set_write_ios(v);
    }
  }
  return out;
}

absl::Status ContainerCgroup::Remove() {
  if (path_.empty()) return absl::OkStatus();
  for (int attempt = 0;; ++attempt) {
    if (::rmdir(path_.c_str()) == 0 || errno == ENOENT) break;
    if (errno != EBUSY || attempt >= 200) return ErrnoStatus(absl::StrCat("rmdir cgroup ", path_));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  path_.clear();
  return absl::OkStatus();
}

}  // namespace vessel::agent
