// vessel-agent's main (see agent_main.h): the guest agent. As the guest's /init (PID 1) it mounts
// the early file systems, serves vessel.agent.v1.Agent on vsock port 1024 and powers the VM off
// when told to stop. In host mode (tests, no VM) it serves on a Unix socket and keeps guest paths
// under --root.
//
//   vessel-agent [--listen vsock:PORT|unix:PATH] [--root DIR] [--cgroup-root DIR|none]
//                [--stdio-dir DIR]
#include "guest/agent/agent_main.h"

#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "guest/agent/agent.h"
#include "guest/agent/init.h"
#include "guest/agent/service.h"
#include "guest/agent/stdio.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/socket.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::agent {
namespace {

constexpr char kUsage[] =
    "usage: vessel-agent [--listen vsock:PORT|unix:PATH] [--root DIR] [--cgroup-root DIR|none] "
    "[--stdio-dir DIR]\n";

struct Flags {
  std::string listen = "vsock:1024";
  std::string root = "/";
  std::string cgroup_root;  // empty: the mode's default
  std::string stdio_dir;
};

bool IsCgroup2(const std::string& path) {
  struct statfs fs;
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv, bool ignore_unknown) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    auto take = [&](const char* name, std::string& out) -> bool {
      std::string prefix = absl::StrCat(name, "=");
      if (arg == name && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      if (absl::StartsWith(arg, prefix)) {
        out = arg.substr(prefix.size());
        return true;
      }
      return false;
    };
    if (take("--listen", flags.listen) || take("--root", flags.root) ||
        take("--cgroup-root", flags.cgroup_root) || take("--stdio-dir", flags.stdio_dir)) {
      continue;
    }
    if (ignore_unknown) {
      // PID 1 gets the kernel command line's unknown words as arguments (noxsave, pci=off...).
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown argument '", arg, "'\n", kUsage));
  }
  return flags;
}

}  // namespace

int AgentMain(int argc, char** argv) {
  const bool pid1 = ::getpid() == 1;
  // Signals are taken by signalfd on this thread, before any other thread exists.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<Flags> flags = ParseFlags(argc, argv, /*ignore_unknown=*/pid1);
  if (!flags.ok()) {
    std::fprintf(stderr, "vessel-agent: %s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  if (pid1) {
    absl::Status s = InitGuestFilesystems();
    if (!s.ok()) LogError("agent: ", s.message());
  } else {
    // Host mode: orphans of container processes come back to us to be reaped.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }
  AgentOptions options;
  options.root = flags->root;
  options.host_mode = !pid1;
  if (flags->cgroup_root == "none") {
    options.cgroup_root.clear();
  } else if (!flags->cgroup_root.empty()) {
    options.cgroup_root = flags->cgroup_root;
  } else if (pid1) {
    options.cgroup_root = "/sys/fs/cgroup/sandbox";
  } else {
    std::string name = absl::StrCat("vessel-agent-test-", ::getpid());
    if (IsCgroup2("/sys/fs/cgroup")) {
      options.cgroup_root = absl::StrCat("/sys/fs/cgroup/", name);
    } else if (IsCgroup2("/sys/fs/cgroup/unified")) {
      options.cgroup_root = absl::StrCat("/sys/fs/cgroup/unified/", name);
    } else {
      LogWarning("agent: no cgroup2 file system found: running without cgroups");
    }
  }
  options.connector =
      flags->stdio_dir.empty() ? MakeVsockConnector() : MakeUnixConnector(flags->stdio_dir);
  if (pid1) {
    // The sandbox is over: shut down (and power off) as on SIGTERM. The signal is raised a moment
    // later so the DestroySandbox answer usually leaves first; the host also treats the VM's end
    // as the answer.
    options.on_sandbox_destroyed = [] {
      std::thread([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        ::kill(::getpid(), SIGTERM);
      }).detach();
    };
  }
  absl::StatusOr<std::unique_ptr<Agent>> agent = Agent::Create(std::move(options));
  if (!agent.ok()) {
    LogError("agent: ", agent.status().message());
    if (pid1) PowerOff();
    return 1;
  }

  ScopedFd sigfd(::signalfd(-1, &mask, SFD_CLOEXEC));
  if (!sigfd.valid()) {
    LogError("agent: signalfd: ", strerror(errno));
    return 1;
  }
  int status = 0;
  {
    ttrpc::IoThread io(1);
    boost::asio::thread_pool pool(4);
    ttrpc::Server server(io.io());
    absl::Status s = RegisterAgentService(server, pool, **agent);
    if (s.ok()) {
      const std::string& listen = flags->listen;
      if (absl::StartsWith(listen, "unix:")) {
        s = server.ListenUnix(listen.substr(5));
      } else if (absl::StartsWith(listen, "vsock:")) {
        uint32_t port = 0;
        if (!absl::SimpleAtoi(listen.substr(6), &port)) {
          s = absl::InvalidArgumentError(absl::StrCat("bad vsock port in --listen ", listen));
        } else {
          absl::StatusOr<ScopedFd> fd = ttrpc::ListenVsock(port);
          s = fd.ok() ? server.Listen(std::move(*fd), listen) : fd.status();
        }
      } else {
        s = absl::InvalidArgumentError(
            absl::StrCat("--listen ", listen, ": expected vsock:PORT or unix:PATH"));
      }
    }
    if (!s.ok()) {
      LogError("agent: ", s.message());
      status = 1;
    } else {
      // One line on the console that hosts and people wait for.
      std::string line = absl::StrCat("vessel-agent: serving on ", flags->listen, "\n");
      ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
      (void)unused;
      for (;;) {
        signalfd_siginfo info;
        ssize_t n = ::read(sigfd.get(), &info, sizeof(info));
        if (n < 0 && errno == EINTR) continue;
        if (n != sizeof(info)) break;
        if (info.ssi_signo == SIGCHLD) {
          (*agent)->Reap();
          continue;
        }
        LogInfo("agent: signal ", info.ssi_signo, ": shutting down");
        break;
      }
    }
    // The agent first (long polls answered Cancelled, containers killed, their exits reaped here
    // meanwhile), then the connections.
    std::atomic<bool> done{false};
    std::thread stopper([&] {
      (*agent)->Shutdown();
      done.store(true);
    });
    while (!done.load()) {
      pollfd p{sigfd.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        signalfd_siginfo info;
        ssize_t unused = ::read(sigfd.get(), &info, sizeof(info));
        (void)unused;
      }
      (*agent)->Reap();
    }
    stopper.join();
    server.Shutdown();
    pool.join();
  }
  agent->reset();
  if (pid1) PowerOff();
  return status;
}

}  // namespace vessel::agent
