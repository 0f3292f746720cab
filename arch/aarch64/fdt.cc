#include "arch/aarch64/fdt.h"

#include <libfdt.h>

#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/aarch64/regs.h"

namespace vessel::aarch64 {
namespace {

// Sequential writer over a fixed buffer: the first libfdt error sticks and later calls do nothing,
// so the building code reads as the tree it builds and checks once at the end.
class FdtWriter {
 public:
  explicit FdtWriter(size_t cap) : buf_(cap) {
    err_ = fdt_create(buf_.data(), static_cast<int>(buf_.size()));
    if (err_ == 0) err_ = fdt_finish_reservemap(buf_.data());
  }
  void Begin(const std::string& name) { Do(fdt_begin_node(buf_.data(), name.c_str())); }
  void End() { Do(fdt_end_node(buf_.data())); }
  void Str(const char* name, const std::string& value) {
    Do(fdt_property_string(buf_.data(), name, value.c_str()));
  }
  void Empty(const char* name) { Do(fdt_property(buf_.data(), name, nullptr, 0)); }
  void U32(const char* name, uint32_t v) { Do(fdt_property_u32(buf_.data(), name, v)); }
  void U64(const char* name, uint64_t v) { Do(fdt_property_u64(buf_.data(), name, v)); }
  void Cells(const char* name, std::initializer_list<uint32_t> cells) {
    std::vector<fdt32_t> be;
    for (uint32_t c : cells) be.push_back(cpu_to_fdt32(c));
    Do(fdt_property(buf_.data(), name, be.data(), static_cast<int>(be.size() * sizeof(fdt32_t))));
  }
  // <base size> pairs with #address-cells = #size-cells = 2.
  void Reg(std::initializer_list<MmioRegion> regions) {
    std::vector<fdt64_t> be;
    for (const MmioRegion& r : regions) {
      be.push_back(cpu_to_fdt64(r.base));
      be.push_back(cpu_to_fdt64(r.size));
    }
    Do(fdt_property(buf_.data(), "reg", be.data(), static_cast<int>(be.size() * sizeof(fdt64_t))));
  }

  absl::StatusOr<std::vector<uint8_t>> Finish() {
    Do(fdt_finish(buf_.data()));
    if (err_ == -FDT_ERR_NOSPACE) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the device tree does not fit in its %d-byte cap; use fewer vCPUs or devices or a "
          "shorter command line",
          buf_.size()));
    }
    if (err_ != 0) {
      return absl::InternalError(absl::StrCat("building the device tree: libfdt: ", fdt_strerror(err_)));
    }
    buf_.resize(fdt_totalsize(buf_.data()));
    return std::move(buf_);
  }

 private:
  void Do(int rc) {
    if (err_ == 0 && rc < 0) err_ = rc;
  }
  std::vector<uint8_t> buf_;
  int err_ = 0;
};

std::string Hex(uint64_t v) { return absl::StrFormat("%x", v); }

bool Overlaps(MmioRegion a, uint64_t base, uint64_t size) {
  return a.base < base + size && base < a.base + a.size;
}

}  // namespace

std::string UartNodeName(uint64_t base) { return "uart@" + Hex(base); }
std::string VirtioNodeName(uint64_t base) { return "virtio_mmio@" + Hex(base); }

