// vessel-vmm: boots a Linux guest in this process and connects its serial console to the terminal
// (or a file). Exit status: 0 guest powered off, 1 setup error, 2 guest crashed, 3 guest rebooted
// (vessel-vmm does not restart VMs), 4 stopped by a signal.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/machine.h"

#ifndef VESSEL_DEFAULT_GUEST_DIR
#define VESSEL_DEFAULT_GUEST_DIR "build/guest"
#endif

ABSL_FLAG(std::string, kernel, "", "Guest kernel: ELF vmlinux or bzImage (default: the project's guest)");
ABSL_FLAG(std::string, initrd, "", "Initramfs (default: the project's test initramfs when --kernel is unset)");
ABSL_FLAG(std::string, append, "", "Appended to the kernel command line the VMM builds");
ABSL_FLAG(uint32_t, vcpus, 1, "Number of vCPUs");
ABSL_FLAG(uint64_t, mem_mib, 128, "Guest memory in MiB");
ABSL_FLAG(std::string, console, "stdio", "Guest serial console: stdio, or file:PATH");
ABSL_FLAG(bool, boot_timing, false, "Print the boot timeline and VM exit counts to stderr at exit");
ABSL_FLAG(bool, hugepages, false, "Back guest memory with hugetlbfs pages");
ABSL_FLAG(bool, seccomp, true,
          "Per-thread seccomp filters on the vCPU, event-loop and device threads (--seccomp=false "
          "or --noseccomp for debugging only; see docs/security.md)");
ABSL_FLAG(std::string, vsock, "",
          "CID,UDS_PATH: a virtio-vsock device for guest CID (>= 3); the host side listens on "
          "UDS_PATH (\"CONNECT <port>\\n\" reaches a guest port) and the guest's connections to "
          "host port P go to UDS_PATH_P (Firecracker hybrid vsock)");

namespace vessel {
namespace {

constexpr int kExitPoweroff = 0;
constexpr int kExitSetupError = 1;
constexpr int kExitCrash = 2;
constexpr int kExitReboot = 3;
constexpr int kExitHostStop = 4;

void WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Ms(std::chrono::nanoseconds ns) { return absl::StrFormat("%.3f", ns.count() / 1e6); }

void PrintTimeline(const Machine& m, const MachineExit& exit) {
  BootTimeline t = m.timeline();
  std::string out = absl::StrCat("boot-timing: platform=", m.platform().Name(), "\n",
                                 "boot-timing: setup_ms=", Ms(t.setup), "\n");
  if (t.first_run) absl::StrAppend(&out, "boot-timing: first_kvm_run_ms=", Ms(*t.first_run), "\n");
  if (t.first_console) absl::StrAppend(&out, "boot-timing: first_console_byte_ms=", Ms(*t.first_console), "\n");
  for (const DebugPort::Mark& mark : t.marks) {
    absl::StrAppendFormat(&out, "boot-timing: code_0x%02x_%s_ms=%s\n", mark.code,
                          DebugPort::RangeName(mark.code), Ms(mark.since_start));
  }
  if (t.ended) absl::StrAppend(&out, "boot-timing: end_ms=", Ms(*t.ended), "\n");
  absl::StrAppend(&out, "boot-timing: exit_reason=", ExitReasonName(exit.reason), "\n");
  for (const auto& [name, count] : m.exit_counts()) {
    absl::StrAppend(&out, "boot-timing: exits_", name, "=", count, "\n");
  }
  WriteAll(STDERR_FILENO, out);
}

// Forwards stdin to the guest console and turns SIGINT/SIGTERM/SIGHUP into a host stop, until
// `stop_fd` is signalled.
void HostEventLoop(Machine* machine, bool forward_stdin, int signal_fd, int stop_fd) {
  bool stdin_open = forward_stdin;
  for (;;) {
    pollfd fds[3] = {{stop_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    int n = ::poll(fds, stdin_open ? 3 : 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || fds[0].revents) return;
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      if (::read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
        LogInfo("signal ", info.ssi_signo, ": stopping the VM");
        machine->Stop();
      }
    }
    if (stdin_open && fds[2].revents) {
      char buf[4096];
      ssize_t r = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (r > 0) {
        machine->SendConsoleInput(absl::string_view(buf, static_cast<size_t>(r)));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        stdin_open = false;  // EOF: the guest just gets no more input
      }
    }
  }
}

// absl flags are identifiers; accept the documented dashed spellings (--mem-mib, --boot-timing).
std::vector<std::string> DashFlagsToUnderscores(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    size_t end = a.find('=');
    for (size_t k = 2; k < std::min(end, a.size()); ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  return args;
}

// --disk PATH[,ro][,direct][,serial=ID], repeatable (absl flags keep only the last value of a flag, so
// these are taken out of argv first). The first disk is /dev/vda.
absl::StatusOr<block::BlockConfig> ParseDisk(absl::string_view spec) {
  std::vector<std::string> parts = absl::StrSplit(spec, ',');
  block::BlockConfig disk;
  disk.path = parts[0];
  if (disk.path.empty()) return absl::InvalidArgumentError("--disk needs a path: --disk PATH[,ro][,direct][,serial=ID]");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "ro") {
      disk.read_only = true;
    } else if (parts[i] == "direct") {
      disk.direct = true;
    } else if (absl::StartsWith(parts[i], "serial=")) {
      disk.serial = parts[i].substr(7);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--disk ", spec, ": unknown option '", parts[i],
                                                     "' (known: ro, direct, serial=ID)"));
    }
  }
  return disk;
}

