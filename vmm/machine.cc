#include "vmm/machine.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "devices/virtio/mmio_transport.h"
#include "vmm/kvm/irqfd_line.h"
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <sys/eventfd.h>
#include "vmm/base/errors.h"
#include "vmm/base/file_util.h"
#include "vmm/base/log.h"
#include "vmm/seccomp/seccomp.h"
#include "vmm/snapshot/memory_file.h"
#include "vmm/snapshot/state_file.h"

namespace vessel {
namespace {

constexpr uint64_t kMaxKernelBytes = 512ull << 20;
constexpr uint64_t kMinMemMib = 16;
constexpr uint64_t kMaxMemMib = 1ull << 20;  // 1 TiB
// The signal that kicks a vCPU thread out of KVM_RUN.
const int kKickSignal = SIGRTMIN;
constexpr auto kJoinTimeout = std::chrono::seconds(5);

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = [](int) {};  // only interrupts KVM_RUN; no SA_RESTART
    sigemptyset(&sa.sa_mask);
    sigaction(kKickSignal, &sa, nullptr);
  });
}

const char* KvmExitName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_IO: return "io";
    case KVM_EXIT_MMIO: return "mmio";
    case KVM_EXIT_HLT: return "hlt";
    case KVM_EXIT_SHUTDOWN: return "shutdown";
    case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
    case KVM_EXIT_INTR: return "intr";
    case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
    case KVM_EXIT_SYSTEM_EVENT: return "system_event";
    case KVM_EXIT_DEBUG: return "debug";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "irq_window_open";
    default: return nullptr;
  }
}

}  // namespace

absl::string_view ExitReasonName(ExitReason reason) {
  switch (reason) {
    case ExitReason::kPoweroff: return "poweroff";
    case ExitReason::kReboot: return "reboot";
    case ExitReason::kCrash: return "crash";
    case ExitReason::kHostStop: return "host stop";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Create(MachineConfig config) {
  std::unique_ptr<Machine> m(new Machine());
  m->created_ = std::chrono::steady_clock::now();
  m->config_ = std::move(config);
  absl::Status s = m->Build();
  if (!s.ok()) return s;
  m->setup_ = m->SinceCreate();
  return m;
}

std::chrono::nanoseconds Machine::SinceCreate() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                              created_);
}

