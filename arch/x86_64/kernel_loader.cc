#include "arch/x86_64/kernel_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "arch/x86_64/layout.h"

namespace vessel::x86 {
namespace {

constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint64_t kSetupHeaderOffset = 0x1f1;
constexpr uint64_t kMaxKernelFileBytes = 512ull << 20;

template <typename T>
bool ReadAt(absl::Span<const uint8_t> file, uint64_t offset, T* out) {
  if (offset > file.size() || sizeof(T) > file.size() - offset) return false;
  std::memcpy(out, file.data() + offset, sizeof(T));
  return true;
}

absl::StatusOr<KernelImage> ParseElf(absl::Span<const uint8_t> file) {
  Elf64_Ehdr eh;
  if (!ReadAt(file, 0, &eh)) return absl::InvalidArgumentError("ELF kernel: truncated ELF header");
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB) {
    return absl::InvalidArgumentError("ELF kernel: not a little-endian 64-bit ELF file");
  }
  if (eh.e_machine != EM_X86_64) {
    return absl::InvalidArgumentError(
        absl::StrCat("ELF kernel: machine ", eh.e_machine, " is not x86_64 (", EM_X86_64, ")"));
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0) {
    return absl::InvalidArgumentError("ELF kernel: no program headers or wrong header size");
  }
  KernelImage image;
  image.format = KernelFormat::kElf;
  image.cmdline_max = kDefaultCmdlineMax;
  image.initrd_addr_max = 0x7fffffff;
  image.load_start = UINT64_MAX;
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (!ReadAt(file, eh.e_phoff + uint64_t{i} * sizeof(Elf64_Phdr), &ph)) {
      return absl::InvalidArgumentError(absl::StrCat("ELF kernel: program header ", i, " is truncated"));
    }
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset > file.size() || ph.p_filesz > file.size() - ph.p_offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("ELF kernel: segment ", i, " extends past the end of the file (truncated?)"));
    }
    if (ph.p_filesz > ph.p_memsz || ph.p_paddr + ph.p_memsz < ph.p_paddr) {
      return absl::InvalidArgumentError(absl::StrCat("ELF kernel: segment ", i, " has bad sizes"));
    }
    image.segments.push_back({ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz});
    image.load_start = std::min<uint64_t>(image.load_start, ph.p_paddr);
    image.load_end = std::max<uint64_t>(image.load_end, ph.p_paddr + ph.p_memsz);
  }
  if (image.segments.empty()) return absl::InvalidArgumentError("ELF kernel: no PT_LOAD segment");
  // vmlinux's entry is physical (phys_startup_64); accept a kernel-virtual one too.
  image.entry = eh.e_entry >= kKernelVirtualBase ? eh.e_entry - kKernelVirtualBase : eh.e_entry;
  bool entry_in_segment = false;
  for (const ElfSegment& seg : image.segments) {
    if (image.entry >= seg.paddr && image.entry - seg.paddr < seg.mem_size) entry_in_segment = true;
  }
  if (!entry_in_segment) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ELF kernel: entry %#x lies outside its segments", image.entry));
  }
  return image;
}

