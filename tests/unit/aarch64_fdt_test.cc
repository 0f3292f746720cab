// The DTB is parsed back with libfdt and checked node by node, and dtc must accept it.
#include "arch/aarch64/fdt.h"

#include <libfdt.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "arch/aarch64/gic.h"
#include "arch/aarch64/layout.h"
#include "arch/aarch64/regs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel::aarch64 {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;
constexpr uint64_t kMiB = 1ull << 20;

// Read-only view over a DTB with the accessors the checks need.
class Dtb {
 public:
  explicit Dtb(const std::vector<uint8_t>& blob) : fdt_(blob.data()) {}
  int Node(const std::string& path) const { return fdt_path_offset(fdt_, path.c_str()); }
  bool Has(int node, const char* prop) const { return fdt_getprop(fdt_, node, prop, nullptr) != nullptr; }
  std::string Str(int node, const char* prop) const {
    int len = 0;
    const char* v = static_cast<const char*>(fdt_getprop(fdt_, node, prop, &len));
    if (v == nullptr || len <= 0) return "<missing>";
    return std::string(v, strnlen(v, static_cast<size_t>(len)));
  }
  std::vector<uint32_t> Cells(int node, const char* prop) const {
    int len = 0;
    const fdt32_t* v = static_cast<const fdt32_t*>(fdt_getprop(fdt_, node, prop, &len));
    std::vector<uint32_t> out;
    for (int i = 0; v != nullptr && i < len / 4; ++i) out.push_back(fdt32_to_cpu(v[i]));
    return out;
  }
  // A property of 2-cell (64-bit) numbers.
  std::vector<uint64_t> U64s(int node, const char* prop) const {
    std::vector<uint32_t> c = Cells(node, prop);
    std::vector<uint64_t> out;
    for (size_t i = 0; i + 1 < c.size(); i += 2) out.push_back((uint64_t{c[i]} << 32) | c[i + 1]);
    return out;
  }
  const void* raw() const { return fdt_; }

 private:
  const void* fdt_;
};

FdtConfig SampleConfig(GicVersion version, uint32_t vcpus) {
  FdtConfig c;
  c.vcpus = vcpus;
  c.ram_base = kRamBase;
  c.ram_size = 256 * kMiB;
  c.bootargs = "console=ttyS0 panic=-1 root=/dev/vda";
  c.initrd_start = kRamBase + 200 * kMiB;
  c.initrd_end = kRamBase + 200 * kMiB + 1234567;
  c.gic = *GicLayoutFor(version, vcpus);
  for (uint32_t i = 0; i < 3; ++i) {
    c.virtio.push_back({kVirtioMmioBase + i * kVirtioMmioWindowSize, kVirtioMmioWindowSize, kFirstVirtioSpi + i});
  }
  return c;
}