// Takes every `--NAME SPEC` / `--NAME=SPEC` out of `args` (repeatable flags whose values contain
// commas, which absl's list flags would split) and returns the specs in order.
std::vector<std::string> TakeRepeatedFlag(std::vector<std::string>& args, absl::string_view name) {
  const std::string bare = absl::StrCat("--", name);
  const std::string with_value = bare + "=";
  std::vector<std::string> specs;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (absl::StartsWith(args[i], with_value)) {
      specs.push_back(args[i].substr(with_value.size()));
    } else if (args[i] == bare && i + 1 < args.size()) {
      specs.push_back(args[++i]);
    } else {
      rest.push_back(args[i]);
    }
  }
  args = std::move(rest);
  return specs;
}

absl::StatusOr<std::vector<block::BlockConfig>> TakeDiskFlags(std::vector<std::string>& args) {
  std::vector<block::BlockConfig> disks;
  for (const std::string& spec : TakeRepeatedFlag(args, "disk")) {
    absl::StatusOr<block::BlockConfig> disk = ParseDisk(spec);
    if (!disk.ok()) return disk.status();
    disks.push_back(std::move(*disk));
  }
  return disks;
}

// --vsock CID,UDS_PATH (the path is everything after the first comma).
absl::StatusOr<vsock::VsockConfig> ParseVsock(absl::string_view spec) {
  const size_t comma = spec.find(',');
  if (comma == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--vsock ", spec, ": expected CID,UDS_PATH (e.g. --vsock 3,/run/vessel/vm.sock)"));
  }
  const absl::string_view cid = spec.substr(0, comma);
  vsock::VsockConfig config;
  if (!absl::SimpleAtoi(cid, &config.guest_cid)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--vsock ", spec, ": CID '", cid, "' is not a number: use ", vsock::kMinGuestCid, "..",
        vsock::kCidAny - 1));
  }
  config.uds_path = std::string(spec.substr(comma + 1));
  absl::Status valid = vsock::ValidateVsockConfig(config);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("--vsock: ", valid.message()));
  return config;
}

