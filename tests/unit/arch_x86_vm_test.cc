// X86Vm without KVM: the command line, windows, RAM split and port-I/O devices it gives the
// machine are the ones machine.cc used to build itself (the KVM machine tests cover the rest).
#include "arch/x86_64/x86_vm.h"

#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/bus/bus.h"
#include "vmm/legacy/i8042.h"
#include "vmm/legacy/power_port.h"

namespace vessel::x86 {
namespace {

using ::testing::HasSubstr;
constexpr uint64_t kMiB = 1ull << 20;

Platform HardwarePlatform() {
  Platform p;
  p.flavor = KvmFlavor::kHardware;
  return p;
}

TEST(X86VmTest, CommandLineAnnouncesEachVirtioWindow) {
  X86Vm vm(HardwarePlatform());
  std::vector<arch::VirtioWindow> w = {*vm.VirtioWindowAt(0), *vm.VirtioWindowAt(1)};
  EXPECT_EQ(vm.KernelCmdline(w, "quiet"),
            "console=ttyS0 reboot=k panic=-1 io_delay=none pci=off "
            "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 quiet");
  EXPECT_EQ(vm.KernelCmdline({}, ""), "console=ttyS0 reboot=k panic=-1 io_delay=none pci=off");

  Platform pvm;
  pvm.flavor = KvmFlavor::kPvm;
  EXPECT_THAT(X86Vm(pvm).KernelCmdline({}, ""), HasSubstr(PvmCmdlineAdditions()));
}

TEST(X86VmTest, NineteenWindowsOnIoapicPinsFiveToTwentyThree) {
  X86Vm vm(HardwarePlatform());
  EXPECT_EQ(vm.max_virtio_devices(), 19u);
  absl::StatusOr<arch::VirtioWindow> last = vm.VirtioWindowAt(18);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->base, kVirtioMmioBase + 18 * 0x1000);
  EXPECT_EQ(last->gsi, 23u);
  EXPECT_FALSE(vm.VirtioWindowAt(19).ok());
  EXPECT_EQ(vm.max_vcpus(), kMaxVcpus);
}

TEST(X86VmTest, RamIsSplitAroundTheMmioGap) {
  X86Vm vm(HardwarePlatform());
  absl::StatusOr<std::vector<GuestRange>> small = vm.RamRanges(128 * kMiB);
  ASSERT_TRUE(small.ok());
  ASSERT_EQ(small->size(), 1u);
  EXPECT_EQ((*small)[0].gpa, 0u);
  absl::StatusOr<std::vector<GuestRange>> big = vm.RamRanges(4096 * kMiB);
  ASSERT_TRUE(big.ok());
  ASSERT_EQ(big->size(), 2u);
  EXPECT_EQ((*big)[0].size, kMmioGapStart);
  EXPECT_EQ((*big)[1].gpa, kMmioGapEnd);
  EXPECT_EQ((*big)[1].size, 4096 * kMiB - kMmioGapStart);
}

TEST(X86VmTest, PlatformDevicesAreOnPortIo) {
  X86Vm vm(HardwarePlatform());
  KvmVm kvm_vm{ScopedFd(), 0};
  Bus io("I/O port"), mmio("MMIO");
  std::string console, off, reset;
  arch::PlatformDeviceContext ctx;
  ctx.vm = &kvm_vm;
  ctx.io_bus = &io;
  ctx.mmio_bus = &mmio;
  ctx.console_sink = [&console](absl::string_view b) { console.append(b.data(), b.size()); };
  ctx.poweroff = [&off](std::string d) { off = d; };
  ctx.reset = [&reset](std::string d) { reset = d; };
  absl::StatusOr<arch::PlatformDevices> devices = vm.AddPlatformDevices(ctx);
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_NE(devices->console, nullptr);
  ASSERT_NE(devices->debug_port, nullptr);

  const uint8_t a = 'x';
  EXPECT_TRUE(io.Write(0x3f8, absl::MakeConstSpan(&a, 1)));
  EXPECT_EQ(console, "x");
  const uint8_t poweroff = PowerPort::kPowerOff;
  EXPECT_TRUE(io.Write(PowerPort::kPort, absl::MakeConstSpan(&poweroff, 1)));
  EXPECT_EQ(off, "guest powered off");
  const uint8_t i8042_reset = 0xfe;
  EXPECT_TRUE(io.Write(I8042::kCommandPort, absl::MakeConstSpan(&i8042_reset, 1)));
  EXPECT_THAT(reset, HasSubstr("i8042"));
  uint8_t rtc = 0;
  EXPECT_TRUE(io.Read(0x71, absl::MakeSpan(&rtc, 1)));
  EXPECT_FALSE(mmio.Read(0x3f8, absl::MakeSpan(&rtc, 1)));  // nothing of x86's on MMIO
}

}  // namespace
}  // namespace vessel::x86