absl::StatusOr<std::vector<uint8_t>> BuildFdt(const FdtConfig& c) {
  if (c.vcpus == 0) return absl::InvalidArgumentError("device tree: no vCPUs");
  if (c.ram_size == 0) return absl::InvalidArgumentError("device tree: no RAM");
  if (c.initrd_end < c.initrd_start) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device tree: initrd end %#x is below its start %#x", c.initrd_end, c.initrd_start));
  }
  if (c.max_size < 64 || c.max_size > kFdtMaxSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "device tree cap %d is outside 64..%d bytes (booting.rst allows 2 MiB)", c.max_size, kFdtMaxSize));
  }
  std::vector<std::pair<std::string, MmioRegion>> mmio = {
      {"GIC distributor", c.gic.distributor}, {"GIC CPU/redistributor", c.gic.cpu}, {"UART", c.uart}};
  for (const VirtioMmioNode& v : c.virtio) mmio.push_back({VirtioNodeName(v.base), {v.base, v.size}});
  for (const auto& [name, region] : mmio) {
    if (Overlaps(region, c.ram_base, c.ram_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "device tree: %s at %#x+%#x overlaps RAM at %#x+%#x", name, region.base, region.size,
          c.ram_base, c.ram_size));
    }
  }

  FdtWriter w(c.max_size);
  w.Begin("");
  w.Str("compatible", "linux,dummy-virt");
  w.Str("model", "vessel");
  w.U32("#address-cells", 2);
  w.U32("#size-cells", 2);
  w.U32("interrupt-parent", kGicPhandle);

  w.Begin("cpus");
  w.U32("#address-cells", 1);
  w.U32("#size-cells", 0);
  for (uint32_t id = 0; id < c.vcpus; ++id) {
    const uint64_t mpidr = MpidrAffinity(id);
    w.Begin("cpu@" + Hex(mpidr));
    w.Str("device_type", "cpu");
    w.Str("compatible", "arm,arm-v8");
    w.Str("enable-method", "psci");
    w.U32("reg", static_cast<uint32_t>(mpidr));
    w.End();
  }
  w.End();

  w.Begin("psci");
  w.Str("compatible", "arm,psci-0.2");
  w.Str("method", "hvc");
  w.End();

  w.Begin("memory@" + Hex(c.ram_base));
  w.Str("device_type", "memory");
  w.Reg({{c.ram_base, c.ram_size}});
  w.End();

  const std::string uart_path = "/" + UartNodeName(c.uart.base);
  w.Begin("chosen");
  w.Str("bootargs", c.bootargs);
  w.Str("stdout-path", uart_path);
  if (c.initrd_end > c.initrd_start) {
    w.U64("linux,initrd-start", c.initrd_start);
    w.U64("linux,initrd-end", c.initrd_end);
  }
  w.End();

  w.Begin("aliases");
  w.Str("serial0", uart_path);
  w.End();

  w.Begin("intc@" + Hex(c.gic.distributor.base));
  if (c.gic.version == GicVersion::kV3) {
    w.Str("compatible", "arm,gic-v3");
  } else {
    w.Str("compatible", "arm,cortex-a15-gic");
  }
  w.U32("#interrupt-cells", 3);
  w.Empty("interrupt-controller");
  // No children, but dtc (interrupt_provider) and interrupt-map parsing want the cell sizes.
  w.U32("#address-cells", 2);
  w.U32("#size-cells", 2);
  w.Empty("ranges");
  w.Reg({c.gic.distributor, c.gic.cpu});
  w.U32("phandle", kGicPhandle);
  w.End();

  const uint32_t ppi_flags = TimerPpiFlags(c.gic.version, c.vcpus);
  w.Begin("timer");
  w.Str("compatible", "arm,armv8-timer");
  w.Empty("always-on");
  w.Cells("interrupts", {kFdtGicPpi, kTimerPpis[0], ppi_flags, kFdtGicPpi, kTimerPpis[1], ppi_flags,
                         kFdtGicPpi, kTimerPpis[2], ppi_flags, kFdtGicPpi, kTimerPpis[3], ppi_flags});
  w.End();

  w.Begin(UartNodeName(c.uart.base));
  w.Str("compatible", "ns16550a");
  w.Reg({c.uart});
  w.U32("clock-frequency", kUartClockHz);
  w.Cells("interrupts", {kFdtGicSpi, c.uart_spi, kIrqTypeLevelHigh});
  w.End();

  for (const VirtioMmioNode& v : c.virtio) {
    w.Begin(VirtioNodeName(v.base));
    w.Str("compatible", "virtio,mmio");
    w.Reg({{v.base, v.size}});
    w.Cells("interrupts", {kFdtGicSpi, v.spi, kIrqTypeEdgeRising});
    w.Empty("dma-coherent");
    w.End();
  }

  w.End();  // root
  return w.Finish();
}

}  // namespace vessel::aarch64