// --net TAP_NAME[,mac=MAC][,netns=PATH] (the netns path is everything after "netns=").
absl::StatusOr<net::NetConfig> ParseNet(absl::string_view spec) {
  net::NetConfig config;
  absl::string_view rest = spec;
  size_t comma = rest.find(',');
  config.tap_name = std::string(rest.substr(0, comma));
  rest = comma == absl::string_view::npos ? absl::string_view() : rest.substr(comma + 1);
  while (!rest.empty()) {
    if (absl::StartsWith(rest, "netns=")) {
      config.netns_path = std::string(rest.substr(6));
      break;
    }
    comma = rest.find(',');
    absl::string_view option = rest.substr(0, comma);
    rest = comma == absl::string_view::npos ? absl::string_view() : rest.substr(comma + 1);
    if (absl::StartsWith(option, "mac=")) {
      absl::StatusOr<net::MacAddress> mac = net::ParseMac(option.substr(4));
      if (!mac.ok()) return absl::InvalidArgumentError(absl::StrCat("--net ", spec, ": ", mac.status().message()));
      config.mac = *mac;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--net ", spec, ": unknown option '", option,
          "'; expected TAP_NAME[,mac=52:54:00:12:34:56][,netns=/var/run/netns/NAME]"));
    }
  }
  absl::Status valid = net::ValidateNetConfig(config);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("--net ", spec, ": ", valid.message()));
  return config;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "boots a Linux guest on KVM inside this process.\n"
      "  vessel-vmm [--kernel=vmlinux --initrd=initramfs.cpio] [--vcpus=N] [--mem-mib=M] "
      "[--append='...'] [--console=stdio|file:PATH] [--boot-timing] [--disk PATH[,ro][,direct][,serial=ID]]... "
      "[--vsock CID,UDS_PATH] [--net TAP_NAME[,mac=MAC][,netns=PATH]]... "
      "[--share TAG=DIR[,cache=never|auto|always][,ro][,writeback]]...\n"
      "Exit status: 0 guest powered off, 1 setup error, 2 guest crashed, 3 guest rebooted, "
      "4 stopped by a signal.");
  std::vector<std::string> args = DashFlagsToUnderscores(argc, argv);
  absl::StatusOr<std::vector<block::BlockConfig>> disks = TakeDiskFlags(args);
  if (!disks.ok()) {
    LogError(disks.status().message());
    return kExitSetupError;
  }
  // --net TAP_NAME[,mac=MAC][,netns=PATH], repeatable: the first is the guest's eth0.
  std::vector<std::string> net_specs = TakeRepeatedFlag(args, "net");
  // --share TAG=DIR[,cache=never|auto|always][,ro][,writeback], repeatable.
  std::vector<std::string> share_specs = TakeRepeatedFlag(args, "share");
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  MachineConfig config;
  config.kernel_path = absl::GetFlag(FLAGS_kernel);
  config.initrd_path = absl::GetFlag(FLAGS_initrd);
  if (config.kernel_path.empty()) {
    config.kernel_path = absl::StrCat(VESSEL_DEFAULT_GUEST_DIR, "/vmlinux");
    if (config.initrd_path.empty()) config.initrd_path = absl::StrCat(VESSEL_DEFAULT_GUEST_DIR, "/initramfs.cpio");
    if (::access(config.kernel_path.c_str(), R_OK) != 0) {
      LogError("the default guest kernel ", config.kernel_path,
               " is missing: run ./setup.sh to build it, or pass --kernel");
      return kExitSetupError;
    }
  }
  config.extra_cmdline = absl::GetFlag(FLAGS_append);
  config.vcpus = absl::GetFlag(FLAGS_vcpus);
  config.mem_mib = absl::GetFlag(FLAGS_mem_mib);
  config.hugepages = absl::GetFlag(FLAGS_hugepages);
  config.seccomp = absl::GetFlag(FLAGS_seccomp);
  config.disks = std::move(*disks);
  if (const std::string spec = absl::GetFlag(FLAGS_vsock); !spec.empty()) {
    absl::StatusOr<vsock::VsockConfig> vsock_config = ParseVsock(spec);
    if (!vsock_config.ok()) {
      LogError(vsock_config.status().message());
      return kExitSetupError;
    }
    config.vsock = std::move(*vsock_config);
  }
  for (const std::string& spec : net_specs) {
    absl::StatusOr<net::NetConfig> net_config = ParseNet(spec);
    if (!net_config.ok()) {
      LogError(net_config.status().message());
      return kExitSetupError;
    }
    config.nets.push_back(std::move(*net_config));
  }
  for (const std::string& spec : share_specs) {
    absl::StatusOr<fs::FsConfig> share = fs::ParseShareSpec(spec);
    if (!share.ok()) {
      LogError("--share ", spec, ": ", share.status().message());
      return kExitSetupError;
    }
    config.shares.push_back(std::move(*share));
  }

  const std::string console = absl::GetFlag(FLAGS_console);
  ScopedFd console_file;
  int console_fd = STDOUT_FILENO;
  bool forward_stdin = false;
  if (console == "stdio") {
    forward_stdin = true;
  } else if (absl::StartsWith(console, "file:") && console.size() > 5) {
    std::string path = console.substr(5);
    console_file.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!console_file.valid()) {
      LogError(ErrnoStatus(absl::StrCat("--console: open ", path)).message());
      return kExitSetupError;
    }
    console_fd = console_file.get();
  } else {
    LogError("--console=", console, " is not understood: use stdio or file:PATH");
    return kExitSetupError;
  }
  config.console_sink = [console_fd](absl::string_view bytes) { WriteAll(console_fd, bytes); };

  // SIGINT/SIGTERM/SIGHUP arrive through a signalfd; every thread created below inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ScopedFd signal_fd(::signalfd(-1, &signals, SFD_CLOEXEC));
  ScopedFd stop_fd(::eventfd(0, EFD_CLOEXEC));
  if (!signal_fd.valid() || !stop_fd.valid()) {
    LogError(ErrnoStatus("signalfd/eventfd").message());
    return kExitSetupError;
  }

  absl::StatusOr<std::unique_ptr<Machine>> machine = Machine::Create(std::move(config));
  if (!machine.ok()) {
    LogError(machine.status().message());
    return kExitSetupError;
  }
  LogInfo("platform: ", (*machine)->platform().Name(), "; kernel command line: ", (*machine)->cmdline());
  absl::Status started = (*machine)->Start();
  if (!started.ok()) {
    LogError(started.message());
    return kExitSetupError;
  }
  std::thread host_events(HostEventLoop, machine->get(), forward_stdin, signal_fd.get(), stop_fd.get());
  MachineExit exit = (*machine)->Wait();
  uint64_t one = 1;
  ssize_t unused = ::write(stop_fd.get(), &one, sizeof(one));
  (void)unused;
  host_events.join();

  if (absl::GetFlag(FLAGS_boot_timing)) PrintTimeline(**machine, exit);
  switch (exit.reason) {
    case ExitReason::kPoweroff:
      LogInfo("VM ended: ", exit.detail);
      return kExitPoweroff;
    case ExitReason::kReboot:
      LogError("VM ended: ", exit.detail, " (vessel-vmm does not restart guests; a kernel panic also "
               "ends this way: see the console)");
      return kExitReboot;
    case ExitReason::kCrash:
      LogError("VM crashed: ", exit.detail);
      return kExitCrash;
    case ExitReason::kHostStop:
      LogError("VM ", exit.detail);
      return kExitHostStop;
  }
  return kExitCrash;
}

}  // namespace
}  // namespace vessel

int main(int argc, char** argv) { return vessel::Main(argc, argv); }
