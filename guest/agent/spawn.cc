#include "guest/agent/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the child writes on failure (or kReady).
struct ChildReport {
  int32_t kind;  // kReady or kError
  int32_t err;
  char what[496];
};
constexpr int32_t kReady = 1;
// How long a child may take to build its container (mounts, pivot_root) or to exec.
constexpr absl::Duration kReportTimeout = absl::Minutes(5);
constexpr int32_t kError = 2;

constexpr const char* kCapNames[] = {"CAP_CHOWN",
                                     "CAP_DAC_OVERRIDE",
                                     "CAP_DAC_READ_SEARCH",
                                     "CAP_FOWNER",
                                     "CAP_FSETID",
                                     "CAP_KILL",
                                     "CAP_SETGID",
                                     "CAP_SETUID",
                                     "CAP_SETPCAP",
                                     "CAP_LINUX_IMMUTABLE",
                                     "CAP_NET_BIND_SERVICE",
                                     "CAP_NET_BROADCAST",
                                     "CAP_NET_ADMIN",
                                     "CAP_NET_RAW",
                                     "CAP_IPC_LOCK",
                                     "CAP_IPC_OWNER",
                                     "CAP_SYS_MODULE",
                                     "CAP_SYS_RAWIO",
                                     "CAP_SYS_CHROOT",
                                     "CAP_SYS_PTRACE",
                                     "CAP_SYS_PACCT",
                                     "CAP_SYS_ADMIN",
                                     "CAP_SYS_BOOT",
                                     "CAP_SYS_NICE",
                                     "CAP_SYS_RESOURCE",
                                     "CAP_SYS_TIME",
                                     "CAP_SYS_TTY_CONFIG",
                                     "CAP_MKNOD",
                                     "CAP_LEASE",
                                     "CAP_AUDIT_WRITE",
                                     "CAP_AUDIT_CONTROL",
                                     "CAP_SETFCAP",
                                     "CAP_MAC_OVERRIDE",
                                     "CAP_MAC_ADMIN",
                                     "CAP_SYSLOG",
                                     "CAP_WAKE_ALARM",
                                     "CAP_BLOCK_SUSPEND",
                                     "CAP_AUDIT_READ",
                                     "CAP_PERFMON",
                                     "CAP_BPF",
                                     "CAP_CHECKPOINT_RESTORE"};
constexpr int kNumCaps = sizeof(kCapNames) / sizeof(kCapNames[0]);

// The OCI runtime default set (containerd's default spec).
constexpr const char* kDefaultCaps[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
    "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL",    "CAP_AUDIT_WRITE"};

absl::StatusOr<uint64_t> CapMask(const google::protobuf::RepeatedPtrField<std::string>& names,
                                 const char* set) {
  uint64_t mask = 0;
  for (const std::string& name : names) {
    int found = -1;
    for (int i = 0; i < kNumCaps; ++i) {
      if (name == kCapNames[i]) found = i;
    }
    if (found < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown capability '", absl::CEscape(name), "' in the ", set, " set"));
    }
    mask |= uint64_t{1} << found;
  }
  return mask;
}