absl::Status Machine::Build() {
  const MachineConfig& c = config_;
  platform_ = c.platform.has_value() ? *c.platform : DetectPlatform();
  arch_ = arch::CreateHostArch(platform_);
  if (c.vcpus == 0 || c.vcpus > arch_->max_vcpus()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vcpus ", c.vcpus, " is out of range 1..", arch_->max_vcpus()));
  }
  if (c.mem_mib < kMinMemMib || c.mem_mib > kMaxMemMib) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mem-mib ", c.mem_mib, " is out of range ", kMinMemMib, "..", kMaxMemMib));
  }
  if (c.kernel_path.empty() && restore_ == nullptr) {
    return absl::InvalidArgumentError("no kernel given: pass --kernel PATH");
  }
  if (c.seccomp) VESSEL_RETURN_IF_ERROR(seccomp::CheckSupported());

  VESSEL_ASSIGN_OR_RETURN(KvmSystem kvm, KvmSystem::Open());
  kvm_.emplace(std::move(kvm));
  int max_vcpus = std::max(kvm_->CheckExtension(KVM_CAP_MAX_VCPUS), kvm_->CheckExtension(KVM_CAP_NR_VCPUS));
  if (max_vcpus > 0 && c.vcpus > static_cast<uint32_t>(max_vcpus)) {
    return absl::InvalidArgumentError(absl::StrCat("--vcpus ", c.vcpus, ": this host's KVM allows ", max_vcpus));
  }
  VESSEL_ASSIGN_OR_RETURN(KvmVm vm, kvm_->CreateVm());
  vm_.emplace(std::move(vm));
  VESSEL_RETURN_IF_ERROR(arch_->SetUpVm(*kvm_, *vm_));

  // Guest RAM.
  const uint64_t mem_bytes = c.mem_mib << 20;
  VESSEL_ASSIGN_OR_RETURN(std::vector<GuestRange> ranges, arch_->RamRanges(mem_bytes));
  GuestMemory::Options memory_options;
  memory_options.hugepages = c.hugepages;
  if (restore_ != nullptr) {
    // The snapshot's layout must be the one this shape gives.
    if (ranges.size() != static_cast<size_t>(restore_->memory_size())) {
      return absl::DataLossError(absl::StrCat("snapshot: ", restore_->memory_size(),
                                              " RAM regions, this VM shape has ", ranges.size()));
    }
    for (size_t i = 0; i < ranges.size(); ++i) {
      const auto& r = restore_->memory(static_cast<int>(i));
      if (r.gpa() != ranges[i].gpa || r.size() != ranges[i].size) {
        return absl::DataLossError(absl::StrFormat(
            "snapshot: RAM region %d is %#x+%#x, this VM shape has %#x+%#x", i, r.gpa(), r.size(),
            ranges[i].gpa, ranges[i].size));
      }
    }
    memory_options.hugepages = false;
    memory_options.backing_fd = restore_memory_fd_;
    memory_options.backing_offsets = restore_memory_offsets_;
  }
  VESSEL_ASSIGN_OR_RETURN(GuestMemory memory, GuestMemory::Create(ranges, memory_options));
  memory_.emplace(std::move(memory));
  for (size_t i = 0; i < memory_->regions().size(); ++i) {
    const GuestRegion& r = memory_->regions()[i];
    VESSEL_RETURN_IF_ERROR(vm_->SetUserMemoryRegion(static_cast<uint32_t>(i), r.gpa, r.size, r.host));
  }

  // vCPUs, then the interrupt controller (arm64's GIC needs every vCPU; irqfds need the GIC).
  for (uint32_t id = 0; id < c.vcpus; ++id) {
    VESSEL_ASSIGN_OR_RETURN(KvmVcpu vcpu, vm_->CreateVcpu(id));
    VESSEL_RETURN_IF_ERROR(arch_->InitVcpu(*vm_, vcpu));
    vcpus_.push_back(std::move(vcpu));
  }
  VESSEL_RETURN_IF_ERROR(arch_->SetUpIrqchip(*vm_, c.vcpus));

  VESSEL_RETURN_IF_ERROR(SetUpDevices());
  if (restore_ != nullptr) {
    VESSEL_RETURN_IF_ERROR(RestoreDevicesAndVcpus());
    exit_counts_.assign(c.vcpus, {});
    return absl::OkStatus();
  }

  // Kernel, initrd, command line, boot structures.
  // Mapped, not read into the heap: a copy there stays with the allocator after it is freed
  // (~20 MiB of RSS per sandbox created in a long-lived process).
  absl::StatusOr<ScopedMmap> kernel_file = MapFileReadOnly(c.kernel_path, kMaxKernelBytes);
  if (!kernel_file.ok()) {
    return absl::Status(kernel_file.status().code(),
                        absl::StrCat("kernel: ", kernel_file.status().message()));
  }
  ScopedMmap initrd;
  if (!c.initrd_path.empty()) {
    absl::StatusOr<ScopedMmap> file = MapFileReadOnly(c.initrd_path, mem_bytes);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("initrd: ", file.status().message(),
                                       " (it must fit in guest RAM: raise --mem-mib)"));
    }
    initrd = std::move(*file);
  }
  cmdline_ = arch_->KernelCmdline(virtio_windows_, c.extra_cmdline);
  arch::BootRequest boot;
  boot.vcpus = c.vcpus;
  boot.mem_bytes = mem_bytes;
  boot.kernel_path = c.kernel_path;
  boot.kernel = absl::Span<const uint8_t>(kernel_file->data(), kernel_file->size());
  boot.initrd = absl::Span<const uint8_t>(initrd.data(), initrd.size());
  boot.cmdline = cmdline_;
  boot.virtio = virtio_windows_;
  VESSEL_RETURN_IF_ERROR(arch_->LoadBoot(boot, *memory_));

  for (KvmVcpu& vcpu : vcpus_) {
    absl::Status s = arch_->SetUpVcpu(vcpu);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("vCPU ", vcpu.id(), ": ", s.message()));
  }
  exit_counts_.assign(c.vcpus, {});
  return absl::OkStatus();
}

