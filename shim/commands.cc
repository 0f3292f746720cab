#include "shim/commands.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/asio/thread_pool.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "containerd/task/v2/shim.pb.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/socket.h"
#include "shim/address.h"
#include "shim/backend.h"
#include "shim/events.h"
#include "shim/log.h"
#include "shim/mounts.h"
#include "shim/state.h"
#include "shim/task_service.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::shim {
namespace {

constexpr char kName[] = "containerd-shim-vessel-v2";
constexpr char kDefaultConfigFile[] = "/etc/vessel/runtime.json";

absl::Status NamespaceError(const std::string& ns) {
  return absl::InvalidArgumentError(absl::StrCat(
      "-namespace \"", ns, "\" is not a containerd namespace name (letters, digits, '.', '_', '-'; at most 76)"));
}

int Fail(const absl::Status& s) {
  std::cerr << kName << ": " << s.message() << "\n";
  return 1;
}

absl::StatusOr<std::string> Cwd() {
  char buf[4096];
  if (::getcwd(buf, sizeof(buf)) == nullptr) return ErrnoStatus("getcwd");
  return std::string(buf);
}

absl::StatusOr<nlohmann::json> ReadSpec(const std::string& bundle) {
  std::string path = bundle + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus("open " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object (an OCI runtime spec)"));
  }
  return j;
}

// containerd's WriteAddress: write ".address", rename to "address".
absl::Status WriteAddressFile(const std::string& dir, const std::string& address) {
  std::string tmp = dir + "/.address", final_path = dir + "/address";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << address;
    if (!out) return ErrnoStatus("write " + tmp);
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) return ErrnoStatus("rename " + tmp + " to address");
  return absl::OkStatus();
}

bool CanConnect(const std::string& path) {
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (!fd.valid() || path.size() >= sizeof(sa.sun_path)) return false;
  std::memcpy(sa.sun_path, path.data(), path.size());
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
}

// Binds the shim socket. Unavailable with EADDRINUSE semantics when a live shim owns it.
absl::StatusOr<ScopedFd> BindSocket(const std::string& path, bool* in_use) {
  *in_use = false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) return absl::InvalidArgumentError("socket path " + path + " is too long");
  std::memcpy(sa.sun_path, path.data(), path.size());
  for (int attempt = 0; attempt < 2; ++attempt) {
    ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus("socket");
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
      if (::listen(fd.get(), SOMAXCONN) != 0) return ErrnoStatus("listen on " + path);
      ::chmod(path.c_str(), 0600);
      return fd;
    }
    if (errno != EADDRINUSE) return ErrnoStatus("bind " + path);
    if (CanConnect(path)) {
      *in_use = true;
      return absl::AlreadyExistsError("a shim already serves " + path);
    }
    ::unlink(path.c_str());  // stale: its shim is gone
  }
  return absl::InternalError("bind " + path + ": still in use after removing the stale socket");
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

absl::StatusOr<ShimFlags> ParseFlags(const std::vector<std::string>& args) {
  ShimFlags f;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;  // the action
    a = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (size_t eq = a.find('='); eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    if (a == "debug" || a == "v") {
      bool on = true;
      if (value && !absl::SimpleAtob(*value, &on)) {
        return absl::InvalidArgumentError(absl::StrCat("flag -", a, ": \"", *value, "\" is not a boolean"));
      }
      (a == "debug" ? f.debug : f.version) = on;
      continue;
    }
    std::string* target = a == "namespace"        ? &f.ns
                          : a == "id"             ? &f.id
                          : a == "address"        ? &f.address
                          : a == "publish-binary" ? &f.publish_binary
                          : a == "bundle"         ? &f.bundle
                          : a == "socket"         ? &f.socket
                                                  : nullptr;
    if (target == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag -", a, " (flags: -namespace -id -address -publish-binary -bundle -socket -debug -v)"));
    }
    if (!value) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("flag -", a, " needs a value"));
      value = args[++i];
    }
    *target = *value;
  }
  if (i < args.size()) f.action = args[i];
  if (!f.action.empty() && f.action != "start" && f.action != "delete") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown action \"", f.action, "\" (expected start, delete, or none to serve)"));
  }
  return f;
}