absl::StatusOr<int> RlimitResource(absl::string_view name) {
  struct Entry {
    const char* name;
    int resource;
  };
  static constexpr Entry kLimits[] = {{"RLIMIT_AS", RLIMIT_AS},
                                      {"RLIMIT_CORE", RLIMIT_CORE},
                                      {"RLIMIT_CPU", RLIMIT_CPU},
                                      {"RLIMIT_DATA", RLIMIT_DATA},
                                      {"RLIMIT_FSIZE", RLIMIT_FSIZE},
                                      {"RLIMIT_LOCKS", RLIMIT_LOCKS},
                                      {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
                                      {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
                                      {"RLIMIT_NICE", RLIMIT_NICE},
                                      {"RLIMIT_NOFILE", RLIMIT_NOFILE},
                                      {"RLIMIT_NPROC", RLIMIT_NPROC},
                                      {"RLIMIT_RSS", RLIMIT_RSS},
                                      {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
                                      {"RLIMIT_RTTIME", RLIMIT_RTTIME},
                                      {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
                                      {"RLIMIT_STACK", RLIMIT_STACK}};
  for (const Entry& e : kLimits) {
    if (name == e.name) return e.resource;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown rlimit '", absl::CEscape(name), "'"));
}

// ---- child side: system calls only ----

[[noreturn]] void ChildFail(int report_fd, int err, const char* what) {
  ChildReport r;
  std::memset(&r, 0, sizeof(r));
  r.kind = kError;
  r.err = err;
  std::strncpy(r.what, what, sizeof(r.what) - 1);
  ssize_t unused = ::write(report_fd, &r, sizeof(r));
  (void)unused;
  ::_exit(127);
}

// Closes every fd from 3 up but `a`, `b` and `c` (-1: none), so that a child blocked before exec
// holds no other process's stdio sockets or the agent's connections.
void CloseAllExcept(int a, int b, int c) {
  int keeps[3] = {a, b, c};
  std::sort(keeps, keeps + 3);
  unsigned lo = 3;
  for (int keep : keeps) {
    if (keep < 3) continue;
    if (static_cast<unsigned>(keep) > lo) ::syscall(SYS_close_range, lo, keep - 1U, 0U);
    lo = keep + 1U;
  }
  ::syscall(SYS_close_range, lo, ~0U, 0U);
}

[[noreturn]] void ChildMain(SpawnRequest& req, int report_fd, int start_fd) {
  ProcessPlan& p = *req.process;
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }
  if (::setsid() < 0) ChildFail(report_fd, errno, "setsid");
  if (req.cgroup_procs_fd >= 0 && ::write(req.cgroup_procs_fd, "0", 1) != 1) {
    ChildFail(report_fd, errno, "join the container's cgroup");
  }
  for (const NamespaceJoin& j : req.namespaces->join) {
    if (::setns(j.fd.get(), j.nstype) != 0) ChildFail(report_fd, errno, j.what.c_str());
  }
  if (req.namespaces->new_cgroup_ns && ::unshare(CLONE_NEWCGROUP) != 0) {
    ChildFail(report_fd, errno, "unshare the cgroup namespace");
  }
  if (req.rootfs != nullptr) {
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      ChildFail(report_fd, errno, "make / private in the container's mount namespace");
    }
    const MountStep* failed = nullptr;
    int err = RunMountSteps(*req.rootfs, &failed);
    if (err != 0) ChildFail(report_fd, err, failed->what.c_str());
    if (!req.hostname.empty() && ::sethostname(req.hostname.data(), req.hostname.size()) != 0) {
      ChildFail(report_fd, errno, "sethostname");
    }
    if (::chdir(req.rootfs->rootfs.c_str()) != 0)
      ChildFail(report_fd, errno, "chdir to the rootfs");
    if (::syscall(SYS_pivot_root, ".", ".") != 0) ChildFail(report_fd, errno, "pivot_root");
    if (::umount2(".", MNT_DETACH) != 0) ChildFail(report_fd, errno, "detach the old root");
    if (::chdir("/") != 0) ChildFail(report_fd, errno, "chdir /");
    if (req.rootfs->readonly &&
        ::mount(nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
      ChildFail(report_fd, errno, "remount the rootfs read-only");
    }
  }
  ChildStdio& io = *req.stdio;
  int pty_master = -1;
  if (io.pty_in_child) {
    // The pty of the container's own devpts (mounted by the steps above), so that its name is
    // valid in here; the agent takes the master with pidfd_getfd after "ready" (CLOEXEC: gone at
    // execve).
    pty_master = ::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (pty_master < 0) ChildFail(report_fd, errno, "open /dev/pts/ptmx in the container");
    int unlock = 0;
    unsigned int n = 0;
    if (::ioctl(pty_master, TIOCSPTLCK, &unlock) != 0 || ::ioctl(pty_master, TIOCGPTN, &n) != 0) {
      ChildFail(report_fd, errno, "unlock the container's pty");
    }
    char name[32] = "/dev/pts/";
    char digits[12];
    int len = 0;
    do {
      digits[len++] = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n > 0 && len < 11);
    size_t at = 9;
    while (len > 0) name[at++] = digits[--len];
    name[at] = '\0';
    int slave = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) ChildFail(report_fd, errno, "open the container's pty slave");
    // The process's user owns its terminal (as runc arranges).
    if (::fchown(slave, p.uid, static_cast<gid_t>(-1)) != 0) ChildFail(report_fd, errno, "chown the pty");
    if (::ioctl(slave, TIOCSCTTY, 0) != 0) ChildFail(report_fd, errno, "set the controlling terminal");
    for (int fd = 0; fd < 3; ++fd) {
      if (::dup2(slave, fd) < 0) ChildFail(report_fd, errno, "dup2 the pty");
    }
    ::close(slave);
  } else if (io.pty_slave.valid()) {
    if (::ioctl(io.pty_slave.get(), TIOCSCTTY, 0) != 0)
      ChildFail(report_fd, errno, "set the controlling terminal");
    for (int fd = 0; fd < 3; ++fd) {
      if (::dup2(io.pty_slave.get(), fd) < 0) ChildFail(report_fd, errno, "dup2 the pty");
    }
  } else {
    if (::dup2(io.in.get(), 0) < 0 || ::dup2(io.out.get(), 1) < 0 || ::dup2(io.err.get(), 2) < 0) {
      ChildFail(report_fd, errno, "dup2 stdio");
    }
  }
  // From here the child holds its stdio and the two pipes (CLOEXEC) only.
  CloseAllExcept(report_fd, start_fd, pty_master);
  if (::chdir(p.cwd.c_str()) != 0) ChildFail(report_fd, errno, p.cwd_error.c_str());
  for (const auto& [resource, limit] : p.rlimits) {
    if (::setrlimit(resource, &limit) != 0) ChildFail(report_fd, errno, p.rlimit_error.c_str());
  }
  if (req.seccomp != nullptr && !p.no_new_privileges) {
    // Without no_new_privileges seccomp(2) needs CAP_SYS_ADMIN: before the capabilities go.
    int err = InstallSeccomp(*req.seccomp);
    if (err != 0)
      ChildFail(report_fd, err, "install the seccomp filter (before dropping privileges)");
  }
  for (int cap = 0; cap <= 63; ++cap) {
    if ((p.bounding & (uint64_t{1} << cap)) == 0 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 &&
        errno != EINVAL) {
      ChildFail(report_fd, errno, "drop a capability from the bounding set");
    }
  }
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) ChildFail(report_fd, errno, "PR_SET_KEEPCAPS");
  // Raw system calls: glibc's setgroups/setres[ug]id broadcast the change to every thread it
  // knows of (SIGSETXID) and wait for them; in this clone of a multithreaded agent those threads
  // do not exist and the call would hang.
  if (::syscall(SYS_setgroups, p.additional_gids.size(), p.additional_gids.data()) != 0) {
    ChildFail(report_fd, errno, "setgroups (additional gids)");
  }
  if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) ChildFail(report_fd, errno, "setresgid");
  if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) ChildFail(report_fd, errno, "setresuid");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  for (int i = 0; i < 2; ++i) {
    data[i].effective = static_cast<uint32_t>(p.effective >> (32 * i));
    data[i].permitted = static_cast<uint32_t>(p.permitted >> (32 * i));
    data[i].inheritable = static_cast<uint32_t>(p.inheritable >> (32 * i));
  }
  if (::syscall(SYS_capset, &header, data) != 0) ChildFail(report_fd, errno, "capset");
  for (int cap = 0; cap <= 63; ++cap) {
    if ((p.ambient & (uint64_t{1} << cap)) != 0 &&
        ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) {
      ChildFail(report_fd, errno, "raise an ambient capability");
    }
  }
  if (p.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    ChildFail(report_fd, errno, "PR_SET_NO_NEW_PRIVS");
  }
  const char* exe = nullptr;
  int exe_err = ENOENT;
  for (const std::string& candidate : p.exe_candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) {
      exe = candidate.c_str();
      break;
    }
    if (errno != ENOENT && errno != ENOTDIR) exe_err = errno;
  }
  if (exe == nullptr) ChildFail(report_fd, exe_err, p.exe_not_found.c_str());
  if (start_fd >= 0) {
    ChildReport ready;
    std::memset(&ready, 0, sizeof(ready));
    ready.kind = kReady;
    ready.err = pty_master;  // the master's fd number in here, or -1
    if (::write(report_fd, &ready, sizeof(ready)) != sizeof(ready)) ::_exit(127);
    char go;
    ssize_t n;
    do {
      n = ::read(start_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(127);  // the agent gave up on this container
    ::close(start_fd);
  }
  if (req.seccomp != nullptr && p.no_new_privileges) {
    int err = InstallSeccomp(*req.seccomp);
    if (err != 0) ChildFail(report_fd, err, "install the seccomp filter");
  }
  ::execve(exe, p.argv_c.data(), p.env_c.data());
  ChildFail(report_fd, errno, p.exe_not_found.c_str());
}

// Reads until `size` bytes, EOF or `deadline`; false with errno (ETIMEDOUT at the deadline).
// Monotonic: a SetGuestDateTime jump of the real-time clock does not end the wait.
bool ReadFull(int fd, void* buf, size_t size, size_t* got,
              std::chrono::steady_clock::time_point deadline) {
  *got = 0;
  while (*got < size) {
    int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     deadline - std::chrono::steady_clock::now())
                     .count();
    if (ms <= 0) {
      errno = ETIMEDOUT;
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    ssize_t n = ::read(fd, static_cast<char*>(buf) + *got, size - *got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<ProcessPlan> PlanProcess(const v1::Process& process) {
  ProcessPlan p;
  if (process.args_size() == 0 || process.args(0).empty()) {
    return absl::InvalidArgumentError("process args are empty");
  }
  std::string path = kDefaultPath;
  for (const std::string& s : process.args()) {
    if (s.find('\0') != std::string::npos)
      return absl::InvalidArgumentError("a process argument contains a NUL byte");
    p.argv.push_back(s);
  }
  for (const std::string& s : process.env()) {
    if (s.find('\0') != std::string::npos || s.find('=') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("env entry '", absl::CEscape(s), "' is not KEY=VALUE"));
    }
    if (absl::StartsWith(s, "PATH=")) path = s.substr(5);
    p.env.push_back(s);
  }
  for (std::string& s : p.argv) p.argv_c.push_back(s.data());
  p.argv_c.push_back(nullptr);
  for (std::string& s : p.env) p.env_c.push_back(s.data());
  p.env_c.push_back(nullptr);
  const std::string& arg0 = process.args(0);
  if (arg0.find('/') != std::string::npos) {
    p.exe_candidates.push_back(arg0);
    p.exe_not_found =
        absl::StrCat("executable '", absl::CEscape(arg0), "' not found or not executable");
  } else {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      p.exe_candidates.push_back(absl::StrCat(dir, "/", arg0));
    }
    p.exe_not_found =
        absl::StrCat("executable '", absl::CEscape(arg0), "' not found in $PATH (", path, ")");
  }
  p.exe_not_found.resize(std::min<size_t>(p.exe_not_found.size(), 400));
  p.cwd = process.cwd().empty() ? "/" : process.cwd();
  if (p.cwd[0] != '/' || p.cwd.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("cwd '", absl::CEscape(p.cwd), "' is not an absolute path"));
  }
  p.cwd_error = absl::StrCat("cannot chdir to cwd '", absl::CEscape(p.cwd), "'").substr(0, 400);
  p.uid = process.user().uid();
  p.gid = process.user().gid();
  if (process.user().additional_gids_size() > 64)
    return absl::InvalidArgumentError("more than 64 additional gids");
  for (uint32_t g : process.user().additional_gids()) p.additional_gids.push_back(g);
  for (const v1::Rlimit& r : process.rlimits()) {
    VESSEL_ASSIGN_OR_RETURN(int resource, RlimitResource(r.type()));
    if (r.soft() > r.hard()) {
      return absl::InvalidArgumentError(absl::StrCat("rlimit ", r.type(), " has soft > hard"));
    }
    rlimit limit{static_cast<rlim_t>(r.soft()), static_cast<rlim_t>(r.hard())};
    p.rlimits.emplace_back(resource, limit);
  }
  p.rlimit_error = "setrlimit";
  if (process.has_capabilities()) {
    const v1::Capabilities& c = process.capabilities();
    VESSEL_ASSIGN_OR_RETURN(p.bounding, CapMask(c.bounding(), "bounding"));
    VESSEL_ASSIGN_OR_RETURN(p.effective, CapMask(c.effective(), "effective"));
    VESSEL_ASSIGN_OR_RETURN(p.permitted, CapMask(c.permitted(), "permitted"));
    VESSEL_ASSIGN_OR_RETURN(p.inheritable, CapMask(c.inheritable(), "inheritable"));
    VESSEL_ASSIGN_OR_RETURN(p.ambient, CapMask(c.ambient(), "ambient"));
  } else {
    google::protobuf::RepeatedPtrField<std::string> defaults;
    for (const char* name : kDefaultCaps) defaults.Add(name);
    VESSEL_ASSIGN_OR_RETURN(p.bounding, CapMask(defaults, "default"));
    p.effective = p.permitted = p.bounding;
  }
  p.no_new_privileges = process.no_new_privileges();
  p.terminal = process.terminal();
  return p;
}

absl::StatusOr<Spawned> Spawn(SpawnRequest& req) {
  int report[2], start[2] = {-1, -1};
  if (::pipe2(report, O_CLOEXEC) != 0) return ErrnoStatus("pipe2 (error pipe)");
  ScopedFd report_read(report[0]), report_write(report[1]);
  if (req.wait_for_start && ::pipe2(start, O_CLOEXEC) != 0)
    return ErrnoStatus("pipe2 (start pipe)");
  ScopedFd start_read(start[0]), start_write(start[1]);

  int flags = req.namespaces->clone_flags | SIGCHLD;
  auto do_clone = [&]() -> std::pair<pid_t, int> {
    long pid = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr);
    if (pid == 0) ChildMain(req, report_write.get(), start_read.get());
    return {static_cast<pid_t>(pid), errno};
  };
  std::pair<pid_t, int> result;
  if (req.namespaces->join_pid.valid()) {
    // setns(CLONE_NEWPID) changes only where this thread's children go: use a throwaway thread.
    absl::Status setns_status;
    std::thread helper([&] {
      if (::setns(req.namespaces->join_pid.get(), CLONE_NEWPID) != 0) {
        setns_status = ErrnoStatus("setns into the container's pid namespace");
        return;
      }
      result = do_clone();
    });
    helper.join();
    VESSEL_RETURN_IF_ERROR(setns_status);
  } else {
    result = do_clone();
  }
  if (result.first < 0) return ErrnoStatus("clone", result.second);
  Spawned out;
  out.pid = result.first;
  out.report = std::move(report_read);
  out.start = std::move(start_write);
  return out;
}

