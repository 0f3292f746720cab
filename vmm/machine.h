// Machine: one KVM virtual machine running in this process (its architecture behind arch/arch.h).
//
// Create() builds everything (KVM VM, guest RAM, kernel + initrd + boot structures, legacy devices,
// vCPUs) and fails with a message naming the thing and the fix. Start() runs one thread per vCPU;
// Wait() returns why the VM ended; Stop() ends it from the host. When the Machine is destroyed the
// process holds no thread, fd or mapping that was opened for it.
#ifndef VESSEL_VMM_MACHINE_H_
#define VESSEL_VMM_MACHINE_H_

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "arch/arch.h"
#include "devices/block/block_device.h"
#include "devices/virtio/virtio_device.h"
#include "devices/fs/fs_config.h"
#include "devices/fs/fs_device.h"
#include "devices/net/net_config.h"
#include "devices/net/net_device.h"
#include "devices/vsock/vsock_config.h"
#include "devices/vsock/vsock_device.h"
#include "vmm/base/log.h"
#include "vmm/bus/bus.h"
#include "vmm/event_loop.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/kvm/platform.h"
#include "vmm/legacy/debug_port.h"
#include "vmm/legacy/serial.h"
#include "vmm/memory/guest_memory.h"
#include "vessel/snapshot/v1/snapshot.pb.h"

namespace vessel {
namespace virtio {
class MmioTransport;
}

struct MachineConfig {
  uint32_t vcpus = 1;
  uint64_t mem_mib = 128;
  std::string kernel_path;   // ELF vmlinux or bzImage
  std::string initrd_path;   // optional
  std::string extra_cmdline; // appended to the command line the VMM builds
  // Guest console output. Called from vCPU threads; must not block for long.
  std::function<void(absl::string_view)> console_sink;
  bool hugepages = false;
  std::optional<Platform> platform;  // detected when unset
  // virtio-blk disks: the first is /dev/vda, the second /dev/vdb, ...
  std::vector<block::BlockConfig> disks;
  // virtio-vsock (after the disks on the MMIO bus): guest CID >= 3 and the host's Unix socket
  // path (Firecracker hybrid vsock; see devices/vsock/README.md).
  std::optional<vsock::VsockConfig> vsock;
  // virtio-net devices over taps (after vsock on the MMIO bus): the first is the guest's eth0.
  std::vector<net::NetConfig> nets;
  // virtio-fs shares (after the network devices): the guest mounts each with
  // `mount -t virtiofs TAG DIR`.
  std::vector<fs::FsConfig> shares;
  // Per-thread seccomp filters on the vCPU, event-loop and device threads (vmm/seccomp; a
  // forbidden syscall kills the process and is logged). Off only for debugging.
  bool seccomp = true;
};

enum class ExitReason { kPoweroff, kReboot, kCrash, kHostStop };
absl::string_view ExitReasonName(ExitReason reason);

struct MachineExit {
  ExitReason reason;
  std::string detail;
};

struct BootTimeline {
  using ns = std::chrono::nanoseconds;
  ns setup{0};                      // Create() start -> ready to run
  std::optional<ns> first_run;      // -> first KVM_RUN
  std::optional<ns> first_console;  // -> first console byte
  std::optional<ns> ended;          // -> VM end
  std::vector<DebugPort::Mark> marks;  // boot-timing port codes
};

// What SaveSnapshot wrote.
struct SnapshotInfo {
  uint64_t state_bytes = 0;        // the state file
  uint64_t memory_file_bytes = 0;  // the memory file's apparent size (= guest RAM)
  uint64_t memory_data_bytes = 0;  // bytes of it that hold data (the rest are holes)
  std::chrono::nanoseconds took{0};
};

class Machine {
 public:
  static absl::StatusOr<std::unique_ptr<Machine>> Create(MachineConfig config);
  // A machine restored from the snapshot directory `dir` (vmm/snapshot/README.md), built from
  // `config`: the same shape as the snapshot's (vCPUs, memory, the kinds of virtio devices in
  // order) with its own device backends (vsock socket and CID, taps and MACs, disks, shares).
  // config.kernel_path and initrd_path are not used. Guest memory maps the snapshot's memory file
  // privately, so it must stay in place while the machine lives. Everything in the snapshot is
  // checked before any vCPU runs; on error nothing is left behind. Start() runs it.
  static absl::StatusOr<std::unique_ptr<Machine>> Restore(MachineConfig config, const std::string& dir);
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  absl::Status Start();
  // Blocks until the VM ends, stops and joins every vCPU thread.
  MachineExit Wait();
  // Ends the VM with kHostStop (no effect if it already ended). Safe from any thread.
  void Stop();

