#include "vmm/seccomp/seccomp.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "vmm/base/log.h"

namespace vessel::seccomp {
namespace {

// How a syscall is allowed.
enum class Check {
  kAny,       // any arguments
  kNoExec,    // mmap/mprotect: arg 2 (prot) without PROT_EXEC
  kIoctl,     // ioctl: arg 1 (request, low 32 bits) one of the kind's requests
  kOwnPid,    // tgkill: arg 0 (tgid) is this process
  kUnixOnly,  // socket/socketpair: arg 0 (domain) AF_UNIX
  kSetName,   // prctl: PR_SET_NAME only (pthread_setname_np on the thread itself)
};

struct Allow {
  const char* name;
  Check check = Check::kAny;
};

// Every VMM thread: memory allocation (malloc arenas, thread stacks), locks and condition
// variables, clocks (the vDSO falls back to the syscall on some clock sources), the log line on
// stderr, signals (the vCPU kick, abort), and thread exit.
const Allow kCommon[] = {
    {"futex"},          {"mmap", Check::kNoExec}, {"mprotect", Check::kNoExec},
    {"munmap"},         {"mremap"},               {"madvise"},
    {"brk"},            {"write"},                {"close"},
    {"clock_gettime"},  {"clock_nanosleep"},      {"nanosleep"},
    {"gettimeofday"},   {"sched_yield"},          {"getpid"},
    {"gettid"},         {"rt_sigprocmask"},       {"rt_sigreturn"},
    {"restart_syscall"}, {"tgkill", Check::kOwnPid}, {"exit"},
    {"exit_group"},     {"getrandom"},            {"prctl", Check::kSetName},
};

const Allow kVcpu[] = {
    {"ioctl", Check::kIoctl},  // KVM_RUN, register access for the exit handlers and compat profile
};

const Allow kEventLoop[] = {
    {"epoll_wait"}, {"epoll_pwait"}, {"epoll_ctl"},
    {"read"},                  // the ioeventfd counters
    {"ioctl", Check::kIoctl},  // asio makes each eventfd non-blocking with FIONBIO
};

const Allow kBlock[] = {
    {"pread64"}, {"pwrite64"}, {"fdatasync"},
    {"fallocate"},  // DISCARD (punch hole) and WRITE_ZEROES
};

const Allow kVsock[] = {
    {"epoll_wait"}, {"epoll_pwait"}, {"epoll_ctl"}, {"read"},
    {"recvfrom"},   {"sendto"},      {"shutdown"},  {"getsockopt"}, {"fcntl"},
    {"accept4"},                  // host clients on the hybrid listener
    {"socket", Check::kUnixOnly},  // guest-initiated connections to <uds>_<port>
    {"connect"},
    {"timerfd_settime"},          // CONNECT-line and RST deadlines
};

const Allow kNet[] = {
    {"epoll_wait"}, {"epoll_pwait"}, {"epoll_ctl"}, {"read"},  // the tap and the wake eventfd
};

// The FUSE passthrough (devices/fs/fuse_server.cc): *at() calls on O_PATH fds, reopening through
// /proc/self/fd, data through preadv/pwrite.
const Allow kFs[] = {
    {"openat"},     {"openat2"},    {"newfstatat"}, {"fstatfs"},   {"getdents64"},
    {"fchownat"},   {"fchmodat"},   {"fchmod"},     {"utimensat"}, {"readlinkat"},
    {"mkdirat"},    {"mknodat"},    {"symlinkat"},  {"linkat"},    {"unlinkat"},
    {"renameat"},  // glibc's renameat2() with flags 0 (a plain RENAME)
    {"renameat2"},  {"faccessat"},  {"faccessat2"}, {"lseek"},     {"preadv"},
    {"pwrite64"},   {"ftruncate"},  {"fallocate"},  {"fsync"},     {"fdatasync"},
    {"dup"},
};

#if defined(__x86_64__)
// struct kvm_msrs ends in a flexible array that the uapi header declares with a different size in
// C++ (vmm/kvm/kvm_flex_ioctls.c is C for that reason): the kernel's number uses its 8-byte header.
constexpr unsigned long kKvmGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
#endif

// ioctl requests by kind (compared on the low 32 bits: glibc passes an unsigned long).
std::vector<unsigned long> IoctlRequests(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu:
      return {
        KVM_RUN,
#if defined(__x86_64__)
        // The kvm_pvm compat profile's exit handlers and DescribeVcpu (crash reports).
        KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_VCPU_EVENTS,
        KVM_SET_VCPU_EVENTS, KVM_TRANSLATE, kKvmGetMsrs,
#endif
#if defined(__aarch64__)
        KVM_GET_ONE_REG, KVM_SET_ONE_REG,
#endif
        // Legacy device interrupts (the UART) on the VM fd.
        KVM_IRQ_LINE,
        // virtio-net's Activate (the driver's DRIVER_OK write, an MMIO exit) sets the tap's
        // offloads to the negotiated features.
        TUNSETOFFLOAD,
      };
    case ThreadKind::kEventLoop:
      return {FIONBIO};
    default:
      return {};
  }
}

absl::Span<const Allow> KindAllows(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu: return kVcpu;
    case ThreadKind::kEventLoop: return kEventLoop;
    case ThreadKind::kBlock: return kBlock;
    case ThreadKind::kVsock: return kVsock;
    case ThreadKind::kNet: return kNet;
    case ThreadKind::kFs: return kFs;
  }
  return {};
}