std::string DeleteResponseBytes(uint32_t pid, absl::Time exited_at) {
  containerd::task::v2::DeleteResponse resp;
  resp.set_pid(pid);
  resp.set_exit_status(128 + SIGKILL);
  ToTimestamp(exited_at, resp.mutable_exited_at());
  return resp.SerializeAsString();
}

absl::StatusOr<sandbox::RuntimeConfig> LoadShimRuntimeConfig() {
  if (const char* env = std::getenv("VESSEL_RUNTIME_CONFIG"); env != nullptr && *env != '\0') {
    return sandbox::LoadRuntimeConfig(env);
  }
  if (::access(kDefaultConfigFile, F_OK) == 0) return sandbox::LoadRuntimeConfig(kDefaultConfigFile);
  return sandbox::DefaultRuntimeConfig();
}

int RunStart(const ShimFlags& flags) {
  if (!IsValidNamespace(flags.ns)) return Fail(NamespaceError(flags.ns));
  if (flags.id.empty()) return Fail(absl::InvalidArgumentError("start: -id is required"));
  absl::StatusOr<std::string> bundle = Cwd();
  if (!bundle.ok()) return Fail(bundle.status());
  absl::StatusOr<nlohmann::json> spec = ReadSpec(*bundle);
  if (!spec.ok()) return Fail(spec.status());
  absl::StatusOr<PodMembership> pod = PodMembershipFromSpec(*spec, flags.id);
  if (!pod.ok()) return Fail(pod.status());
  absl::StatusOr<std::string> address = SocketAddress(flags.address, flags.ns, pod->sandbox_id);
  if (!address.ok()) return Fail(address.status());
  absl::StatusOr<std::string> path = SocketPath(*address);
  if (!path.ok()) return Fail(path.status());

  // Whatever containerd passes on stdin (runtime options as an Any) has no meaning for vessel yet.
  if (!::isatty(STDIN_FILENO)) {
    char buf[4096];
    while (::read(STDIN_FILENO, buf, sizeof(buf)) > 0) {
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(kSocketDir, ec);
  bool in_use = false;
  absl::StatusOr<ScopedFd> listener = BindSocket(*path, &in_use);
  if (!listener.ok() && in_use) {
    // The pod's shim is up: it serves this container too.
    absl::Status w = WriteAddressFile(*bundle, *address);
    if (!w.ok()) return Fail(w);
    std::cout << *address << std::flush;
    return 0;
  }
  if (!listener.ok()) return Fail(listener.status());
  auto fail_unlink = [&](const absl::Status& s) {
    ::unlink(path->c_str());
    return Fail(s);
  };
  absl::Status w = WriteAddressFile(*bundle, *address);
  if (!w.ok()) return fail_unlink(w);

  // Re-exec ourselves without the action; the listener becomes fd 3 of a new session.
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return fail_unlink(ErrnoStatus("readlink /proc/self/exe"));
  self[n] = '\0';
  std::vector<std::string> args = {self, "-namespace", flags.ns, "-id", flags.id, "-address", flags.address};
  if (flags.debug) args.push_back("-debug");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ScopedFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  ScopedFd high(::fcntl(listener->get(), F_DUPFD_CLOEXEC, 10));
  int report[2];
  if (!devnull.valid() || !high.valid() || ::pipe2(report, O_CLOEXEC) != 0) {
    return fail_unlink(ErrnoStatus("prepare the shim process"));
  }
  ScopedFd report_r(report[0]), report_w(report[1]);
  pid_t child = ::fork();
  if (child < 0) return fail_unlink(ErrnoStatus("fork the shim process"));
  if (child == 0) {
    ::setsid();
    ::dup2(devnull.get(), 0);
    ::dup2(devnull.get(), 1);
    ::dup2(devnull.get(), 2);
    ::dup2(high.get(), 3);  // dup2 clears close-on-exec
    ::execv(self, argv.data());
    int err = errno;
    ssize_t ignored = ::write(report_w.get(), &err, sizeof(err));
    (void)ignored;
    ::_exit(127);
  }
  report_w.reset();
  int child_errno = 0;
  if (::read(report_r.get(), &child_errno, sizeof(child_errno)) == sizeof(child_errno)) {
    return fail_unlink(ErrnoStatus(absl::StrCat("exec ", self), child_errno));
  }
  // One above containerd's OOM score, as containerd's own shims do (best effort).
  int parent_score = 0;
  if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile(absl::StrCat("/proc/", ::getppid(), "/oom_score_adj"))),
                       &parent_score)) {
    std::ofstream(absl::StrCat("/proc/", child, "/oom_score_adj")) << std::min(parent_score + 1, 1000);
  }
  std::cout << *address << std::flush;
  return 0;
}