TEST(Arm64FdtTest, EveryNodeReadsBackAsBuilt) {
  FdtConfig c = SampleConfig(GicVersion::kV3, 4);
  absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(c);
  ASSERT_TRUE(blob.ok()) << blob.status();
  ASSERT_EQ(fdt_check_header(blob->data()), 0);
  EXPECT_EQ(fdt_totalsize(blob->data()), blob->size());
  EXPECT_LE(blob->size(), kFdtMaxSize);
  Dtb d(*blob);

  const int root = d.Node("/");
  ASSERT_GE(root, 0);
  EXPECT_EQ(d.Str(root, "compatible"), "linux,dummy-virt");
  EXPECT_THAT(d.Cells(root, "#address-cells"), ElementsAre(2u));
  EXPECT_THAT(d.Cells(root, "#size-cells"), ElementsAre(2u));

  // cpus: one arm,arm-v8 per vCPU, reg = MPIDR, PSCI enable method.
  const int cpus = d.Node("/cpus");
  ASSERT_GE(cpus, 0);
  EXPECT_THAT(d.Cells(cpus, "#address-cells"), ElementsAre(1u));
  EXPECT_THAT(d.Cells(cpus, "#size-cells"), ElementsAre(0u));
  int count = 0;
  int cpu;
  fdt_for_each_subnode(cpu, d.raw(), cpus) {
    EXPECT_EQ(d.Str(cpu, "device_type"), "cpu");
    EXPECT_EQ(d.Str(cpu, "compatible"), "arm,arm-v8");
    EXPECT_EQ(d.Str(cpu, "enable-method"), "psci");
    EXPECT_THAT(d.Cells(cpu, "reg"), ElementsAre(static_cast<uint32_t>(MpidrAffinity(count))));
    ++count;
  }
  EXPECT_EQ(count, 4);

  const int psci = d.Node("/psci");
  ASSERT_GE(psci, 0);
  EXPECT_EQ(d.Str(psci, "compatible"), "arm,psci-0.2");
  EXPECT_EQ(d.Str(psci, "method"), "hvc");

  const int mem = d.Node("/memory@40000000");
  ASSERT_GE(mem, 0);
  EXPECT_EQ(d.Str(mem, "device_type"), "memory");
  EXPECT_THAT(d.U64s(mem, "reg"), ElementsAre(kRamBase, 256 * kMiB));

  const int chosen = d.Node("/chosen");
  ASSERT_GE(chosen, 0);
  EXPECT_EQ(d.Str(chosen, "bootargs"), c.bootargs);
  EXPECT_THAT(d.U64s(chosen, "linux,initrd-start"), ElementsAre(c.initrd_start));
  EXPECT_THAT(d.U64s(chosen, "linux,initrd-end"), ElementsAre(c.initrd_end));
  // stdout-path and the serial0 alias name the UART node.
  EXPECT_EQ(d.Str(chosen, "stdout-path"), "/uart@9000000");
  EXPECT_EQ(d.Str(d.Node("/aliases"), "serial0"), "/uart@9000000");

  // GICv3: distributor + one 128 KiB redistributor pair per vCPU; everything points at it.
  const int gic = d.Node("/intc@8000000");
  ASSERT_GE(gic, 0);
  EXPECT_EQ(d.Str(gic, "compatible"), "arm,gic-v3");
  EXPECT_TRUE(d.Has(gic, "interrupt-controller"));
  EXPECT_THAT(d.Cells(gic, "#interrupt-cells"), ElementsAre(3u));
  EXPECT_THAT(d.U64s(gic, "reg"), ElementsAre(kGicDistBase, kGicDistSize, kGicV3RedistBase, 4 * 0x20000u));
  const uint32_t gic_phandle = fdt_get_phandle(d.raw(), gic);
  EXPECT_NE(gic_phandle, 0u);
  EXPECT_EQ(fdt_node_offset_by_phandle(d.raw(), gic_phandle), gic);
  EXPECT_THAT(d.Cells(root, "interrupt-parent"), ElementsAre(gic_phandle));

  const int timer = d.Node("/timer");
  ASSERT_GE(timer, 0);
  EXPECT_EQ(d.Str(timer, "compatible"), "arm,armv8-timer");
  EXPECT_THAT(d.Cells(timer, "interrupts"),
              ElementsAreArray({1u, 13u, 4u, 1u, 14u, 4u, 1u, 11u, 4u, 1u, 10u, 4u}));

  const int uart = d.Node("/uart@9000000");
  ASSERT_GE(uart, 0);
  EXPECT_EQ(d.Str(uart, "compatible"), "ns16550a");
  EXPECT_THAT(d.U64s(uart, "reg"), ElementsAre(kUartBase, 8u));
  EXPECT_THAT(d.Cells(uart, "clock-frequency"), ElementsAre(kUartClockHz));
  EXPECT_THAT(d.Cells(uart, "interrupts"), ElementsAre(0u, kUartSpi, 4u));  // SPI, level high

  int virtio_nodes = 0;
  for (int n = fdt_node_offset_by_compatible(d.raw(), -1, "virtio,mmio"); n >= 0;
       n = fdt_node_offset_by_compatible(d.raw(), n, "virtio,mmio")) {
    ++virtio_nodes;
  }
  EXPECT_EQ(virtio_nodes, 3);
  for (const VirtioMmioNode& v : c.virtio) {
    const int n = d.Node("/" + VirtioNodeName(v.base));
    ASSERT_GE(n, 0) << VirtioNodeName(v.base);
    EXPECT_EQ(d.Str(n, "compatible"), "virtio,mmio");
    EXPECT_THAT(d.U64s(n, "reg"), ElementsAre(v.base, 0x1000u));
    EXPECT_THAT(d.Cells(n, "interrupts"), ElementsAre(0u, v.spi, 1u));  // SPI, edge rising
    EXPECT_TRUE(d.Has(n, "dma-coherent"));
    // No node overrides the root's interrupt parent: every interrupt goes to the GIC.
    EXPECT_FALSE(d.Has(n, "interrupt-parent"));
  }
  EXPECT_EQ(VirtioNodeName(0x0a001000), "virtio_mmio@a001000");
}