absl::Status ReadChildReport(int fd, bool expect_ready, int* pty_master_fd) {
  ChildReport r;
  size_t got = 0;
  if (!ReadFull(fd, &r, sizeof(r), &got,
                std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(kReportTimeout))) {
    if (errno == ETIMEDOUT) {
      return absl::DeadlineExceededError(
          absl::StrCat("the child did not report within ", absl::FormatDuration(kReportTimeout)));
    }
    return ErrnoStatus("read the child's report");
  }
  if (got == 0) {
    if (expect_ready) return absl::InternalError("the container's init exited before it was ready");
    return absl::OkStatus();  // CLOEXEC closed the pipe: execve succeeded
  }
  if (got != sizeof(r)) return absl::InternalError("short report from the child");
  if (r.kind == kReady) {
    if (pty_master_fd != nullptr) *pty_master_fd = r.err;
    if (expect_ready) return absl::OkStatus();
    return absl::InternalError("unexpected ready report from the child");
  }
  r.what[sizeof(r.what) - 1] = '\0';
  std::string msg = absl::StrCat(r.what, ": ", std::strerror(r.err), " (errno ", r.err, ")");
  switch (r.err) {
    case ENOENT:
    case ENOTDIR:
    case EACCES:
    case EINVAL:
    case ENOEXEC:
    case ELOOP:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace vessel::agent