absl::Status Machine::SetUpDevices() {
  // The event loop and device threads started below install their seccomp filters.
  seccomp::ScopedThreadFilters thread_filters(config_.seccomp);
  auto sink = config_.console_sink;
  arch::PlatformDeviceContext ctx;
  ctx.vm = &*vm_;
  ctx.io_bus = &io_bus_;
  ctx.mmio_bus = &mmio_bus_;
  ctx.console_sink = [this, sink](absl::string_view bytes) {
    int64_t expected = -1;
    first_console_ns_.compare_exchange_strong(expected, SinceCreate().count());
    if (sink) sink(bytes);
  };
  ctx.poweroff = [this](std::string detail) { End(ExitReason::kPoweroff, std::move(detail)); };
  ctx.reset = [this](std::string detail) { End(ExitReason::kReboot, std::move(detail)); };
  ctx.created = created_;
  VESSEL_ASSIGN_OR_RETURN(arch::PlatformDevices platform_devices, arch_->AddPlatformDevices(ctx));
  serial_ = std::move(platform_devices.console);
  debug_port_ = std::move(platform_devices.debug_port);

  // virtio-mmio devices: one window each (arch_->VirtioWindowAt); the disks first (/dev/vda, ...),
  // then vsock, the network devices (eth0, ...), the shares.
  const size_t virtio_count = config_.disks.size() + (config_.vsock.has_value() ? 1 : 0) +
                              config_.nets.size() + config_.shares.size();
  if (virtio_count > arch_->max_virtio_devices()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_.disks.size(), " disks, ", config_.vsock.has_value() ? 1 : 0, " vsock, ",
        config_.nets.size(), " network devices and ", config_.shares.size(),
        " shares given; at most ", arch_->max_virtio_devices(), " virtio devices fit"));
  }
  if (virtio_count > 0) event_loop_ = std::make_unique<EventLoop>();
  for (const block::BlockConfig& disk_config : config_.disks) {
    absl::StatusOr<std::unique_ptr<block::BlockDevice>> disk = block::BlockDevice::Create(disk_config);
    if (!disk.ok()) return disk.status();
    VESSEL_RETURN_IF_ERROR(AddVirtioDevice(std::move(*disk), absl::StrCat("virtio-blk ", disk_config.path)));
  }
  if (config_.vsock.has_value()) {
    absl::StatusOr<std::unique_ptr<vsock::VsockDevice>> dev = vsock::VsockDevice::Create(*config_.vsock);
    if (!dev.ok()) {
      return absl::Status(dev.status().code(), absl::StrCat("--vsock: ", dev.status().message()));
    }
    vsock_ = dev->get();
    VESSEL_RETURN_IF_ERROR(AddVirtioDevice(
        std::move(*dev), absl::StrCat("virtio-vsock cid ", config_.vsock->guest_cid)));
  }
  for (const net::NetConfig& net_config : config_.nets) {
    absl::StatusOr<std::unique_ptr<net::NetDevice>> dev = net::NetDevice::Create(net_config);
    if (!dev.ok()) {
      return absl::Status(dev.status().code(), absl::StrCat("--net ", net_config.tap_name, ": ",
                                                            dev.status().message()));
    }
    nets_.push_back(dev->get());
    VESSEL_RETURN_IF_ERROR(AddVirtioDevice(std::move(*dev), absl::StrCat("virtio-net ", net_config.tap_name)));
  }
  for (const fs::FsConfig& share : config_.shares) {
    absl::StatusOr<std::unique_ptr<fs::FsDevice>> dev = fs::FsDevice::Create(share);
    if (!dev.ok()) {
      return absl::Status(dev.status().code(), absl::StrCat("--share ", share.tag, "=", share.shared_dir,
                                                            ": ", dev.status().message()));
    }
    shares_.push_back(dev->get());
    VESSEL_RETURN_IF_ERROR(AddVirtioDevice(std::move(*dev), absl::StrCat("virtio-fs ", share.tag)));
  }
  return absl::OkStatus();
}