bool LogOnly() {
  const char* v = std::getenv("VESSEL_SECCOMP_LOG_ONLY");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

absl::Status SeccompError(absl::string_view what, int rc) {
  return absl::InternalError(absl::StrCat("seccomp ", what, ": ", std::strerror(-rc),
                                          " (turn the filters off with MachineConfig::seccomp = false "
                                          "or vessel-vmm --seccomp=false)"));
}

absl::Status AddRule(scmp_filter_ctx ctx, ThreadKind kind, const Allow& allow) {
  const int nr = seccomp_syscall_resolve_name(allow.name);
  if (nr == __NR_SCMP_ERROR) return absl::OkStatus();  // not a syscall on this architecture
  int rc = 0;
  switch (allow.check) {
    case Check::kAny:
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
      break;
    case Check::kNoExec:
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
      break;
    case Check::kOwnPid:
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                            SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(::getpid())));
      break;
    case Check::kUnixOnly:
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
      break;
    case Check::kSetName:
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
      break;
    case Check::kIoctl:
      for (unsigned long request : IoctlRequests(kind)) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request & 0xffffffffu));
        if (rc != 0) break;
      }
      break;
  }
  if (rc != 0) return SeccompError(absl::StrCat("rule for ", allow.name), rc);
  return absl::OkStatus();
}

absl::StatusOr<Ctx> BuildFilter(ThreadKind kind) {
  Ctx ctx(seccomp_init(LogOnly() ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS));
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  // Log what the default action kills (SECCOMP_FILTER_FLAG_LOG).
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_LOG, 1); rc != 0) {
    return SeccompError("SCMP_FLTATR_CTL_LOG", rc);
  }
  for (const Allow& a : kCommon) {
    if (absl::Status s = AddRule(ctx.get(), kind, a); !s.ok()) return s;
  }
  for (const Allow& a : KindAllows(kind)) {
    if (absl::Status s = AddRule(ctx.get(), kind, a); !s.ok()) return s;
  }
  return ctx;
}

thread_local bool filters_for_new_threads = false;

}  // namespace

absl::string_view ThreadKindName(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kVcpu: return "vcpu";
    case ThreadKind::kEventLoop: return "event-loop";
    case ThreadKind::kBlock: return "block";
    case ThreadKind::kVsock: return "vsock";
    case ThreadKind::kNet: return "net";
    case ThreadKind::kFs: return "fs";
  }
  return "unknown";
}

std::vector<std::string> AllowedSyscalls(ThreadKind kind) {
  std::vector<std::string> names;
  for (const Allow& a : kCommon) names.emplace_back(a.name);
  for (const Allow& a : KindAllows(kind)) names.emplace_back(a.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

absl::Status CheckSupported() {
  // API level 3: the KILL_PROCESS action and the log flag (kernel >= 4.14).
  if (seccomp_api_get() < 3) {
    return absl::FailedPreconditionError(
        "seccomp: this kernel lacks SECCOMP_RET_KILL_PROCESS or SECCOMP_FILTER_FLAG_LOG (Linux >= "
        "4.14 needed); turn the filters off with MachineConfig::seccomp = false or vessel-vmm "
        "--seccomp=false");
  }
  // Build (not load) every filter once so that a bad rule is an error here, not in a thread.
  for (ThreadKind kind : kAllThreadKinds) {
    absl::StatusOr<Ctx> ctx = BuildFilter(kind);
    if (!ctx.ok()) return ctx.status();
  }
  return absl::OkStatus();
}

absl::Status InstallFilter(ThreadKind kind) {
  absl::StatusOr<Ctx> ctx = BuildFilter(kind);
  if (!ctx.ok()) return ctx.status();
  // seccomp_load sets no_new_privs (SCMP_FLTATR_CTL_NNP defaults on) and loads without TSYNC:
  // only the calling thread gets the filter.
  if (int rc = seccomp_load(ctx->get()); rc != 0) return SeccompError("load", rc);
  return absl::OkStatus();
}

ScopedThreadFilters::ScopedThreadFilters(bool enabled) : previous_(filters_for_new_threads) {
  filters_for_new_threads = enabled;
}

ScopedThreadFilters::~ScopedThreadFilters() { filters_for_new_threads = previous_; }

ThreadFilter ForNewThread(ThreadKind kind) {
  return filters_for_new_threads ? ThreadFilter(kind) : ThreadFilter();
}

void ThreadFilter::Install() const {
  if (!kind_.has_value()) return;
  if (absl::Status s = InstallFilter(*kind_); !s.ok()) {
    LogError("seccomp filter for a ", ThreadKindName(*kind_), " thread: ", s.message());
    std::abort();
  }
}

int CurrentThreadMode() {
  std::ifstream status("/proc/thread-self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "Seccomp:")) {
      int mode = -1;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &mode)) return mode;
      return -1;
    }
  }
  return -1;
}

}  // namespace vessel::seccomp