  // Snapshots. Pause: every vCPU out of KVM_RUN at an instruction boundary and parked, every
  // virtio device quiesced (vmm/snapshot/README.md). Resume undoes it. SaveSnapshot needs a paused
  // machine and writes `dir`/state and `dir`/memory (`dir` is created when missing; an existing
  // snapshot there is an error). A machine that was never started counts as paused.
  absl::Status Pause();
  absl::Status Resume();
  bool paused() const;
  absl::StatusOr<SnapshotInfo> SaveSnapshot(const std::string& dir);

  void SendConsoleInput(absl::string_view bytes);
  const Platform& platform() const { return platform_; }
  const std::string& cmdline() const { return cmdline_; }
  const GuestMemory& memory() const { return *memory_; }
  BootTimeline timeline() const;
  // KVM exit counts by reason name, summed over vCPUs; valid after Wait().
  std::map<std::string, uint64_t> exit_counts() const;
  // The compat profile's counters, empty on hardware KVM.
  std::string compat_summary() const;
  // The virtio-vsock device (ConnectToGuest, counters), or nullptr without config.vsock. Lives as
  // long as the Machine.
  vsock::VsockDevice* vsock() const { return vsock_; }
  // The virtio-net devices (counters), in config.nets order. Live as long as the Machine.
  const std::vector<net::NetDevice*>& nets() const { return nets_; }
  // The virtio-fs devices (counters), in config.shares order.
  const std::vector<fs::FsDevice*>& shares() const { return shares_; }

 private:
  Machine() = default;
  absl::Status Build();
  // The restore half of Build(): architecture, legacy and virtio device state from restore_.
  absl::Status RestoreDevicesAndVcpus();
  void ParkIfPaused(size_t index);
  absl::Status SetUpDevices();
  // Puts `device` on the MMIO bus in the next virtio-mmio window, with an irqfd interrupt and
  // ioeventfd queue notifications, and adds it to the kernel command line.
  absl::Status AddVirtioDevice(std::unique_ptr<virtio::VirtioDevice> device, std::string name);
  void RunVcpu(size_t index);
  bool HandleExit(KvmVcpu& vcpu);  // false ends this vCPU's loop
  void HandleIo(kvm_run* run);
  void HandleMmio(kvm_run* run);
  void End(ExitReason reason, std::string detail);
  void KickAll();
  void JoinAll();
  std::string DescribeVcpu(const KvmVcpu& vcpu) const;
  std::chrono::nanoseconds SinceCreate() const;

  MachineConfig config_;
  Platform platform_;
  std::chrono::steady_clock::time_point created_;
  std::chrono::nanoseconds setup_{0};
  std::string cmdline_;
  std::vector<arch::VirtioWindow> virtio_windows_;  // one per virtio device, in order

  std::optional<KvmSystem> kvm_;
  std::optional<KvmVm> vm_;
  // irqfds and ioeventfds registered with vm_; outlive the devices that write them.
  std::vector<ScopedFd> eventfds_;
  std::optional<GuestMemory> memory_;
  std::vector<KvmVcpu> vcpus_;
  Bus io_bus_{"I/O port"};
  Bus mmio_bus_{"MMIO"};
  std::shared_ptr<Serial16550> serial_;
  std::shared_ptr<DebugPort> debug_port_;
  std::unique_ptr<arch::ArchVm> arch_;  // the guest architecture (arch/arch.h)
  std::unique_ptr<EventLoop> event_loop_;    // destroyed first: its callbacks use the devices
  size_t virtio_devices_ = 0;                // virtio-mmio windows used
  vsock::VsockDevice* vsock_ = nullptr;      // owned by its transport on mmio_bus_
  std::vector<net::NetDevice*> nets_;        // owned by their transports on mmio_bus_
  std::vector<fs::FsDevice*> shares_;        // owned by their transports on mmio_bus_
  std::vector<std::shared_ptr<virtio::MmioTransport>> transports_;  // in window order
  std::vector<std::string> transport_names_;

  // Set only while Restore() builds the machine.
  const snapshot::v1::SnapshotState* restore_ = nullptr;
  int restore_memory_fd_ = -1;
  std::vector<uint64_t> restore_memory_offsets_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<MachineExit> exit_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> pause_requested_{false};  // vCPU threads park (guarded by mu_ for waits)
  size_t parked_vcpus_ = 0;                   // guarded by mu_
  bool paused_ = false;                       // guarded by mu_: devices quiesced too
  std::atomic<int> running_threads_{0};
  std::atomic<int64_t> first_run_ns_{-1};
  std::atomic<int64_t> first_console_ns_{-1};
  std::atomic<int64_t> ended_ns_{-1};
  std::vector<std::array<uint64_t, 64>> exit_counts_;  // per vCPU, indexed by KVM_EXIT_*
  RateLimiter unhandled_io_log_;
  RateLimiter unhandled_mmio_log_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_MACHINE_H_