absl::Status Machine::AddVirtioDevice(std::unique_ptr<virtio::VirtioDevice> device, std::string name) {
  VESSEL_ASSIGN_OR_RETURN(arch::VirtioWindow window, arch_->VirtioWindowAt(virtio_devices_));
  if (window.size < virtio::MmioTransport::kWindowSize) {
    return absl::InternalError(absl::StrCat("virtio-mmio window of ", window.size,
                                            " bytes is smaller than the transport's registers"));
  }
  ++virtio_devices_;
  const uint64_t base = window.base;
  // Interrupts through an irqfd: injected in the kernel, no ioctl per interrupt.
  ScopedFd irq_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!irq_fd.valid()) return ErrnoStatus("eventfd for a virtio interrupt");
  VESSEL_RETURN_IF_ERROR(vm_->RegisterIrqfd(irq_fd.get(), window.gsi));
  auto transport = std::make_shared<virtio::MmioTransport>(
      name, std::move(device), &*memory_, std::make_shared<IrqfdLine>(irq_fd.get()));
  eventfds_.push_back(std::move(irq_fd));
  VESSEL_RETURN_IF_ERROR(mmio_bus_.Insert(transport, base, virtio::MmioTransport::kWindowSize, name));
  transports_.push_back(transport);
  transport_names_.push_back(name);
  // QueueNotify through ioeventfds (datamatch on the queue index): no MMIO exit per kick.
  for (uint32_t q = 0; q < transport->queue_count(); ++q) {
    ScopedFd kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!kick.valid()) return ErrnoStatus("eventfd for a virtio queue notification");
    VESSEL_RETURN_IF_ERROR(vm_->RegisterIoeventfd(base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, q, kick.get()));
    event_loop_->WatchEventfd(kick.get(), [transport, q] { transport->HandleNotify(q); });
    eventfds_.push_back(std::move(kick));
  }
  virtio_windows_.push_back(window);
  return absl::OkStatus();
}

Machine::~Machine() {
  Stop();
  JoinAll();
}

absl::Status Machine::Start() {
  std::lock_guard lock(mu_);
  if (!threads_.empty()) return absl::FailedPreconditionError("machine already started");
  if (exit_.has_value()) return absl::FailedPreconditionError("machine already ended");
  InstallKickHandler();
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    running_threads_.fetch_add(1);
    threads_.emplace_back([this, i] { RunVcpu(i); });
  }
  return absl::OkStatus();
}

void Machine::RunVcpu(size_t index) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  pthread_setname_np(pthread_self(), absl::StrCat("vcpu", index).c_str());
  if (config_.seccomp) seccomp::ThreadFilter(seccomp::ThreadKind::kVcpu).Install();
  KvmVcpu& vcpu = vcpus_[index];
  if (index == 0) {
    int64_t expected = -1;
    first_run_ns_.compare_exchange_strong(expected, SinceCreate().count());
  }
  // Started while paused (e.g. right after a restore that is to be inspected): park before running.
  if (pause_requested_.load(std::memory_order_acquire)) ParkIfPaused(index);
  while (!stopping_.load(std::memory_order_acquire)) {
    int err = vcpu.Run();
    if (err == EINTR || err == EAGAIN) {
      // A kick. With immediate_exit set, KVM_RUN completed any pending I/O first: the vCPU stands
      // at an instruction boundary, where Pause() wants it.
      if (pause_requested_.load(std::memory_order_acquire)) ParkIfPaused(index);
      continue;
    }
    if (err != 0) {
      End(ExitReason::kCrash, absl::StrCat("vCPU ", index, ": KVM_RUN failed: ", std::strerror(err)));
      break;
    }
    uint32_t reason = vcpu.run()->exit_reason;
    ++exit_counts_[index][reason < 64 ? reason : 63];
    arch_->AfterExit();
    if (!HandleExit(vcpu)) break;
  }
  running_threads_.fetch_sub(1);
}

bool Machine::HandleExit(KvmVcpu& vcpu) {
  kvm_run* run = vcpu.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      HandleIo(run);
      return true;
    case KVM_EXIT_MMIO:
      HandleMmio(run);
      return true;
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_HLT:
      End(ExitReason::kCrash, absl::StrCat("vCPU ", vcpu.id(), " halted (HLT) with no way to wake: ",
                                           DescribeVcpu(vcpu)));
      return false;
    case KVM_EXIT_SHUTDOWN:
      End(ExitReason::kCrash, absl::StrCat("vCPU ", vcpu.id(), " triple fault (KVM_EXIT_SHUTDOWN): ",
                                           DescribeVcpu(vcpu)));
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      End(ExitReason::kCrash,
          absl::StrFormat("vCPU %d: KVM_EXIT_FAIL_ENTRY, hardware entry failure reason %#x: %s",
                          vcpu.id(), run->fail_entry.hardware_entry_failure_reason, DescribeVcpu(vcpu)));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      absl::StatusOr<bool> handled = arch_->HandleInternalError(vcpu);
      if (handled.ok() && *handled) return true;
      if (!handled.ok()) LogError(arch_->name(), " internal-error handler: ", handled.status().message());
      End(ExitReason::kCrash, absl::StrCat("vCPU ", vcpu.id(), ": KVM_EXIT_INTERNAL_ERROR suberror ",
                                           run->internal.suberror, ": ", DescribeVcpu(vcpu)));
      return false;
    }
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: End(ExitReason::kPoweroff, "guest powered off (system event)"); break;
        case KVM_SYSTEM_EVENT_RESET: End(ExitReason::kReboot, "guest reset (system event)"); break;
        default: End(ExitReason::kCrash, absl::StrCat("guest system event ", run->system_event.type)); break;
      }
      return false;
    default: {
      const char* name = KvmExitName(run->exit_reason);
      End(ExitReason::kCrash, absl::StrCat("vCPU ", vcpu.id(), ": unhandled KVM exit ",
                                           name ? name : absl::StrCat(run->exit_reason), ": ",
                                           DescribeVcpu(vcpu)));
      return false;
    }
  }
}

