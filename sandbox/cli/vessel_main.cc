// `vessel`: boot a sandbox VM in this process and run one container command in it.
//
//   vessel run [--rootfs DIR] [--cpus N] [--memory MiB] [-t] [-i] [-e K=V]... [-w DIR]
//              [--net NETNS] [--config FILE] [--no-template] [--debug-console] -- CMD [ARGS...]
//   vessel template build|ls|rm ...   (template_cmd.cc)
//
// Exits with the command's exit status (128 + n when a signal killed it); 125 when vessel itself
// failed (bad arguments, the VM or the container could not be created), as docker and podman do.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "vessel/sandbox/config.h"
#include "sandbox/cli/template_cmd.h"
#include "vessel/sandbox/sandbox.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

#ifndef VESSEL_DEFAULT_ROOTFS
#error "VESSEL_DEFAULT_ROOTFS must name the busybox rootfs the build makes"
#endif

namespace vessel::sandbox {
namespace {

constexpr int kVesselFailed = 125;

void Usage(std::ostream& out) {
  out << "usage: vessel run [options] -- CMD [ARGS...]\n"
         "       vessel template build|ls|rm   (vessel template --help)\n"
         "Starts a sandbox VM in this process (restored from a matching template when there is one,\n"
         "else booted), runs CMD in a container and exits with its status.\n"
         "  --rootfs DIR       container root filesystem (default: the busybox rootfs setup.sh built)\n"
         "  --cpus N           vCPUs (default 1)\n"
         "  --memory MiB       guest memory (default 512)\n"
         "  -t, --tty          run the command on a pseudo-terminal\n"
         "  -i, --interactive  pass stdin (default: on when stdin is not a terminal, or with -t)\n"
         "  -e, --env K=V      set an environment variable (repeatable)\n"
         "  -w, --workdir DIR  working directory in the container (default /)\n"
         "  --net NETNS        mirror this network namespace (path or name under /var/run/netns)\n"
         "                     into the guest's eth0\n"
         "  --config FILE      runtime configuration (JSON; see sandbox/README.md)\n"
         "  --no-template      boot the kernel even when a matching template exists\n"
         "  --debug-console    copy the guest console to stderr\n"
         "  -q, --quiet        no progress lines\n"
         "  -v, --verbose      the VMM's and the SDK's log lines too\n"
         "Exit status: the command's (128+n if killed by signal n); 125 if vessel failed.\n";
}

struct Options {
  std::string rootfs = VESSEL_DEFAULT_ROOTFS;
  std::optional<uint32_t> cpus;
  std::optional<uint64_t> memory;
  bool tty = false;
  std::optional<bool> interactive;
  std::vector<std::string> env;
  std::string workdir = "/";
  std::string netns;
  std::string config_path;
  bool debug_console = false;
  bool no_template = false;
  bool quiet = false;
  bool verbose = false;
  std::vector<std::string> command;
};

// Returns the exit code to use on a parse failure, or -1 when parsing succeeded.
int Parse(int argc, char** argv, Options& o) {
  if (argc < 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
    Usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) != "run") {
    std::cerr << "vessel: unknown command \"" << argv[1] << "\" (try: vessel run -- CMD, vessel template ls)\n";
    return 2;
  }
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::optional<std::string> {
      std::string prefix = std::string(name) + "=";
      if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
      if (i + 1 >= argc) {
        std::cerr << "vessel: " << name << " needs a value\n";
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    auto is = [&](const char* name) { return a == name || a.rfind(std::string(name) + "=", 0) == 0; };
    if (a == "--") {
      for (++i; i < argc; ++i) o.command.push_back(argv[i]);
      break;
    } else if (a == "-t" || a == "--tty") {
      o.tty = true;
    } else if (a == "-i" || a == "--interactive") {
      o.interactive = true;
    } else if (a == "-it" || a == "-ti") {
      o.tty = true;
      o.interactive = true;
    } else if (a == "--debug-console") {
      o.debug_console = true;
    } else if (a == "--no-template") {
      o.no_template = true;
    } else if (a == "-q" || a == "--quiet") {
      o.quiet = true;
    } else if (a == "-v" || a == "--verbose") {
      o.verbose = true;
    } else if (is("--rootfs")) {
      auto v = value("--rootfs");
      if (!v) return 2;
      o.rootfs = *v;
    } else if (is("--cpus")) {
      auto v = value("--cpus");
      uint32_t n;
      if (!v || !absl::SimpleAtoi(*v, &n) || n < 1 || n > 64) {
        std::cerr << "vessel: --cpus must be a number from 1 to 64\n";
        return 2;
      }
      o.cpus = n;
    } else if (is("--memory")) {
      auto v = value("--memory");
      uint64_t n;
      if (!v || !absl::SimpleAtoi(*v, &n) || n < 64) {
        std::cerr << "vessel: --memory must be a number of MiB, at least 64\n";
        return 2;
      }
      o.memory = n;
    } else if (a == "-e" || is("--env")) {
      auto v = value(a == "-e" ? "-e" : "--env");
      if (!v) return 2;
      if (v->find('=') == std::string::npos) {
        const char* host = std::getenv(v->c_str());  // docker's -e NAME: take the host's value
        if (host == nullptr) continue;
        *v = *v + "=" + host;
      }
      o.env.push_back(*v);
    } else if (a == "-w" || is("--workdir")) {
      auto v = value(a == "-w" ? "-w" : "--workdir");
      if (!v) return 2;
      o.workdir = *v;
    } else if (is("--net")) {
      auto v = value("--net");
      if (!v) return 2;
      o.netns = v->find('/') == std::string::npos ? "/var/run/netns/" + *v : *v;
    } else if (is("--config")) {
      auto v = value("--config");
      if (!v) return 2;
      o.config_path = *v;
    } else if (!a.empty() && a[0] != '-') {
      for (; i < argc; ++i) o.command.push_back(argv[i]);  // the command starts here
      break;
    } else {
      std::cerr << "vessel: unknown option " << a << "\n";
      Usage(std::cerr);
      return 2;
    }
  }
  if (o.command.empty()) {
    std::cerr << "vessel: no command given (vessel run -- CMD [ARGS...])\n";
    return 2;
  }
  return -1;
}

// Puts the local terminal in raw mode for -t and restores it.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (::tcgetattr(fd_, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

std::string RandomId() {
  std::random_device rd;
  return absl::StrCat("run-", ::getpid(), "-", rd() % 100000);
}

int Run(const Options& o) {
  absl::StatusOr<RuntimeConfig> runtime =
      o.config_path.empty() ? absl::StatusOr<RuntimeConfig>(DefaultRuntimeConfig())
                            : LoadRuntimeConfig(o.config_path);
  if (!runtime.ok()) {
    std::cerr << "vessel: " << runtime.status().message() << "\n";
    return kVesselFailed;
  }
  if (o.cpus) runtime->vcpus = *o.cpus;
  if (o.memory) runtime->memory_mib = *o.memory;
  if (o.debug_console) runtime->debug_console = true;
  if (o.no_template) runtime->use_template = false;

  // SIGINT/SIGTERM/SIGHUP are forwarded to the container, SIGWINCH resizes its terminal: block them
  // before any thread starts so that only our signalfd sees them.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH}) sigaddset(&signals, s);
  ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ScopedFd sigfd(::signalfd(-1, &signals, SFD_CLOEXEC));

  SandboxConfig config;
  config.id = RandomId();
  config.runtime = *runtime;
  config.netns_path = o.netns;
  if (!o.quiet) {
    std::cerr << "vessel: starting a sandbox VM (" << config.runtime.vcpus << " vCPU, "
              << config.runtime.memory_mib << " MiB)...\n";
  }
  absl::StatusOr<std::unique_ptr<Sandbox>> sandbox = Sandbox::Create(config);
  if (!sandbox.ok()) {
    std::cerr << "vessel: " << sandbox.status().message() << "\n";
    return kVesselFailed;
  }
  if (!o.quiet) {
    SandboxTimeline t = (*sandbox)->timeline();
    std::cerr << "vessel: " << t.start_path << "\n";
    std::cerr << "vessel: sandbox ready on " << (*sandbox)->platform() << " (VM setup "
              << std::chrono::duration_cast<std::chrono::milliseconds>(t.vm_setup).count()
              << " ms, agent after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(t.agent_ready).count()
              << " ms); starting the container\n";
  }
  bool interactive = o.interactive.value_or(o.tty || !::isatty(STDIN_FILENO));
  ContainerConfig cc;
  cc.id = "main";
  cc.spec = DefaultOciSpec(o.command, o.env, o.workdir, o.tty);
  cc.rootfs_dir = o.rootfs;
  cc.stdio.terminal = o.tty;
  cc.stdio.stdin_fd = interactive ? STDIN_FILENO : -1;
  cc.stdio.stdout_fd = STDOUT_FILENO;
  cc.stdio.stderr_fd = STDERR_FILENO;
  absl::StatusOr<Container*> container = (*sandbox)->CreateContainer(std::move(cc));
  if (!container.ok()) {
    std::cerr << "vessel: " << container.status().message() << "\n";
    (void)(*sandbox)->Stop();
    return kVesselFailed;
  }
  std::optional<RawTerminal> raw;
  if (o.tty && ::isatty(STDIN_FILENO)) {
    winsize ws{};
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
      (void)(*container)->ResizeTty(ws.ws_row, ws.ws_col);
    }
    raw.emplace(STDIN_FILENO);
  }
  if (absl::Status s = (*container)->Start(); !s.ok()) {
    raw.reset();
    std::cerr << "vessel: " << s.message() << "\n";
    (void)(*sandbox)->RemoveContainer("main");
    (void)(*sandbox)->Stop();
    return kVesselFailed;
  }
  std::atomic<bool> done{false};
  std::thread forwarder([&] {
    while (!done) {
      pollfd p = {sigfd.get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      signalfd_siginfo info;
      if (::read(sigfd.get(), &info, sizeof(info)) != sizeof(info)) continue;
      if (info.ssi_signo == SIGWINCH) {
        winsize ws{};
        if (o.tty && ::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) (void)(*container)->ResizeTty(ws.ws_row, ws.ws_col);
        continue;
      }
      (void)(*container)->Signal(static_cast<int>(info.ssi_signo));
    }
  });
  absl::StatusOr<uint32_t> status = (*container)->Wait();
  done = true;
  forwarder.join();
  raw.reset();
  absl::Status removed = (*sandbox)->RemoveContainer("main");
  absl::Status stopped = (*sandbox)->Stop();
  if (!status.ok()) {
    std::cerr << "vessel: " << status.status().message() << "\n";
    return kVesselFailed;
  }
  if (!removed.ok()) std::cerr << "vessel: warning: " << removed.message() << "\n";
  if (!stopped.ok()) std::cerr << "vessel: warning: " << stopped.message() << "\n";
  return static_cast<int>(*status & 0xff);
}

}  // namespace
}  // namespace vessel::sandbox

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "template") return vessel::sandbox::TemplateMain(argc, argv);
  vessel::sandbox::Options options;
  int parsed = vessel::sandbox::Parse(argc, argv, options);
  if (parsed >= 0) return parsed == 2 ? vessel::sandbox::kVesselFailed : parsed;
  vessel::SetMinLogLevel(options.verbose ? vessel::LogLevel::kInfo : vessel::LogLevel::kWarning);
  return vessel::sandbox::Run(options);
}
