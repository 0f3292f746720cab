#include "arch/x86_64/boot_params.h"

#include <cstring>

namespace vessel::x86 {

absl::StatusOr<boot_params> BuildBootParams(const BootParamsInput& input) {
  if (input.e820.empty() || input.e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InvalidArgumentError("boot params: e820 map must have 1..128 entries");
  }
  if (input.initrd_addr + input.initrd_size > 0x100000000ull) {
    return absl::InvalidArgumentError("boot params: initrd must lie below 4 GiB");
  }
  boot_params bp;
  std::memset(&bp, 0, sizeof(bp));
  if (input.header.has_value()) {
    bp.hdr = *input.header;
  } else {
    bp.hdr.boot_flag = 0xaa55;
    bp.hdr.header = 0x53726448;  // "HdrS"
    bp.hdr.version = 0x020c;
    bp.hdr.kernel_alignment = 0x1000000;
  }
  bp.hdr.type_of_loader = 0xff;  // undefined loader
  bp.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
  bp.hdr.heap_end_ptr = 0xfe00;
  bp.hdr.cmd_line_ptr = static_cast<uint32_t>(input.cmdline_addr);
  bp.ext_cmd_line_ptr = static_cast<uint32_t>(input.cmdline_addr >> 32);
  bp.hdr.cmdline_size = input.cmdline_size;
  bp.hdr.ramdisk_image = static_cast<uint32_t>(input.initrd_addr);
  bp.hdr.ramdisk_size = static_cast<uint32_t>(input.initrd_size);
  bp.e820_entries = static_cast<uint8_t>(input.e820.size());
  for (size_t i = 0; i < input.e820.size(); ++i) bp.e820_table[i] = input.e820[i];
  return bp;
}

}  // namespace vessel::x86