void Machine::HandleIo(kvm_run* run) {
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  const size_t size = run->io.size;
  for (uint32_t i = 0; i < run->io.count; ++i, data += size) {
    bool handled;
    if (run->io.direction == KVM_EXIT_IO_OUT) {
      handled = io_bus_.Write(run->io.port, absl::Span<const uint8_t>(data, size));
    } else {
      handled = io_bus_.Read(run->io.port, absl::Span<uint8_t>(data, size));
      if (!handled) std::memset(data, 0xff, size);
    }
    if (!handled && unhandled_io_log_.Allow()) {
      // Linux probes absent legacy ports (PCI config 0xcf8, DMA page 0x87): information, not a fault.
      LogInfo(absl::StrFormat("guest %s unhandled I/O port %#x (size %d); ignored (%d so far)",
                                 run->io.direction == KVM_EXIT_IO_OUT ? "wrote" : "read",
                                 run->io.port, size, unhandled_io_log_.count()));
    }
  }
}

void Machine::HandleMmio(kvm_run* run) {
  const size_t len = std::min<size_t>(run->mmio.len, sizeof(run->mmio.data));
  bool handled;
  if (run->mmio.is_write) {
    handled = mmio_bus_.Write(run->mmio.phys_addr, absl::Span<const uint8_t>(run->mmio.data, len));
  } else {
    handled = mmio_bus_.Read(run->mmio.phys_addr, absl::Span<uint8_t>(run->mmio.data, len));
    if (!handled) std::memset(run->mmio.data, 0xff, len);
  }
  if (!handled && unhandled_mmio_log_.Allow()) {
    LogWarning(absl::StrFormat("guest %s unmapped MMIO %#x (len %d); ignored (%d so far)",
                               run->mmio.is_write ? "wrote" : "read", run->mmio.phys_addr, len,
                               unhandled_mmio_log_.count()));
  }
}

std::string Machine::DescribeVcpu(const KvmVcpu& vcpu) const {
  return arch_->DescribeVcpu(vcpu, *memory_);
}

void Machine::End(ExitReason reason, std::string detail) {
  {
    std::lock_guard lock(mu_);
    if (exit_.has_value()) return;
    exit_ = MachineExit{reason, std::move(detail)};
    ended_ns_.store(SinceCreate().count());
    stopping_.store(true, std::memory_order_release);
    KickAll();
  }
  cv_.notify_all();
}

void Machine::KickAll() {
  // Requires mu_. immediate_exit covers a thread that is about to enter KVM_RUN; the signal one
  // that is inside it.
  for (size_t i = 0; i < threads_.size(); ++i) {
    vcpus_[i].run()->immediate_exit = 1;
    pthread_kill(threads_[i].native_handle(), kKickSignal);
  }
}

void Machine::Stop() { End(ExitReason::kHostStop, "stopped by the host"); }

// --- Snapshots ---

void Machine::ParkIfPaused(size_t index) {
  std::unique_lock lock(mu_);
  if (!pause_requested_.load()) return;
  ++parked_vcpus_;
  cv_.notify_all();
  cv_.wait(lock, [this] { return !pause_requested_.load() || stopping_.load(); });
  --parked_vcpus_;
  vcpus_[index].run()->immediate_exit = 0;
}

