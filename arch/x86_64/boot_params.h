// Builds the Linux zero page (struct boot_params) for the 64-bit boot protocol.
#ifndef VESSEL_ARCH_X86_64_BOOT_PARAMS_H_
#define VESSEL_ARCH_X86_64_BOOT_PARAMS_H_

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace vessel::x86 {

struct BootParamsInput {
  std::optional<setup_header> header;  // bzImage's header; synthesized for ELF kernels
  uint64_t cmdline_addr = 0;
  uint32_t cmdline_size = 0;  // without the NUL
  uint64_t initrd_addr = 0;
  uint64_t initrd_size = 0;
  std::vector<boot_e820_entry> e820;
};

absl::StatusOr<boot_params> BuildBootParams(const BootParamsInput& input);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_BOOT_PARAMS_H_
