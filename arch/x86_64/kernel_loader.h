// Kernel images: parsing (ELF vmlinux and bzImage per the Linux x86 boot protocol) and loading
// into guest memory. Parsing is pure and checks every offset against the file; loading checks
// every range against guest RAM. Malformed or oversized images fail with a message, never crash.
#ifndef VESSEL_ARCH_X86_64_KERNEL_LOADER_H_
#define VESSEL_ARCH_X86_64_KERNEL_LOADER_H_

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {

enum class KernelFormat { kElf, kBzImage };

struct ElfSegment {
  uint64_t file_offset;
  uint64_t paddr;
  uint64_t file_size;
  uint64_t mem_size;
};

struct KernelImage {
  KernelFormat format;
  uint64_t entry = 0;        // guest-physical 64-bit entry point
  uint64_t load_start = 0;   // lowest GPA the kernel occupies
  uint64_t load_end = 0;     // first GPA above everything the kernel needs (bss, init_size)
  uint32_t cmdline_max = 0;  // bytes the kernel accepts, NUL included
  uint64_t initrd_addr_max = 0;
  std::optional<setup_header> header;  // bzImage: the setup header to copy into boot_params
  std::vector<ElfSegment> segments;    // ELF: PT_LOAD segments
  uint64_t payload_offset = 0;         // bzImage: protected-mode code
  uint64_t payload_size = 0;
};

// Oldest boot protocol vessel accepts for bzImage (2.12: 64-bit entry, xloadflags).
inline constexpr uint16_t kMinBootProtocol = 0x020c;
// x86 COMMAND_LINE_SIZE, used when the image does not say.
inline constexpr uint32_t kDefaultCmdlineMax = 2048;

absl::StatusOr<KernelImage> ParseKernel(absl::Span<const uint8_t> file);

// Copies the kernel into guest memory. Fails if it does not fit in RAM.
absl::Status LoadKernel(const KernelImage& image, absl::Span<const uint8_t> file,
                        GuestMemory& memory);

// Picks the initrd address: the highest 4 KiB-aligned spot below min(initrd_addr_max, low_ram_end)
// that stays above the kernel. Fails if the initrd cannot fit.
absl::StatusOr<uint64_t> PlaceInitrd(const KernelImage& image, uint64_t initrd_size,
                                     uint64_t low_ram_end);

// Checks `cmdline` against the kernel's limit and our reserved area.
absl::Status CheckCmdline(const KernelImage& image, const std::string& cmdline);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_KERNEL_LOADER_H_