absl::Status Machine::Pause() {
  constexpr auto kPauseTimeout = std::chrono::seconds(5);
  {
    std::unique_lock lock(mu_);
    if (exit_.has_value()) return absl::FailedPreconditionError("cannot pause: the machine has ended");
    if (paused_) return absl::OkStatus();
    pause_requested_.store(true, std::memory_order_release);
    if (!threads_.empty()) {
      KickAll();
      const bool parked = cv_.wait_for(lock, kPauseTimeout, [this] {
        return parked_vcpus_ == threads_.size() || exit_.has_value();
      });
      if (!parked || exit_.has_value()) {
        pause_requested_.store(false);
        for (KvmVcpu& v : vcpus_) v.run()->immediate_exit = 0;
        cv_.notify_all();
        return exit_.has_value()
                   ? absl::FailedPreconditionError("cannot pause: the machine ended meanwhile")
                   : absl::DeadlineExceededError(absl::StrCat(
                         "pause: ", threads_.size() - parked_vcpus_, " vCPU(s) did not stop within ",
                         kPauseTimeout.count(), " s"));
      }
    }
  }
  for (size_t i = 0; i < transports_.size(); ++i) {
    absl::Status s = transports_[i]->Pause();
    if (!s.ok()) {
      for (size_t j = 0; j < i; ++j) transports_[j]->Unpause();
      std::lock_guard lock(mu_);
      pause_requested_.store(false);
      cv_.notify_all();
      return absl::Status(s.code(), absl::StrCat("pause ", transport_names_[i], ": ", s.message()));
    }
  }
  std::lock_guard lock(mu_);
  paused_ = true;
  return absl::OkStatus();
}

absl::Status Machine::Resume() {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return absl::OkStatus();
  }
  for (auto& t : transports_) t->Unpause();
  std::lock_guard lock(mu_);
  paused_ = false;
  pause_requested_.store(false, std::memory_order_release);
  cv_.notify_all();
  return absl::OkStatus();
}

bool Machine::paused() const {
  std::lock_guard lock(mu_);
  return paused_;
}

namespace {

std::string HostCpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "";
}

// The virtio device kinds a configuration gives, in window order (as SetUpDevices adds them).
std::vector<uint32_t> VirtioTypesOf(const MachineConfig& c) {
  std::vector<uint32_t> types;
  for (size_t i = 0; i < c.disks.size(); ++i) types.push_back(VIRTIO_ID_BLOCK);
  if (c.vsock.has_value()) types.push_back(VIRTIO_ID_VSOCK);
  for (size_t i = 0; i < c.nets.size(); ++i) types.push_back(VIRTIO_ID_NET);
  for (size_t i = 0; i < c.shares.size(); ++i) types.push_back(VIRTIO_ID_FS);
  return types;
}

std::string DescribeTypes(const std::vector<uint32_t>& types) {
  std::vector<std::string> names;
  for (uint32_t t : types) {
    switch (t) {
      case VIRTIO_ID_BLOCK: names.push_back("blk"); break;
      case VIRTIO_ID_VSOCK: names.push_back("vsock"); break;
      case VIRTIO_ID_NET: names.push_back("net"); break;
      case VIRTIO_ID_FS: names.push_back("fs"); break;
      default: names.push_back(absl::StrCat("type ", t)); break;
    }
  }
  return names.empty() ? "no virtio devices" : absl::StrJoin(names, ", ");
}

}  // namespace

