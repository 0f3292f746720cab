// Aarch64Vm on any host: RAM, windows, command line, platform devices and LoadBoot into real
// GuestMemory (kernel, initrd and a DTB that describes them); the KVM calls fail off aarch64.
#include "arch/aarch64/aarch64_vm.h"

#include <libfdt.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "arch/aarch64/kvm_arm.h"
#include "arch/aarch64/layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/bus/bus.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::aarch64 {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
constexpr uint64_t kMiB = 1ull << 20;

std::vector<uint8_t> MakeImage(uint64_t image_size, size_t file_size) {
  std::vector<uint8_t> b(file_size);
  for (size_t i = 0; i < file_size; ++i) b[i] = static_cast<uint8_t>(i * 13 + 1);
  auto put = [&](size_t off, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put(8, 0, 8);            // text_offset
  put(16, image_size, 8);  // image_size
  put(24, 0xa, 8);         // 4 KiB pages, anywhere
  for (size_t off = 32; off < 56; off += 8) put(off, 0, 8);  // res2..res4
  put(kImageMagicOffset, kImageMagic, 4);
  return b;
}

TEST(Aarch64VmTest, RamStartsAtOneGibAndWindowsFollowTheLayout) {
  Aarch64Vm vm;
  EXPECT_EQ(vm.name(), "aarch64");
  absl::StatusOr<std::vector<GuestRange>> ram = vm.RamRanges(128 * kMiB);
  ASSERT_TRUE(ram.ok()) << ram.status();
  ASSERT_EQ(ram->size(), 1u);
  EXPECT_EQ((*ram)[0].gpa, 0x40000000u);
  EXPECT_EQ((*ram)[0].size, 128 * kMiB);
  EXPECT_FALSE(vm.RamRanges(kMaxRamEnd).ok());

  absl::StatusOr<arch::VirtioWindow> w0 = vm.VirtioWindowAt(0);
  absl::StatusOr<arch::VirtioWindow> w5 = vm.VirtioWindowAt(5);
  ASSERT_TRUE(w0.ok() && w5.ok());
  EXPECT_EQ(w0->base, 0x0a000000u);
  EXPECT_EQ(w0->gsi, 16u);
  EXPECT_EQ(w5->base, 0x0a005000u);
  EXPECT_EQ(w5->gsi, 21u);
  EXPECT_EQ(vm.max_virtio_devices(), 32u);
  EXPECT_THAT(vm.VirtioWindowAt(32).status().message(), HasSubstr("at most 32"));
  EXPECT_EQ(vm.max_vcpus(), 123u);
  EXPECT_EQ(Aarch64Vm(GicVersion::kV2).max_vcpus(), 8u);
}

TEST(Aarch64VmTest, CommandLineLeavesVirtioToTheDeviceTree) {
  Aarch64Vm vm;
  std::vector<arch::VirtioWindow> windows = {*vm.VirtioWindowAt(0)};
  std::string cmdline = vm.KernelCmdline(windows, "quiet");
  EXPECT_EQ(cmdline, "console=ttyS0 panic=-1 quiet");
  EXPECT_THAT(cmdline, Not(HasSubstr("virtio_mmio")));
}

TEST(Aarch64VmTest, LoadBootWritesKernelInitrdAndADescribingDtb) {
  Aarch64Vm vm;
  const uint64_t mem = 64 * kMiB;
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(*vm.RamRanges(mem));
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::vector<uint8_t> kernel = MakeImage(8 * kMiB, 3 * kMiB + 17);
  std::vector<uint8_t> initrd(5 * kMiB + 3);
  for (size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<uint8_t>(i * 31);

  arch::BootRequest req;
  req.vcpus = 2;
  req.mem_bytes = mem;
  req.kernel_path = "Image";
  req.kernel = kernel;
  req.initrd = initrd;
  req.cmdline = vm.KernelCmdline({}, "rdinit=/init");
  req.virtio = {*vm.VirtioWindowAt(0), *vm.VirtioWindowAt(1)};
  absl::Status s = vm.LoadBoot(req, *memory);
  ASSERT_TRUE(s.ok()) << s;

  const BootLayout& l = vm.boot_layout();
  EXPECT_EQ(l.kernel_addr, kRamBase);
  EXPECT_EQ(l.fdt_addr, kRamBase + 62 * kMiB);
  std::vector<uint8_t> back(kernel.size());
  ASSERT_TRUE(memory->Read(l.kernel_addr, back.data(), back.size()).ok());
  EXPECT_EQ(back, kernel);
  back.resize(initrd.size());
  ASSERT_TRUE(memory->Read(l.initrd_addr, back.data(), back.size()).ok());
  EXPECT_EQ(back, initrd);

  // The DTB in guest memory is the one built, and it describes this machine.
  std::vector<uint8_t> dtb(vm.fdt().size());
  ASSERT_TRUE(memory->Read(l.fdt_addr, dtb.data(), dtb.size()).ok());
  EXPECT_EQ(dtb, vm.fdt());
  ASSERT_EQ(fdt_check_header(dtb.data()), 0);
  const int chosen = fdt_path_offset(dtb.data(), "/chosen");
  ASSERT_GE(chosen, 0);
  EXPECT_STREQ(static_cast<const char*>(fdt_getprop(dtb.data(), chosen, "bootargs", nullptr)),
               "console=ttyS0 panic=-1 rdinit=/init");
  // DTB properties are only 4-byte aligned: copy the 64-bit values out.
  auto u64_prop = [&](const char* name) -> std::optional<uint64_t> {
    int len = 0;
    const void* p = fdt_getprop(dtb.data(), chosen, name, &len);
    if (p == nullptr || len != sizeof(fdt64_t)) return std::nullopt;
    fdt64_t v;
    std::memcpy(&v, p, sizeof(v));
    return fdt64_to_cpu(v);
  };
  EXPECT_EQ(u64_prop("linux,initrd-start"), l.initrd_addr);
  EXPECT_EQ(u64_prop("linux,initrd-end"), l.initrd_addr + initrd.size());
  EXPECT_GE(fdt_path_offset(dtb.data(), "/virtio_mmio@a001000"), 0);
  EXPECT_LT(fdt_path_offset(dtb.data(), "/virtio_mmio@a002000"), 0);
  EXPECT_GE(fdt_path_offset(dtb.data(), "/cpus/cpu@1"), 0);
  EXPECT_EQ(vm.gic_version(), GicVersion::kV3);
}

TEST(Aarch64VmTest, LoadBootRejectsAnX86KernelAndTooLittleRam) {
  Aarch64Vm vm;
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(*vm.RamRanges(16 * kMiB));
  ASSERT_TRUE(memory.ok());
  std::vector<uint8_t> elf(4096, 0);
  elf[0] = 0x7f, elf[1] = 'E', elf[2] = 'L', elf[3] = 'F';
  arch::BootRequest req;
  req.mem_bytes = 16 * kMiB;
  req.kernel_path = "vmlinux";
  req.kernel = elf;
  absl::Status s = vm.LoadBoot(req, *memory);
  EXPECT_THAT(s.message(), HasSubstr("vmlinux: not an arm64 Image"));

  std::vector<uint8_t> big = MakeImage(15 * kMiB, 4096);
  req.kernel = big;
  EXPECT_THAT(vm.LoadBoot(req, *memory).message(), HasSubstr("raise --mem-mib"));
}

TEST(Aarch64VmTest, UartIsOnTheMmioBus) {
  Aarch64Vm vm;
  KvmVm kvm_vm{ScopedFd(), 0};
  Bus io("I/O port"), mmio("MMIO");
  std::string out;
  arch::PlatformDeviceContext ctx;
  ctx.vm = &kvm_vm;
  ctx.io_bus = &io;
  ctx.mmio_bus = &mmio;
  ctx.console_sink = [&out](absl::string_view b) { out.append(b.data(), b.size()); };
  absl::StatusOr<arch::PlatformDevices> devices = vm.AddPlatformDevices(ctx);
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_NE(devices->console, nullptr);
  EXPECT_EQ(devices->debug_port, nullptr);
  const uint8_t ch = 'A';
  EXPECT_TRUE(mmio.Write(kUartBase, absl::MakeConstSpan(&ch, 1)));
  EXPECT_EQ(out, "A");
  uint8_t lsr = 0;
  EXPECT_TRUE(mmio.Read(kUartBase + 5, absl::MakeSpan(&lsr, 1)));
  EXPECT_NE(lsr & 0x20, 0);  // THR empty
  EXPECT_FALSE(io.Write(0x3f8, absl::MakeConstSpan(&ch, 1)));  // no port I/O on arm64
}

TEST(Aarch64VmTest, KvmCallsNeedAnAarch64Host) {
  if (KvmArmAvailable()) GTEST_SKIP() << "aarch64 build: the KVM calls are real";
  Aarch64Vm vm;
  KvmVm kvm_vm{ScopedFd(), 0};
  absl::Status s = vm.SetUpIrqchip(kvm_vm, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("needs an aarch64 host"));
  EXPECT_EQ(SetBootRegs(-1, kRamBase, kRamBase).code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace vessel::aarch64