absl::StatusOr<KernelImage> ParseBzImage(absl::Span<const uint8_t> file) {
  setup_header hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  if (file.size() < kSetupHeaderOffset + sizeof(hdr)) {
    return absl::InvalidArgumentError("bzImage: file too small for a setup header (truncated?)");
  }
  // The header's own length is given by the jump at 0x200: 0x202 + offset byte.
  uint64_t header_end = 0x202 + file[0x201];
  uint64_t copy = std::min<uint64_t>(sizeof(hdr), header_end - kSetupHeaderOffset);
  std::memcpy(&hdr, file.data() + kSetupHeaderOffset, copy);
  if (hdr.boot_flag != kBootFlag) return absl::InvalidArgumentError("bzImage: no 0xAA55 boot flag");
  if (hdr.header != kHdrSMagic) return absl::InvalidArgumentError("bzImage: no \"HdrS\" magic");
  if (hdr.version < kMinBootProtocol) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bzImage: boot protocol %d.%02d is too old; vessel needs 2.12 or newer (Linux 3.8+)",
        hdr.version >> 8, hdr.version & 0xff));
  }
  if (!(hdr.xloadflags & XLF_KERNEL_64)) {
    return absl::InvalidArgumentError("bzImage: kernel has no 64-bit entry point (XLF_KERNEL_64)");
  }
  if (!(hdr.loadflags & LOADED_HIGH)) {
    return absl::InvalidArgumentError("bzImage: kernel does not load at 1 MiB (zImage?)");
  }
  uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  KernelImage image;
  image.format = KernelFormat::kBzImage;
  image.payload_offset = (setup_sects + 1) * 512;
  if (image.payload_offset >= file.size()) {
    return absl::InvalidArgumentError("bzImage: no protected-mode code after the setup sectors");
  }
  image.payload_size = file.size() - image.payload_offset;
  image.load_start = kHighMemoryStart;
  image.entry = kHighMemoryStart + 0x200;  // startup_64
  uint64_t need = std::max<uint64_t>(image.payload_size, hdr.init_size);
  // Without KASLR the decompressor moves the kernel to at least pref_address (LOAD_PHYSICAL_ADDR),
  // relocatable or not, and needs init_size bytes from there.
  image.load_end = std::max<uint64_t>(kHighMemoryStart + need, hdr.pref_address + hdr.init_size);
  image.cmdline_max = hdr.cmdline_size + 1;  // cmdline_size excludes the NUL
  image.initrd_addr_max = hdr.initrd_addr_max;
  image.header = hdr;
  return image;
}

}  // namespace

absl::StatusOr<KernelImage> ParseKernel(absl::Span<const uint8_t> file) {
  if (file.size() > kMaxKernelFileBytes) {
    return absl::InvalidArgumentError("kernel image is larger than 512 MiB");
  }
  if (file.size() >= 4 && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0) return ParseElf(file);
  if (file.size() >= 0x206 && std::memcmp(file.data() + 0x202, "HdrS", 4) == 0) {
    return ParseBzImage(file);
  }
  return absl::InvalidArgumentError(
      "kernel image is neither an ELF vmlinux nor a bzImage (no ELF or HdrS magic)");
}

absl::Status LoadKernel(const KernelImage& image, absl::Span<const uint8_t> file,
                        GuestMemory& memory) {
  if (!memory.Contains(image.load_start, image.load_end - image.load_start)) {
    return absl::OutOfRangeError(absl::StrFormat(
        "kernel needs guest RAM %#x-%#x but the VM has %d MiB: give it more memory", image.load_start,
        image.load_end, memory.total_size() >> 20));
  }
  if (image.format == KernelFormat::kElf) {
    for (const ElfSegment& seg : image.segments) {
      absl::Status s = memory.Write(seg.paddr, file.data() + seg.file_offset, seg.file_size);
      if (!s.ok()) return s;
      s = memory.Fill(seg.paddr + seg.file_size, 0, seg.mem_size - seg.file_size);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return memory.Write(kHighMemoryStart, file.data() + image.payload_offset, image.payload_size);
}

absl::StatusOr<uint64_t> PlaceInitrd(const KernelImage& image, uint64_t initrd_size,
                                     uint64_t low_ram_end) {
  uint64_t top = std::min<uint64_t>(low_ram_end, image.initrd_addr_max + 1);
  if (initrd_size > top) {
    return absl::OutOfRangeError(absl::StrFormat(
        "initrd of %d bytes is larger than the %d MiB of RAM it can be placed in", initrd_size,
        top >> 20));
  }
  uint64_t addr = (top - initrd_size) & ~uint64_t{0xfff};
  if (addr < image.load_end) {
    return absl::OutOfRangeError(absl::StrFormat(
        "initrd of %d KiB does not fit between the kernel (ends at %#x) and %#x: give the VM more "
        "memory",
        initrd_size >> 10, image.load_end, top));
  }
  return addr;
}

absl::Status CheckCmdline(const KernelImage& image, const std::string& cmdline) {
  uint64_t limit = std::min<uint64_t>(image.cmdline_max, kCmdlineMaxBytes);
  if (cmdline.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("kernel command line contains a NUL byte");
  }
  if (cmdline.size() + 1 > limit) {
    return absl::InvalidArgumentError(absl::StrCat("kernel command line is ", cmdline.size(),
                                                   " bytes; this kernel accepts at most ",
                                                   limit - 1, ": shorten --append"));
  }
  return absl::OkStatus();
}

}  // namespace vessel::x86