int RunDelete(const ShimFlags& flags) {
  if (!IsValidNamespace(flags.ns)) return Fail(NamespaceError(flags.ns));
  std::string bundle = flags.bundle;
  if (bundle.empty()) {
    absl::StatusOr<std::string> cwd = Cwd();
    if (!cwd.ok()) return Fail(cwd.status());
    bundle = *cwd;
  }
  uint32_t pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile(bundle + "/init.pid")), &pid)) pid = 0;
  absl::Status u = UnmountAll(bundle + "/rootfs");
  if (!u.ok()) std::cerr << kName << ": delete: " << u.message() << "\n";

  absl::StatusOr<sandbox::RuntimeConfig> rt = LoadShimRuntimeConfig();
  if (!rt.ok()) std::cerr << kName << ": delete: " << rt.status().message() << "\n";
  std::string state_dir = rt.ok() ? ShimStateDir(rt->state_dir, flags.ns) : "";
  // The pod: from config.json, or, when containerd already removed the bundle (a `ctr task
  // delete` racing this cleanup), from where the container's state lives.
  std::string group;
  if (absl::StatusOr<nlohmann::json> spec = ReadSpec(bundle); spec.ok()) {
    if (absl::StatusOr<PodMembership> pod = PodMembershipFromSpec(*spec, flags.id); pod.ok()) group = pod->sandbox_id;
  }
  if (group.empty() && !state_dir.empty() && IsValidId(flags.id)) group = FindSandboxOf(state_dir, flags.id);
  if (group.empty()) group = flags.id;
  bool shim_alive = false;
  if (absl::StatusOr<std::string> address = SocketAddress(flags.address, flags.ns, group); address.ok()) {
    if (absl::StatusOr<std::string> path = SocketPath(*address); path.ok()) {
      shim_alive = CanConnect(*path);
      if (!shim_alive) ::unlink(path->c_str());
    }
  }
  if (!shim_alive && !state_dir.empty() && IsValidId(group) && IsValidId(flags.id)) {
    absl::Status c = RemoveSandboxState(SandboxStateDir(state_dir, group), flags.id);
    if (!c.ok()) std::cerr << kName << ": delete: " << c.message() << "\n";
  }
  std::string bytes = DeleteResponseBytes(pid, absl::Now());
  std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::cout.flush();
  return 0;
}

