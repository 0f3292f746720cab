// ttrpc unary round trips over a Unix socket: vessel's C++ ttrpc against containerd's Go ttrpc
// (the ttrpc-peer program from tests/rpc/interop), all four client/server pairings measured in the
// same run. Reports p50/p99 latency, calls/s and, for our client+server, heap allocations per call.
// Goal: ours ≤ 0.5x Go's p50 latency.
#include <google/protobuf/wrappers.pb.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/typed.h"

// Counts heap allocations in this process (allocations per call).
static std::atomic<uint64_t> g_allocations{0};
void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace vessel::ttrpc {
namespace {

using ::google::protobuf::StringValue;

constexpr char kSvc[] = "vessel.test.v1.Echo";
const std::string kPeer = VESSEL_TTRPC_PEER;

struct Latency {
  double p50_us = 0, p99_us = 0, calls_per_s = 0;
};
std::map<std::string, Latency>& Results() {
  static auto* r = new std::map<std::string, Latency>;
  return *r;
}

std::string SocketPath(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          absl::StrCat("vessel-ttrpc-bench-", tag, "-", ::getpid(), ".sock")).string();
}

// Our Echo server on `path`, for as long as it lives.
struct OurServer {
  explicit OurServer(const std::string& path) : server(io.io()) {
    (void)RegisterUnary<StringValue, StringValue>(
        server, kSvc, "Echo", [](const CallContext&, const StringValue& r) -> absl::StatusOr<StringValue> { return r; });
    absl::Status s = server.ListenUnix(path);
    if (!s.ok()) std::fprintf(stderr, "bench: %s\n", std::string(s.message()).c_str());
  }
  IoThread io;
  Server server;
};

// The Go Echo server on `path`.
struct GoServer {
  explicit GoServer(const std::string& path) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid = ::fork();
    if (pid == 0) {
      ::dup2(out[1], 1);
      ::execl(kPeer.c_str(), kPeer.c_str(), "serve", "-socket", path.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(out[1]);
    char buf[16];
    ready = ::read(out[0], buf, sizeof(buf)) > 0;
    ::close(out[0]);
  }
  ~GoServer() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  pid_t pid = -1;
  bool ready = false;
};

Latency Summarize(std::vector<double>& us, double seconds) {
  std::sort(us.begin(), us.end());
  return Latency{us[us.size() / 2], us[us.size() * 99 / 100], us.size() / seconds};
}

// Our client: timed in the benchmark loop.
void RunOurClient(benchmark::State& state, const std::string& path, const std::string& label) {
  IoThread io;
  auto client = Client::ConnectUnix(io.io(), path);
  if (!client.ok()) {
    state.SkipWithError(std::string(client.status().message()).c_str());
    return;
  }
  StringValue req;
  req.set_value(std::string(16, 'x'));
  std::vector<double> us;
  us.reserve(1 << 20);
  uint64_t alloc_before = g_allocations.load();
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    auto t = std::chrono::steady_clock::now();
    absl::StatusOr<StringValue> r = CallTyped<StringValue>(**client, kSvc, "Echo", req);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count());
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t allocs = g_allocations.load() - alloc_before;
  Latency l = Summarize(us, seconds);
  Results()[label] = l;
  state.counters["p50_us"] = l.p50_us;
  state.counters["p99_us"] = l.p99_us;
  state.counters["calls_per_s"] = l.calls_per_s;
  state.counters["allocs_per_call"] = static_cast<double>(allocs) / us.size();
}

// The Go client: runs `ttrpc-peer bench` and reports what it measured.
void RunGoClient(benchmark::State& state, const std::string& path, const std::string& label) {
  for (auto _ : state) {
    FILE* f = ::popen((kPeer + " bench -n 20000 -socket " + path).c_str(), "r");
    char line[256] = {};
    bool got = f && std::fgets(line, sizeof(line), f);
    if (f) ::pclose(f);
    Latency l;
    if (!got || std::sscanf(line, "calls=%*d p50_us=%lf p99_us=%lf calls_per_s=%lf", &l.p50_us,
                            &l.p99_us, &l.calls_per_s) != 3) {
      state.SkipWithError("ttrpc-peer bench printed nothing usable");
      return;
    }
    Results()[label] = l;
    state.counters["p50_us"] = l.p50_us;
    state.counters["p99_us"] = l.p99_us;
    state.counters["calls_per_s"] = l.calls_per_s;
  }
}

bool HavePeer(benchmark::State& state) {
  if (kPeer.empty() || !std::filesystem::exists(kPeer)) {
    state.SkipWithError("Go ttrpc peer not built (install golang-go golang-github-containerd-ttrpc-dev)");
    return false;
  }
  return true;
}

void BM_OurClient_OurServer(benchmark::State& state) {
  std::string path = SocketPath("oo");
  OurServer server(path);
  RunOurClient(state, path, "ours->ours");
  std::filesystem::remove(path);
}
BENCHMARK(BM_OurClient_OurServer)->Iterations(20000)->UseRealTime();

void BM_GoClient_GoServer(benchmark::State& state) {
  if (!HavePeer(state)) return;
  std::string path = SocketPath("gg");
  GoServer server(path);
  RunGoClient(state, path, "go->go");
  std::filesystem::remove(path);
}
BENCHMARK(BM_GoClient_GoServer)->Iterations(1)->UseRealTime();

void BM_GoClient_OurServer(benchmark::State& state) {
  if (!HavePeer(state)) return;
  std::string path = SocketPath("go");
  OurServer server(path);
  RunGoClient(state, path, "go->ours");
  std::filesystem::remove(path);
}
BENCHMARK(BM_GoClient_OurServer)->Iterations(1)->UseRealTime();

void BM_OurClient_GoServer(benchmark::State& state) {
  if (!HavePeer(state)) return;
  std::string path = SocketPath("og");
  GoServer server(path);
  RunOurClient(state, path, "ours->go");
  std::filesystem::remove(path);
}
BENCHMARK(BM_OurClient_GoServer)->Iterations(20000)->UseRealTime();

}  // namespace
}  // namespace vessel::ttrpc

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  auto& r = vessel::ttrpc::Results();
  if (r.count("ours->ours") && r.count("go->go")) {
    std::printf("ttrpc p50 latency, same run: ours %.1f us, Go %.1f us, ratio ours/Go %.2f (goal <= 0.50)\n",
                r["ours->ours"].p50_us, r["go->go"].p50_us, r["ours->ours"].p50_us / r["go->go"].p50_us);
  }
  return 0;
}
