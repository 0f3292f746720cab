// vessel-agent in host mode (no VM): its resident memory idle and with 10 running containers, and
// the CreateContainer -> StartContainer -> process running latency (StartContainer returns once
// the container's init has exec'd). A plain program printing labelled numbers; needs root
// (namespaces, mounts, cgroups). The guest's numbers come from vessel_agent_guest_e2e_tests
// (`# bench:` lines) so that no extra Linux boot is spent on them.
//
//   vessel_agent_bench [--iterations N]   (default 50)
#include <dirent.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/empty.pb.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Empty;
constexpr char kService[] = "vessel.agent.v1.Agent";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "Key:   123 kB" lines of /proc/<pid>/status (and smaps_rollup).
std::map<std::string, std::string> StatusFields(const std::string& path) {
  std::map<std::string, std::string> out;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out[line.substr(0, colon)] = value;
  }
  return out;
}

// Resident KiB per mapping kind: the binary, heap, thread stacks/anonymous, others.
void PrintRssBreakdown(pid_t pid) {
  std::istringstream in(ReadFile(absl::StrCat("/proc/", pid, "/smaps")));
  std::string line, name;
  std::map<std::string, long> kib;
  while (std::getline(in, line)) {
    if (!line.empty() && (std::isxdigit(static_cast<unsigned char>(line[0])) != 0) &&
        line.find('-') != std::string::npos && line.find(':') > line.find(' ')) {
      // "start-end perms offset dev inode [path]"
      std::istringstream fields(line);
      std::string range, perms, offset, dev, inode, path;
      fields >> range >> perms >> offset >> dev >> inode;
      std::getline(fields, path);
      path.erase(0, path.find_first_not_of(' '));
      if (path.empty()) {
        name = "anonymous (thread stacks, mmap'd arenas)";
      } else if (path == "[heap]") {
        name = "heap (brk)";
      } else if (path == "[stack]") {
        name = "main stack";
      } else if (path.find("vessel-agent") != std::string::npos) {
        name = absl::StrCat("binary ", perms);
      } else {
        name = path;
      }
      continue;
    }
    if (line.rfind("Rss:", 0) == 0) {
      long v = 0;
      std::istringstream(line.substr(4)) >> v;
      kib[name] += v;
    }
  }
  for (const auto& [what, v] : kib) {
    if (v > 0) std::printf("  rss %-45s %6ld KiB\n", what.c_str(), v);
  }
}

struct Agent {
  std::string dir, root;
  pid_t pid = -1;
  ttrpc::IoThread io;
  std::shared_ptr<ttrpc::Client> client;

  template <typename Resp, typename Req>
  absl::StatusOr<Resp> Call(const char* method, const Req& req) {
    ttrpc::CallOptions options;
    options.timeout = absl::Seconds(30);
    return ttrpc::CallTyped<Resp>(*client, kService, method, req, options);
  }
};