absl::StatusOr<SnapshotInfo> Machine::SaveSnapshot(const std::string& dir) {
  {
    std::lock_guard lock(mu_);
    if (!paused_) return absl::FailedPreconditionError("snapshot: pause the machine first");
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("create " + dir);
  const std::string state_path = dir + "/" + snapshot::kStateFileName;
  const std::string memory_path = dir + "/" + snapshot::kMemoryFileName;
  if (::access(state_path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(dir, " already holds a snapshot: remove it or pick another directory"));
  }
  snapshot::v1::SnapshotState st;
  st.set_format_version(snapshot::kFormatVersion);
  st.mutable_host()->set_arch(std::string(arch_->name()));
  st.mutable_host()->set_cpu_vendor(arch_->HostCpuVendor());
  st.mutable_host()->set_kvm_flavor(platform_.Name());
  st.mutable_host()->set_cpu_model(HostCpuModel());
  snapshot::v1::MachineShape* shape = st.mutable_shape();
  shape->set_vcpus(config_.vcpus);
  shape->set_mem_mib(config_.mem_mib);
  shape->set_cmdline(cmdline_);
  shape->set_kernel_path(config_.kernel_path);
  for (size_t i = 0; i < transports_.size(); ++i) {
    snapshot::v1::DeviceSlot* slot = shape->add_devices();
    slot->set_device_type(transports_[i]->device()->device_type());
    slot->set_name(transport_names_[i]);
  }
  VESSEL_RETURN_IF_ERROR(arch_->SaveState(*kvm_, *vm_, vcpus_, st));
  const Serial16550::State serial = serial_->GetState();
  snapshot::v1::SerialState* ss = st.mutable_serial();
  ss->set_ier(serial.ier);
  ss->set_lcr(serial.lcr);
  ss->set_mcr(serial.mcr);
  ss->set_scr(serial.scr);
  ss->set_fcr(serial.fcr);
  ss->set_dll(serial.dll);
  ss->set_dlm(serial.dlm);
  ss->set_thr_interrupt_pending(serial.thr_interrupt_pending);
  ss->set_overrun(serial.overrun);
  ss->set_rx_fifo(serial.rx);
  for (size_t i = 0; i < transports_.size(); ++i) {
    absl::StatusOr<snapshot::v1::VirtioMmioState> t = transports_[i]->SaveState();
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat("snapshot of ", transport_names_[i], ": ", t.status().message()));
    }
    *st.add_virtio() = std::move(*t);
  }
  VESSEL_ASSIGN_OR_RETURN(snapshot::MemoryFileWritten mem, snapshot::WriteMemoryFile(memory_path, *memory_));
  for (const auto& r : mem.layout) *st.add_memory() = r;
  st.set_memory_file_bytes(mem.file_bytes);
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  st.set_taken_unix_ns(static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
  // The state file goes last: its presence marks a complete snapshot.
  VESSEL_RETURN_IF_ERROR(snapshot::WriteStateFile(state_path, st));
  SnapshotInfo info;
  struct stat sb;
  if (::stat(state_path.c_str(), &sb) == 0) info.state_bytes = static_cast<uint64_t>(sb.st_size);
  info.memory_file_bytes = mem.file_bytes;
  info.memory_data_bytes = mem.data_bytes;
  info.took = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
  LogInfo("snapshot: ", dir, ": ", mem.data_bytes >> 20, " MiB of data in a ", mem.file_bytes >> 20,
          " MiB memory file, ", info.state_bytes, "-byte state file, ",
          std::chrono::duration_cast<std::chrono::milliseconds>(info.took).count(), " ms");
  return info;
}

absl::StatusOr<std::unique_ptr<Machine>> Machine::Restore(MachineConfig config, const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  VESSEL_ASSIGN_OR_RETURN(snapshot::v1::SnapshotState st,
                          snapshot::ReadStateFile(dir + "/" + snapshot::kStateFileName));
  // The host and shape checks, before anything is built.
  const Platform platform = config.platform.has_value() ? *config.platform : DetectPlatform();
  std::unique_ptr<arch::ArchVm> arch = arch::CreateHostArch(platform);
  auto refuse = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat("snapshot ", dir, ": ", why));
  };
  if (st.host().arch() != arch->name()) {
    return refuse(absl::StrCat("taken on ", st.host().arch(), ", this host runs ", arch->name()));
  }
  if (st.host().cpu_vendor() != arch->HostCpuVendor()) {
    return refuse(absl::StrCat("taken on a ", st.host().cpu_vendor(), " CPU, this host has ",
                               arch->HostCpuVendor(), ": take a new snapshot here"));
  }
  if (st.host().kvm_flavor() != platform.Name()) {
    return refuse(absl::StrCat("taken under ", st.host().kvm_flavor(), ", this host has ",
                               platform.Name(), ": take a new snapshot here"));
  }
  if (st.shape().vcpus() != config.vcpus || st.shape().mem_mib() != config.mem_mib) {
    return refuse(absl::StrCat("a ", st.shape().vcpus(), "-vCPU ", st.shape().mem_mib(),
                               " MiB VM, the configuration asks for ", config.vcpus, " vCPUs and ",
                               config.mem_mib, " MiB"));
  }
  std::vector<uint32_t> snapshot_types;
  for (const auto& d : st.shape().devices()) snapshot_types.push_back(d.device_type());
  const std::vector<uint32_t> config_types = VirtioTypesOf(config);
  if (snapshot_types != config_types || static_cast<size_t>(st.virtio_size()) != config_types.size()) {
    return refuse(absl::StrCat("its virtio devices are [", DescribeTypes(snapshot_types),
                               "], the configuration gives [", DescribeTypes(config_types), "]"));
  }
  VESSEL_ASSIGN_OR_RETURN(snapshot::MemoryFileToMap mem,
                          snapshot::OpenMemoryFile(dir + "/" + snapshot::kMemoryFileName, st.memory(),
                                                   st.memory_file_bytes()));
  std::unique_ptr<Machine> m(new Machine());
  m->created_ = t0;
  m->config_ = std::move(config);
  m->config_.hugepages = false;
  m->restore_ = &st;
  m->restore_memory_fd_ = mem.fd.get();
  m->restore_memory_offsets_ = mem.offsets;
  absl::Status s = m->Build();
  m->restore_ = nullptr;
  m->restore_memory_fd_ = -1;
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("restore from ", dir, ": ", s.message()));
  }
  m->setup_ = m->SinceCreate();
  LogInfo("restored a VM from snapshot ", dir, " in ",
          std::chrono::duration_cast<std::chrono::microseconds>(m->setup_).count(), " us");
  return m;
}

