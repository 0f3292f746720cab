#include "arch/x86_64/boot_params.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "arch/x86_64/e820.h"

namespace vessel::x86 {
namespace {

// boot_params is packed: fields are copied into prvalues with unary + before comparing.

BootParamsInput BasicInput() {
  BootParamsInput in;
  in.cmdline_addr = 0x20000;
  in.cmdline_size = 42;
  in.initrd_addr = 0x7000000;
  in.initrd_size = 0x123456;
  in.e820 = *BuildE820(128ull << 20);
  return in;
}

TEST(BootParamsTest, SynthesizedHeader) {
  absl::StatusOr<boot_params> bp = BuildBootParams(BasicInput());
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(+bp->hdr.boot_flag, 0xaa55);
  EXPECT_EQ(+bp->hdr.header, 0x53726448u);  // "HdrS"
  EXPECT_EQ(std::memcmp(&bp->hdr.header, "HdrS", 4), 0);
  EXPECT_EQ(+bp->hdr.version, 0x020c);
  EXPECT_EQ(+bp->hdr.kernel_alignment, 0x1000000u);
  EXPECT_EQ(+bp->hdr.type_of_loader, 0xff);
  EXPECT_EQ(bp->hdr.loadflags & (LOADED_HIGH | CAN_USE_HEAP), LOADED_HIGH | CAN_USE_HEAP);
  EXPECT_EQ(+bp->hdr.heap_end_ptr, 0xfe00);
}

TEST(BootParamsTest, CommandLineAndInitrd) {
  absl::StatusOr<boot_params> bp = BuildBootParams(BasicInput());
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(+bp->hdr.cmd_line_ptr, 0x20000u);
  EXPECT_EQ(+bp->ext_cmd_line_ptr, 0u);
  EXPECT_EQ(+bp->hdr.cmdline_size, 42u);
  EXPECT_EQ(+bp->hdr.ramdisk_image, 0x7000000u);
  EXPECT_EQ(+bp->hdr.ramdisk_size, 0x123456u);
  EXPECT_EQ(+bp->ext_ramdisk_image, 0u);
  EXPECT_EQ(+bp->ext_ramdisk_size, 0u);
}

TEST(BootParamsTest, CommandLineAboveFourGiBUsesExtPointer) {
  BootParamsInput in = BasicInput();
  in.cmdline_addr = 0x123456789ull;
  absl::StatusOr<boot_params> bp = BuildBootParams(in);
  ASSERT_TRUE(bp.ok());
  EXPECT_EQ(+bp->hdr.cmd_line_ptr, 0x23456789u);
  EXPECT_EQ(+bp->ext_cmd_line_ptr, 0x1u);
}

TEST(BootParamsTest, NoInitrd) {
  BootParamsInput in = BasicInput();
  in.initrd_addr = 0;
  in.initrd_size = 0;
  absl::StatusOr<boot_params> bp = BuildBootParams(in);
  ASSERT_TRUE(bp.ok());
  EXPECT_EQ(+bp->hdr.ramdisk_image, 0u);
  EXPECT_EQ(+bp->hdr.ramdisk_size, 0u);
}

TEST(BootParamsTest, E820Copied) {
  BootParamsInput in = BasicInput();
  absl::StatusOr<boot_params> bp = BuildBootParams(in);
  ASSERT_TRUE(bp.ok());
  ASSERT_EQ(+bp->e820_entries, in.e820.size());
  for (size_t i = 0; i < in.e820.size(); ++i) {
    EXPECT_EQ(+bp->e820_table[i].addr, +in.e820[i].addr) << i;
    EXPECT_EQ(+bp->e820_table[i].size, +in.e820[i].size) << i;
    EXPECT_EQ(+bp->e820_table[i].type, +in.e820[i].type) << i;
  }
  EXPECT_EQ(+bp->e820_table[in.e820.size()].size, 0u);
}

TEST(BootParamsTest, FullE820TableAccepted) {
  BootParamsInput in = BasicInput();
  in.e820.clear();
  for (uint64_t i = 0; i < E820_MAX_ENTRIES_ZEROPAGE; ++i) {
    in.e820.push_back({i << 20, 1 << 20, kE820Ram});
  }
  absl::StatusOr<boot_params> bp = BuildBootParams(in);
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(+bp->e820_entries, E820_MAX_ENTRIES_ZEROPAGE);
  EXPECT_EQ(+bp->e820_table[E820_MAX_ENTRIES_ZEROPAGE - 1].addr,
            uint64_t{E820_MAX_ENTRIES_ZEROPAGE - 1} << 20);
}

TEST(BootParamsTest, HeaderCopiedFromBzImage) {
  setup_header hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  hdr.setup_sects = 27;
  hdr.boot_flag = 0xaa55;
  hdr.header = 0x53726448;
  hdr.version = 0x020f;
  hdr.loadflags = LOADED_HIGH | KEEP_SEGMENTS;
  hdr.type_of_loader = 0x21;
  hdr.kernel_alignment = 0x200000;
  hdr.relocatable_kernel = 1;
  hdr.xloadflags = XLF_KERNEL_64;
  hdr.init_size = 0x1234000;
  hdr.pref_address = 0x1000000;
  hdr.cmdline_size = 0x7ff;  // the kernel's own limit is replaced by ours below
  BootParamsInput in = BasicInput();
  in.header = hdr;
  absl::StatusOr<boot_params> bp = BuildBootParams(in);
  ASSERT_TRUE(bp.ok()) << bp.status();
  EXPECT_EQ(+bp->hdr.setup_sects, 27);
  EXPECT_EQ(+bp->hdr.version, 0x020f);
  EXPECT_EQ(+bp->hdr.kernel_alignment, 0x200000u);
  EXPECT_EQ(+bp->hdr.relocatable_kernel, 1);
  EXPECT_EQ(+bp->hdr.xloadflags, XLF_KERNEL_64);
  EXPECT_EQ(+bp->hdr.init_size, 0x1234000u);
  EXPECT_EQ(+bp->hdr.pref_address, 0x1000000u);
  // Loader fields are ours.
  EXPECT_EQ(+bp->hdr.type_of_loader, 0xff);
  EXPECT_EQ(+bp->hdr.loadflags, LOADED_HIGH | KEEP_SEGMENTS | CAN_USE_HEAP);
  EXPECT_EQ(+bp->hdr.cmdline_size, 42u);
  EXPECT_EQ(+bp->hdr.cmd_line_ptr, 0x20000u);
  EXPECT_EQ(+bp->hdr.ramdisk_image, 0x7000000u);
}

TEST(BootParamsTest, InitrdAboveFourGiBRefused) {
  BootParamsInput in = BasicInput();
  in.initrd_addr = 0x100000000ull;
  in.initrd_size = 0x1000;
  EXPECT_EQ(BuildBootParams(in).status().code(), absl::StatusCode::kInvalidArgument);
  // Straddling 4 GiB.
  in.initrd_addr = 0xfffff000ull;
  in.initrd_size = 0x2000;
  EXPECT_EQ(BuildBootParams(in).status().code(), absl::StatusCode::kInvalidArgument);
  // Ending exactly at 4 GiB is fine.
  in.initrd_size = 0x1000;
  EXPECT_TRUE(BuildBootParams(in).ok());
}

TEST(BootParamsTest, BadE820Refused) {
  BootParamsInput in = BasicInput();
  in.e820.clear();
  EXPECT_EQ(BuildBootParams(in).status().code(), absl::StatusCode::kInvalidArgument);
  for (uint64_t i = 0; i <= E820_MAX_ENTRIES_ZEROPAGE; ++i) {
    in.e820.push_back({i << 20, 1 << 20, kE820Ram});
  }
  EXPECT_EQ(BuildBootParams(in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vessel::x86
