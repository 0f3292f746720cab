// VMM-side costs, measured with Google Benchmark. Prints numbers; asserts nothing. Each result is
// labelled with the platform it ran on (hardware KVM or kvm_pvm, the software nested KVM).
//   VM create -> first KVM_RUN (128 MiB, 1 vCPU): wall and CPU time (targets: <= 5 ms, <= 2 ms)
//   guest memory setup vs size, kernel load ELF vs bzImage, VMM RSS overhead (target <= 3 MiB)
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "arch/x86_64/kernel_loader.h"
#include "benchmark/benchmark.h"
#include "tests/vmm/tiny_guest.h"
#include "vmm/base/file_util.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/kvm/platform.h"
#include "vmm/machine.h"
#include "vmm/memory/guest_memory.h"

namespace vessel {
namespace {

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

std::string TinyKernelPath() {
  static const std::string path =
      testing::WriteTempFile("bench-kernel", testing::TinyElfKernel(testing::PowerOffCode()));
  return path;
}

void Label(benchmark::State& state) { state.SetLabel(DetectPlatform().Name()); }

// Machine::Create + Start until the BSP thread enters KVM_RUN.
void BM_CreateToFirstKvmRun(benchmark::State& state) {
  double cpu_total = 0;
  for (auto _ : state) {
    MachineConfig c;
    c.kernel_path = TinyKernelPath();
    c.mem_mib = static_cast<uint64_t>(state.range(0));
    double cpu0 = ThreadCpuSeconds();
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
    if (!m.ok() || !(*m)->Start().ok()) {
      state.SkipWithError(m.ok() ? "start failed" : std::string(m.status().message()).c_str());
      return;
    }
    cpu_total += ThreadCpuSeconds() - cpu0;
    (*m)->Wait();
    BootTimeline t = (*m)->timeline();
    state.SetIterationTime(t.first_run ? t.first_run->count() / 1e9 : 0);
  }
  state.counters["create_cpu_ms"] = benchmark::Counter(cpu_total * 1e3 / state.iterations());
  Label(state);
}
BENCHMARK(BM_CreateToFirstKvmRun)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);

// Anonymous guest RAM mapped and registered as KVM memory slots.
void BM_GuestMemorySetup(benchmark::State& state) {
  absl::StatusOr<KvmSystem> kvm = KvmSystem::Open();
  if (!kvm.ok()) {
    state.SkipWithError(std::string(kvm.status().message()).c_str());
    return;
  }
  const uint64_t bytes = static_cast<uint64_t>(state.range(0)) << 20;
  for (auto _ : state) {
    absl::StatusOr<KvmVm> vm = kvm->CreateVm();
    absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, bytes}});
    if (!vm.ok() || !mem.ok()) {
      state.SkipWithError("setup failed");
      return;
    }
    const GuestRegion& r = mem->regions()[0];
    benchmark::DoNotOptimize(vm->SetUserMemoryRegion(0, r.gpa, r.size, r.host));
  }
  Label(state);
}
BENCHMARK(BM_GuestMemorySetup)->Arg(128)->Arg(1024)->Arg(2048)->Unit(benchmark::kMicrosecond);

// Parse + copy of the project's guest kernel into guest RAM (file already in memory).
void BM_KernelLoad(benchmark::State& state, const char* file_name) {
  std::string path = std::string(VESSEL_GUEST_DIR) + "/" + file_name;
  absl::StatusOr<std::vector<uint8_t>> file = ReadFileBytes(path, 512 << 20);
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 256ull << 20}});
  if (!file.ok() || !mem.ok()) {
    state.SkipWithError(("cannot read " + path + ": run ./setup.sh").c_str());
    return;
  }
  for (auto _ : state) {
    absl::StatusOr<x86::KernelImage> image = x86::ParseKernel(*file);
    if (!image.ok() || !x86::LoadKernel(*image, *file, *mem).ok()) {
      state.SkipWithError("load failed");
      return;
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(file->size()));
  Label(state);
}
BENCHMARK_CAPTURE(BM_KernelLoad, elf_vmlinux, "vmlinux")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KernelLoad, bzImage, "bzImage")->Unit(benchmark::kMillisecond);

uint64_t RssBytes() {
  long pages = 0, resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  fclose(f);
  return static_cast<uint64_t>(resident) * sysconf(_SC_PAGESIZE);
}

uint64_t ResidentGuestBytes(const GuestMemory& mem) {
  const long page = sysconf(_SC_PAGESIZE);
  uint64_t total = 0;
  for (const GuestRegion& r : mem.regions()) {
    std::vector<unsigned char> vec((r.size + page - 1) / page);
    if (mincore(r.host, r.size, vec.data()) != 0) continue;
    for (unsigned char v : vec) total += (v & 1) ? page : 0;
  }
  return total;
}

// Process RSS growth for a running VM minus the guest pages it touched.
void BM_VmmRssOverhead(benchmark::State& state) {
  double overhead = 0, delta = 0, guest_kib = 0;
  for (auto _ : state) {
    const uint64_t before = RssBytes();
    MachineConfig c;
    const std::string kernel = testing::WriteTempFile("bench-spin", testing::TinyElfKernel(testing::SpinCode()));
    c.kernel_path = kernel;
    c.mem_mib = 128;
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(std::move(c));
    unlink(kernel.c_str());
    if (!m.ok() || !(*m)->Start().ok()) {
      state.SkipWithError("machine failed");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const uint64_t after = RssBytes();
    const uint64_t guest = ResidentGuestBytes((*m)->memory());
    delta = (static_cast<double>(after) - before) / 1024.0;
    guest_kib = guest / 1024.0;
    overhead = delta - guest_kib;
    (*m)->Stop();
    (*m)->Wait();
  }
  state.counters["rss_overhead_kib"] = overhead;
  state.counters["rss_delta_kib"] = delta;
  state.counters["guest_resident_kib"] = guest_kib;
  Label(state);
}
BENCHMARK(BM_VmmRssOverhead)->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace vessel

BENCHMARK_MAIN();