absl::Status Machine::RestoreDevicesAndVcpus() {
  const snapshot::v1::SnapshotState& st = *restore_;
  cmdline_ = st.shape().cmdline();
  // Interrupt controllers and vCPUs first: a device that raises an interrupt as it resumes (vsock's
  // transport reset) must find the restored IOAPIC.
  VESSEL_RETURN_IF_ERROR(arch_->RestoreState(*vm_, vcpus_, st, *memory_));
  const snapshot::v1::SerialState& ss = st.serial();
  Serial16550::State serial;
  serial.ier = static_cast<uint8_t>(ss.ier());
  serial.lcr = static_cast<uint8_t>(ss.lcr());
  serial.mcr = static_cast<uint8_t>(ss.mcr());
  serial.scr = static_cast<uint8_t>(ss.scr());
  serial.fcr = static_cast<uint8_t>(ss.fcr());
  serial.dll = static_cast<uint8_t>(ss.dll());
  serial.dlm = static_cast<uint8_t>(ss.dlm());
  serial.thr_interrupt_pending = ss.thr_interrupt_pending();
  serial.overrun = ss.overrun();
  serial.rx = ss.rx_fifo();
  serial_->SetState(serial);
  if (transports_.size() != static_cast<size_t>(st.virtio_size())) {
    return absl::DataLossError(absl::StrCat("the snapshot holds ", st.virtio_size(),
                                            " virtio devices, the VM has ", transports_.size()));
  }
  for (size_t i = 0; i < transports_.size(); ++i) {
    absl::Status s = transports_[i]->RestoreState(st.virtio(static_cast<int>(i)));
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(transport_names_[i], ": ", s.message()));
  }
  return absl::OkStatus();
}

void Machine::JoinAll() {
  auto deadline = std::chrono::steady_clock::now() + kJoinTimeout;
  while (running_threads_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(mu_);
      KickAll();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (running_threads_.load() > 0) {
    LogError("a vCPU thread did not stop within ", kJoinTimeout.count(), " s; waiting for it");
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

MachineExit Machine::Wait() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return exit_.has_value() || threads_.empty(); });
    if (!exit_.has_value()) return MachineExit{ExitReason::kHostStop, "machine was never started"};
  }
  JoinAll();
  if (std::string compat = arch_->CompatSummary(); !compat.empty()) LogInfo(compat);
  std::lock_guard lock(mu_);
  return *exit_;
}

void Machine::SendConsoleInput(absl::string_view bytes) { serial_->QueueInput(bytes); }

BootTimeline Machine::timeline() const {
  BootTimeline t;
  t.setup = setup_;
  auto opt = [](int64_t v) -> std::optional<std::chrono::nanoseconds> {
    if (v < 0) return std::nullopt;
    return std::chrono::nanoseconds(v);
  };
  t.first_run = opt(first_run_ns_.load());
  t.first_console = opt(first_console_ns_.load());
  t.ended = opt(ended_ns_.load());
  if (debug_port_) t.marks = debug_port_->marks();
  return t;
}

std::map<std::string, uint64_t> Machine::exit_counts() const {
  std::map<std::string, uint64_t> out;
  for (const auto& per_vcpu : exit_counts_) {
    for (size_t r = 0; r < per_vcpu.size(); ++r) {
      if (per_vcpu[r] == 0) continue;
      const char* name = KvmExitName(static_cast<uint32_t>(r));
      out[name ? name : absl::StrCat("exit_", r)] += per_vcpu[r];
    }
  }
  return out;
}

std::string Machine::compat_summary() const { return arch_ ? arch_->CompatSummary() : ""; }

}  // namespace vessel