TEST(Arm64FdtTest, GicV2VariantAndItsTimerCpuMask) {
  absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(SampleConfig(GicVersion::kV2, 2));
  ASSERT_TRUE(blob.ok()) << blob.status();
  Dtb d(*blob);
  const int gic = d.Node("/intc@8000000");
  ASSERT_GE(gic, 0);
  EXPECT_EQ(d.Str(gic, "compatible"), "arm,cortex-a15-gic");
  EXPECT_THAT(d.U64s(gic, "reg"), ElementsAre(kGicDistBase, 0x1000u, kGicV2CpuBase, 0x2000u));
  // Two CPUs: mask 0b11 in bits 8..15, level high.
  const uint32_t f = 0x304;
  EXPECT_THAT(d.Cells(d.Node("/timer"), "interrupts"),
              ElementsAreArray({1u, 13u, f, 1u, 14u, f, 1u, 11u, f, 1u, 10u, f}));
}

TEST(Arm64FdtTest, NoInitrdMeansNoInitrdProperties) {
  FdtConfig c = SampleConfig(GicVersion::kV3, 1);
  c.initrd_start = c.initrd_end = 0;
  c.virtio.clear();
  absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(c);
  ASSERT_TRUE(blob.ok()) << blob.status();
  Dtb d(*blob);
  EXPECT_FALSE(d.Has(d.Node("/chosen"), "linux,initrd-start"));
  EXPECT_FALSE(d.Has(d.Node("/chosen"), "linux,initrd-end"));
  EXPECT_LT(fdt_node_offset_by_compatible(d.raw(), -1, "virtio,mmio"), 0);
}

