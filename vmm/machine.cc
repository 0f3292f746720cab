#include "vmm/machine.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "devices/virtio/mmio_transport.h"
#include "vmm/kvm/irqfd_line.h"
#include <linux/virtio_mmio.h>
#include <sys/eventfd.h>
#include "vmm/base/errors.h"
#include "vmm/base/file_util.h"
#include "vmm/base/log.h"
#include "vmm/seccomp/seccomp.h"

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
  if (c.kernel_path.empty()) return absl::InvalidArgumentError("no kernel given: pass --kernel PATH");
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
  VESSEL_ASSIGN_OR_RETURN(GuestMemory memory,
                          GuestMemory::Create(ranges, GuestMemory::Options{c.hugepages}));
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
  while (!stopping_.load(std::memory_order_acquire)) {
    int err = vcpu.Run();
    if (err == EINTR || err == EAGAIN) continue;
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