int RunServe(const ShimFlags& flags) {
  if (!IsValidNamespace(flags.ns)) return Fail(NamespaceError(flags.ns));
  // The log FIFO containerd opened (read side) before running `start`; fd 2 goes there so that the
  // SDK's and the VMM's own lines land in containerd's log too.
  int log_fd = ::open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (log_fd >= 0) {
    ::dup2(log_fd, STDERR_FILENO);
    ::close(log_fd);
  }
  ShimLog log(STDERR_FILENO, flags.ns, flags.id, flags.debug);

  ::signal(SIGPIPE, SIG_IGN);
  sigset_t exit_signals;
  sigemptyset(&exit_signals);
  sigaddset(&exit_signals, SIGTERM);
  sigaddset(&exit_signals, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &exit_signals, nullptr);  // before any thread starts
  ScopedFd sigfd(::signalfd(-1, &exit_signals, SFD_CLOEXEC));
  ScopedFd exit_fd(::eventfd(0, EFD_CLOEXEC));
  if (!sigfd.valid() || !exit_fd.valid()) {
    log.Error("signalfd/eventfd failed");
    return 1;
  }

  ScopedFd listener;
  std::string socket_path = flags.socket;
  if (!flags.socket.empty()) {
    absl::StatusOr<ScopedFd> l = ttrpc::ListenUnix(flags.socket);
    if (!l.ok()) {
      log.Error(l.status().ToString());
      return Fail(l.status());
    }
    listener = std::move(*l);
  } else {
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    if (::getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting) {
      absl::Status s = absl::FailedPreconditionError(
          "fd 3 is not a listening socket: run `containerd-shim-vessel-v2 start` (or pass -socket PATH)");
      log.Error(std::string(s.message()));
      return Fail(s);
    }
    ::fcntl(3, F_SETFD, FD_CLOEXEC);
    listener.reset(3);
    sockaddr_un sa{};
    socklen_t sl = sizeof(sa);
    if (::getsockname(3, reinterpret_cast<sockaddr*>(&sa), &sl) == 0 && sa.sun_path[0] != '\0') {
      socket_path = sa.sun_path;
    }
  }

  absl::StatusOr<sandbox::RuntimeConfig> runtime = LoadShimRuntimeConfig();
  if (!runtime.ok()) {
    log.Error(absl::StrCat("runtime configuration: ", runtime.status().message()));
    return Fail(runtime.status());
  }
  log.Info(absl::StrCat("serving on ", socket_path, " (pid ", ::getpid(), ")"));

  int rc = 0;
  {
    ttrpc::IoThread io(2);
    const char* ttrpc_address = std::getenv("TTRPC_ADDRESS");
    EventPublisher publisher(flags.ns,
                             EventPublisher::TtrpcForward(io.io(), ttrpc_address ? ttrpc_address : "", &log), &log);
    TaskServiceOptions options;
    options.ns = flags.ns;
    options.runtime = *runtime;
    // One state directory per containerd namespace: equal ids in two namespaces never collide.
    options.runtime.state_dir = ShimStateDir(runtime->state_dir, flags.ns);
    options.pod_factory = SdkPodFactory();
    options.events = &publisher;
    options.log = &log;
    options.request_exit = [fd = exit_fd.get()] {
      uint64_t one = 1;
      ssize_t n = ::write(fd, &one, sizeof(one));
      (void)n;
    };
    TaskService service(std::move(options));
    boost::asio::thread_pool pool(8);
    ttrpc::Server server(io.io());
    absl::Status s = RegisterTaskService(server, pool, service);
    if (s.ok()) s = server.Listen(std::move(listener), "containerd");
    if (!s.ok()) {
      log.Error(s.ToString());
      rc = 1;
    } else {
      pollfd fds[2] = {{sigfd.get(), POLLIN, 0}, {exit_fd.get(), POLLIN, 0}};
      while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
      }
      if (fds[0].revents & POLLIN) {
        log.Info("exit signal: stopping the sandbox");
      } else {
        absl::SleepFor(absl::Milliseconds(100));  // let Shutdown's answer go out
      }
    }
    server.Shutdown();
    service.Teardown();
    pool.join();
    publisher.Close(absl::Seconds(5));
  }
  if (!socket_path.empty()) ::unlink(socket_path.c_str());
  log.Info("exited");
  return rc;
}

}  // namespace vessel::shim