TEST(Arm64FdtTest, OverflowingTheCapIsAnError) {
  FdtConfig c = SampleConfig(GicVersion::kV3, 4);
  c.max_size = 512;
  absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(c);
  ASSERT_FALSE(blob.ok());
  EXPECT_EQ(blob.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(blob.status().message(), HasSubstr("512-byte cap"));

  c = SampleConfig(GicVersion::kV3, 4);
  c.bootargs.assign(kFdtMaxSize, 'x');  // a command line as large as the whole cap
  EXPECT_EQ(BuildFdt(c).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(Arm64FdtTest, RejectsInconsistentConfigs) {
  FdtConfig c = SampleConfig(GicVersion::kV3, 1);
  c.vcpus = 0;
  EXPECT_FALSE(BuildFdt(c).ok());
  c = SampleConfig(GicVersion::kV3, 1);
  c.initrd_end = c.initrd_start - 1;
  EXPECT_THAT(BuildFdt(c).status().message(), HasSubstr("initrd end"));
  c = SampleConfig(GicVersion::kV3, 1);
  c.virtio.push_back({kRamBase + kMiB, 0x1000, 40});
  EXPECT_THAT(BuildFdt(c).status().message(), HasSubstr("overlaps RAM"));
  c = SampleConfig(GicVersion::kV3, 1);
  c.max_size = kFdtMaxSize + 1;
  EXPECT_FALSE(BuildFdt(c).ok());
}

TEST(Arm64FdtTest, SixtyFourVcpusAndThirtyTwoDevicesFit) {
  FdtConfig c = SampleConfig(GicVersion::kV3, 64);
  c.virtio.clear();
  for (uint32_t i = 0; i < kMaxVirtioDevices; ++i) {
    c.virtio.push_back({kVirtioMmioBase + i * kVirtioMmioWindowSize, kVirtioMmioWindowSize, kFirstVirtioSpi + i});
  }
  absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(c);
  ASSERT_TRUE(blob.ok()) << blob.status();
  Dtb d(*blob);
  // vCPU 17's MPIDR is Aff1 1, Aff0 1.
  EXPECT_THAT(d.Cells(d.Node("/cpus/cpu@101"), "reg"), ElementsAre(0x101u));
  EXPECT_GE(d.Node("/virtio_mmio@a01f000"), 0);
}

std::string RunCapture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

TEST(Arm64FdtTest, DtcAcceptsTheBlob) {
  int status = 0;
  RunCapture("command -v dtc >/dev/null 2>&1", &status);
  if (status != 0) GTEST_SKIP() << "dtc not installed (Debian package device-tree-compiler)";
  for (GicVersion v : {GicVersion::kV3, GicVersion::kV2}) {
    absl::StatusOr<std::vector<uint8_t>> blob = BuildFdt(SampleConfig(v, 2));
    ASSERT_TRUE(blob.ok()) << blob.status();
    char path[] = "/tmp/vessel-fdt-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, blob->data(), blob->size()), static_cast<ssize_t>(blob->size()));
    close(fd);
    std::string dts = RunCapture(std::string("dtc -I dtb -O dts ") + path + " 2>&1", &status);
    unlink(path);
    ASSERT_EQ(status, 0) << dts;
    EXPECT_THAT(dts, HasSubstr("compatible = \"linux,dummy-virt\""));
    EXPECT_THAT(dts, HasSubstr("virtio_mmio@a000000"));
    EXPECT_THAT(dts, HasSubstr("bootargs = \"console=ttyS0 panic=-1 root=/dev/vda\""));
    EXPECT_THAT(dts, Not(HasSubstr("ERROR")));
    EXPECT_THAT(dts, Not(HasSubstr("Warning")));  // dtc's checks pass without a complaint
  }
}

// ---- GIC layout, register ids ----

TEST(Arm64GicTest, LayoutPerVersionAndVcpuLimits) {
  absl::StatusOr<GicLayout> v3 = GicLayoutFor(GicVersion::kV3, 123);
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_EQ(v3->cpu.base + v3->cpu.size, kGicV3RedistLimit);
  EXPECT_LE(v3->cpu.base + v3->cpu.size, kUartBase);
  EXPECT_THAT(GicLayoutFor(GicVersion::kV3, 124).status().message(), HasSubstr("lower --vcpus"));
  EXPECT_FALSE(GicLayoutFor(GicVersion::kV3, 0).ok());
  EXPECT_TRUE(GicLayoutFor(GicVersion::kV2, 8).ok());
  EXPECT_FALSE(GicLayoutFor(GicVersion::kV2, 9).ok());
  EXPECT_EQ(TimerPpiFlags(GicVersion::kV2, 8), 0xff04u);
  EXPECT_EQ(TimerPpiFlags(GicVersion::kV3, 8), 4u);
}

TEST(Arm64RegsTest, CoreRegisterIdsMatchTheKernelEncoding) {
  // Values from arm64 KVM: KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset/4.
  EXPECT_EQ(XRegId(0), 0x6030000000100000ull);
  EXPECT_EQ(XRegId(1), 0x6030000000100002ull);
  EXPECT_EQ(kSpRegId, 0x603000000010003eull);
  EXPECT_EQ(kPcRegId, 0x6030000000100040ull);
  EXPECT_EQ(kPstateRegId, 0x6030000000100042ull);
  EXPECT_EQ(kBootPstate, 0x3c5u);
  EXPECT_EQ(MpidrAffinity(0), 0u);
  EXPECT_EQ(MpidrAffinity(15), 0xfu);
  EXPECT_EQ(MpidrAffinity(16), 0x100u);
  EXPECT_EQ(MpidrAffinity(4096), 0x10000u);
}

}  // namespace
}  // namespace vessel::aarch64
