#include "guest/agent/seccomp.h"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {
namespace {

constexpr uint32_t kMaxErrno = 4095;

// libseccomp's context, released on every path.
class FilterContext {
 public:
  explicit FilterContext(scmp_filter_ctx ctx) : ctx_(ctx) {}
  ~FilterContext() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

absl::Status LibseccompError(absl::string_view what, int rc) {
  return ErrnoStatus(absl::StrCat("libseccomp: ", what), -rc);
}

// The SCMP_ACT_* value of an OCI action name; `field` names it in errors.
absl::StatusOr<uint32_t> ParseAction(absl::string_view field, const std::string& name,
                                     bool has_errno, uint32_t errno_ret) {
  if (has_errno && errno_ret > kMaxErrno) {
    return absl::InvalidArgumentError(
        absl::StrCat("seccomp ", field, ": errno_ret ", errno_ret, " is over ", kMaxErrno));
  }
  const uint32_t err = has_errno ? errno_ret : EPERM;
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(err);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(err);
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_NOTIFY") {
    return absl::InvalidArgumentError(absl::StrCat(
        "seccomp ", field, ": SCMP_ACT_NOTIFY needs a listener, which vessel does not support"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "seccomp ", field, ": unknown action '", absl::CEscape(name),
      "' (expected SCMP_ACT_ALLOW, _ERRNO, _KILL, _KILL_PROCESS, _KILL_THREAD, _TRAP, _TRACE or "
      "_LOG)"));
}

absl::StatusOr<scmp_compare> ParseOp(const std::string& op) {
  static constexpr std::pair<const char*, scmp_compare> kOps[] = {
      {"SCMP_CMP_NE", SCMP_CMP_NE},
      {"SCMP_CMP_LT", SCMP_CMP_LT},
      {"SCMP_CMP_LE", SCMP_CMP_LE},
      {"SCMP_CMP_EQ", SCMP_CMP_EQ},
      {"SCMP_CMP_GE", SCMP_CMP_GE},
      {"SCMP_CMP_GT", SCMP_CMP_GT},
      {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
  for (const auto& [name, value] : kOps) {
    if (op == name) return value;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("seccomp: unknown argument operator '", absl::CEscape(op),
                   "' (expected SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ)"));
}

absl::StatusOr<uint32_t> ParseArch(const std::string& name) {
  // OCI: "SCMP_ARCH_X86_64"; libseccomp: "x86_64".
  if (absl::StartsWith(name, "SCMP_ARCH_")) {
    std::string lower = absl::AsciiStrToLower(name.substr(10));
    uint32_t token = seccomp_arch_resolve_name(lower.c_str());
    if (token != 0) return token;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("seccomp: unknown architecture '", absl::CEscape(name),
                   "' (expected an OCI name such as SCMP_ARCH_X86_64)"));
}

absl::StatusOr<unsigned int> ParseFlag(const std::string& name) {
  if (name == "SECCOMP_FILTER_FLAG_TSYNC") return 0u;  // the child has one thread
  if (name == "SECCOMP_FILTER_FLAG_LOG") return static_cast<unsigned int>(SECCOMP_FILTER_FLAG_LOG);
  if (name == "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
    return static_cast<unsigned int>(SECCOMP_FILTER_FLAG_SPEC_ALLOW);
  return absl::InvalidArgumentError(
      absl::StrCat("seccomp: unknown flag '", absl::CEscape(name),
                   "' (expected SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_LOG or "
                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW)"));
}

// Reads the program libseccomp wrote into `fd`.
absl::StatusOr<std::vector<sock_filter>> ReadProgram(int fd) {
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < 0) return ErrnoStatus("lseek the exported seccomp filter");
  if (size == 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError(
        absl::StrCat("libseccomp exported a filter of ", size, " bytes: not whole instructions"));
  }
  if (static_cast<size_t>(size) / sizeof(sock_filter) > BPF_MAXINSNS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seccomp: the filter compiles to ", size / sizeof(sock_filter),
        " instructions, over the kernel's limit of ", BPF_MAXINSNS, ": use fewer rules"));
  }
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  size_t done = 0;
  while (done < static_cast<size_t>(size)) {
    ssize_t n = ::pread(fd, reinterpret_cast<char*>(program.data()) + done,
                        static_cast<size_t>(size) - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("read the exported seccomp filter", n == 0 ? EIO : errno);
    done += static_cast<size_t>(n);
  }
  return program;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SeccompProgram>> CompileSeccomp(const v1::LinuxSeccomp& spec) {
  if (spec.default_action().empty()) {
    return absl::InvalidArgumentError("seccomp: default_action is empty (e.g. SCMP_ACT_ERRNO)");
  }
  VESSEL_ASSIGN_OR_RETURN(uint32_t default_action,
                          ParseAction("default_action", spec.default_action(),
                                      spec.has_default_errno_ret(), spec.default_errno_ret()));
  auto program = std::make_shared<SeccompProgram>();
  for (const std::string& flag : spec.flags()) {
    VESSEL_ASSIGN_OR_RETURN(unsigned int bits, ParseFlag(flag));
    program->flags |= bits;
  }
  FilterContext ctx(seccomp_init(default_action));
  if (ctx.get() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("seccomp: libseccomp refused default action ",
                                                   spec.default_action(),
                                                   " (not supported by this kernel?)"));
  }
  // The filter is exported, never loaded by libseccomp: no attributes needed for loading.
  for (const std::string& arch : spec.architectures()) {
    VESSEL_ASSIGN_OR_RETURN(uint32_t token, ParseArch(arch));
    int rc = seccomp_arch_add(ctx.get(), token);
    if (rc != 0 && rc != -EEXIST) return LibseccompError(absl::StrCat("add arch ", arch), rc);
  }
  std::vector<std::string> unknown;
  for (int i = 0; i < spec.syscalls_size(); ++i) {
    const v1::LinuxSyscall& rule = spec.syscalls(i);
    std::string field = absl::StrCat("syscalls[", i, "]");
    VESSEL_ASSIGN_OR_RETURN(
        uint32_t action, ParseAction(field, rule.action(), rule.has_errno_ret(), rule.errno_ret()));
    if (rule.args_size() > 6) {
      return absl::InvalidArgumentError(
          absl::StrCat("seccomp ", field, ": ", rule.args_size(), " args (at most 6)"));
    }
    std::vector<scmp_arg_cmp> args;
    bool repeated_index = false;
    uint32_t seen = 0;
    for (const v1::LinuxSeccompArg& arg : rule.args()) {
      if (arg.index() > 5) {
        return absl::InvalidArgumentError(
            absl::StrCat("seccomp ", field, ": argument index ", arg.index(), " is over 5"));
      }
      VESSEL_ASSIGN_OR_RETURN(scmp_compare op, ParseOp(arg.op()));
      if ((seen & (1u << arg.index())) != 0) repeated_index = true;
      seen |= 1u << arg.index();
      args.push_back(scmp_arg_cmp{arg.index(), op, arg.value(), arg.value_two()});
    }
    // Same as the default: redundant (libseccomp refuses it), runc skips it too.
    if (action == default_action) continue;
    for (const std::string& name : rule.names()) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) {
        unknown.push_back(absl::CEscape(name));
        continue;
      }
      auto add = [&](unsigned int count, const scmp_arg_cmp* cmp) -> absl::Status {
        int rc = seccomp_rule_add_array(ctx.get(), action, nr, count, cmp);
        if (rc != 0) {
          return LibseccompError(absl::StrCat("add the rule for '", name, "' (", field, ", action ",
                                              rule.action(), ")"),
                                 rc);
        }
        return absl::OkStatus();
      };
      if (!repeated_index) {
        VESSEL_RETURN_IF_ERROR(add(static_cast<unsigned int>(args.size()), args.data()));
      } else {
        // Several conditions on one argument cannot all hold: any of them (runc does the same).
        for (const scmp_arg_cmp& cmp : args) VESSEL_RETURN_IF_ERROR(add(1, &cmp));
      }
    }
  }
  if (!unknown.empty()) {
    LogWarning("agent: seccomp: skipped system calls unknown to libseccomp: ",
               absl::StrJoin(unknown, ", "));
  }
  ScopedFd memfd(static_cast<int>(::syscall(SYS_memfd_create, "vessel-seccomp", MFD_CLOEXEC)));
  if (!memfd.valid()) return ErrnoStatus("memfd_create for the seccomp filter");
  int rc = seccomp_export_bpf(ctx.get(), memfd.get());
  if (rc != 0) return LibseccompError("export the filter as BPF", rc);
  VESSEL_ASSIGN_OR_RETURN(program->instructions, ReadProgram(memfd.get()));
  return std::shared_ptr<const SeccompProgram>(std::move(program));
}

int InstallSeccomp(const SeccompProgram& program) {
  sock_fprog prog;
  prog.len = static_cast<unsigned short>(program.instructions.size());
  prog.filter = const_cast<sock_filter*>(program.instructions.data());
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, program.flags, &prog) == 0) return 0;
  int err = errno;
  if (err == ENOSYS && program.flags == 0 &&
      ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0) {
    return 0;
  }
  return err;
}

}  // namespace vessel::agent