bool StartAgent(Agent& a) {
  char tmpl[] = "/tmp/vessel-agent-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return false;
  a.dir = tmpl;
  a.root = a.dir + "/root";
  fs::create_directories(a.root + "/rootfs/bin");
  fs::create_directories(a.root + "/rootfs/proc");
  fs::copy_file(VESSEL_BUSYBOX_PATH, a.root + "/rootfs/bin/busybox");
  for (const char* tool : {"sh", "sleep", "true"})
    fs::create_symlink("busybox", a.root + "/rootfs/bin/" + tool);
  fs::create_directories(a.dir + "/stdio");
  a.pid = ::fork();
  if (a.pid < 0) return false;
  if (a.pid == 0) {
    std::string listen = "unix:" + a.dir + "/agent.sock";
    std::string stdio = a.dir + "/stdio";
    ::execl(VESSEL_AGENT_PATH, VESSEL_AGENT_PATH, "--listen", listen.c_str(), "--root",
            a.root.c_str(), "--stdio-dir", stdio.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 500 && a.client == nullptr; ++i) {
    absl::StatusOr<std::shared_ptr<ttrpc::Client>> c =
        ttrpc::Client::ConnectUnix(a.io.io(), a.dir + "/agent.sock");
    if (c.ok()) {
      a.client = *c;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return a.client != nullptr;
}

void StopAgent(Agent& a) {
  a.client.reset();
  if (a.pid > 0) {
    ::kill(a.pid, SIGTERM);
    ::waitpid(a.pid, nullptr, 0);
  }
  std::error_code ec;
  fs::remove_all(a.dir, ec);
}

v1::CreateContainerRequest Spec(const std::string& id, std::vector<std::string> args) {
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
  for (std::string& s : args) req.mutable_process()->add_args(std::move(s));
  req.mutable_process()->add_env("PATH=/bin");
  return req;
}

uint64_t AgentRss(Agent& a) {
  absl::StatusOr<v1::HealthResponse> h = a.Call<v1::HealthResponse>("Health", v1::HealthRequest());
  return h.ok() ? h->agent_rss_bytes() : 0;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int Main(int argc, char** argv) {
  int iterations = 50;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc &&
        absl::SimpleAtoi(argv[i + 1], &iterations) && iterations > 0) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: vessel_agent_bench [--iterations N]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "vessel_agent_bench: needs root (namespaces, mounts, cgroups)\n");
    return 1;
  }
  utsname u{};
  ::uname(&u);
  bool pvm = fs::exists("/sys/module/kvm_pvm");
  std::printf("# vessel-agent host-mode bench: platform=host-mode (no VM) kernel=%s cpus=%u%s\n",
              u.release, std::thread::hardware_concurrency(),
              pvm ? " (build VM of this project: a 2-core nested guest)" : "");
  Agent a;
  if (!StartAgent(a)) {
    std::fprintf(stderr, "vessel_agent_bench: the agent did not start serving\n");
    StopAgent(a);
    return 1;
  }
  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("bench");
  if (!a.Call<Empty>("CreateSandbox", sandbox).ok()) {
    std::fprintf(stderr, "vessel_agent_bench: CreateSandbox failed\n");
    StopAgent(a);
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::map<std::string, std::string> status =
      StatusFields(absl::StrCat("/proc/", a.pid, "/status"));
  std::printf("agent_rss_idle_kib %llu  (VmRSS %s, RssAnon %s, RssFile %s, threads %s)\n",
              static_cast<unsigned long long>(AgentRss(a) / 1024), status["VmRSS"].c_str(),
              status["RssAnon"].c_str(), status["RssFile"].c_str(), status["Threads"].c_str());
  PrintRssBreakdown(a.pid);

  // Latency: CreateContainer -> StartContainer returned (the init has exec'd `sleep`).
  std::vector<double> create_ms, start_ms, total_ms;
  for (int i = 0; i < iterations; ++i) {
    std::string id = absl::StrCat("lat", i);
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<v1::CreateContainerResponse> c =
        a.Call<v1::CreateContainerResponse>("CreateContainer", Spec(id, {"sleep", "100"}));
    auto t1 = std::chrono::steady_clock::now();
    v1::StartContainerRequest start;
    start.set_container_id(id);
    absl::Status s = c.ok() ? a.Call<Empty>("StartContainer", start).status() : c.status();
    auto t2 = std::chrono::steady_clock::now();
    if (!s.ok()) {
      std::fprintf(stderr, "vessel_agent_bench: %s: %s\n", id.c_str(), s.ToString().c_str());
      StopAgent(a);
      return 1;
    }
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    create_ms.push_back(ms(t1 - t0));
    start_ms.push_back(ms(t2 - t1));
    total_ms.push_back(ms(t2 - t0));
    v1::SignalProcessRequest kill;
    kill.set_container_id(id);
    kill.set_signal(SIGKILL);
    (void)a.Call<Empty>("SignalProcess", kill);
    v1::WaitProcessRequest wait;
    wait.set_container_id(id);
    (void)a.Call<v1::WaitProcessResponse>("WaitProcess", wait);
    v1::RemoveContainerRequest remove;
    remove.set_container_id(id);
    (void)a.Call<Empty>("RemoveContainer", remove);
  }
  std::printf(
      "create_to_running_ms p50 %.2f p90 %.2f (n=%d; CreateContainer p50 %.2f, "
      "StartContainer p50 %.2f)\n",
      Percentile(total_ms, 0.5), Percentile(total_ms, 0.9), iterations, Percentile(create_ms, 0.5),
      Percentile(start_ms, 0.5));

  for (int i = 0; i < 10; ++i) {
    std::string id = absl::StrCat("run", i);
    v1::StartContainerRequest start;
    start.set_container_id(id);
    if (!a.Call<v1::CreateContainerResponse>("CreateContainer", Spec(id, {"sleep", "1000"})).ok() ||
        !a.Call<Empty>("StartContainer", start).ok()) {
      std::fprintf(stderr, "vessel_agent_bench: container %s did not start\n", id.c_str());
      StopAgent(a);
      return 1;
    }
  }
  status = StatusFields(absl::StrCat("/proc/", a.pid, "/status"));
  std::printf("agent_rss_10_containers_kib %llu  (VmRSS %s, threads %s)\n",
              static_cast<unsigned long long>(AgentRss(a) / 1024), status["VmRSS"].c_str(),
              status["Threads"].c_str());
  StopAgent(a);  // SIGTERM: the agent kills and removes the containers
  return 0;
}

}  // namespace
}  // namespace vessel::agent

int main(int argc, char** argv) { return vessel::agent::Main(argc, argv); }
