#include "arch/x86_64/kernel_loader.h"

#include <elf.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "arch/x86_64/layout.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::x86 {
namespace {

using ::testing::Each;

constexpr uint64_t kMiB = 1ull << 20;

// ---- Synthetic ELF64 images ----

struct SegmentSpec {
  uint32_t type = PT_LOAD;
  uint64_t paddr = 0;
  std::vector<uint8_t> data;
  uint64_t mem_size = 0;  // 0: same as data.size()
};

// Ehdr at 0, Phdrs right after it, then each segment's data in order.
std::vector<uint8_t> BuildElf(uint64_t entry, const std::vector<SegmentSpec>& segments) {
  const uint64_t phoff = sizeof(Elf64_Ehdr);
  uint64_t data_off = phoff + segments.size() * sizeof(Elf64_Phdr);
  std::vector<uint8_t> file(data_off);
  Elf64_Ehdr eh = {};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = entry;
  eh.e_phoff = phoff;
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<uint16_t>(segments.size());
  std::memcpy(file.data(), &eh, sizeof(eh));
  for (size_t i = 0; i < segments.size(); ++i) {
    const SegmentSpec& s = segments[i];
    Elf64_Phdr ph = {};
    ph.p_type = s.type;
    ph.p_flags = PF_R | PF_X;
    ph.p_offset = data_off;
    ph.p_vaddr = s.paddr + kKernelVirtualBase;
    ph.p_paddr = s.paddr;
    ph.p_filesz = s.data.size();
    ph.p_memsz = s.mem_size != 0 ? s.mem_size : s.data.size();
    ph.p_align = 0x1000;
    std::memcpy(file.data() + phoff + i * sizeof(Elf64_Phdr), &ph, sizeof(ph));
    file.insert(file.end(), s.data.begin(), s.data.end());
    data_off += s.data.size();
  }
  return file;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

Elf64_Ehdr GetEhdr(const std::vector<uint8_t>& file) {
  Elf64_Ehdr eh;
  std::memcpy(&eh, file.data(), sizeof(eh));
  return eh;
}
void SetEhdr(std::vector<uint8_t>& file, const Elf64_Ehdr& eh) {
  std::memcpy(file.data(), &eh, sizeof(eh));
}
Elf64_Phdr GetPhdr(const std::vector<uint8_t>& file, size_t i) {
  Elf64_Phdr ph;
  std::memcpy(&ph, file.data() + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), sizeof(ph));
  return ph;
}
void SetPhdr(std::vector<uint8_t>& file, size_t i, const Elf64_Phdr& ph) {
  std::memcpy(file.data() + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), &ph, sizeof(ph));
}

// A two-segment kernel: text at 1 MiB (0x100 bytes in the file, 0x300 in memory: the rest is
// bss), data at 2 MiB, and a PT_NOTE that is ignored.
std::vector<uint8_t> ValidElf() {
  return BuildElf(0x100010, {
                                SegmentSpec{PT_LOAD, 0x100000, Pattern(0x100, 1), 0x300},
                                SegmentSpec{PT_NOTE, 0x5000000, Pattern(0x10, 9), 0},
                                SegmentSpec{PT_LOAD, 0x200000, Pattern(0x40, 3), 0},
                            });
}

GuestMemory MakeMemory(uint64_t bytes) {
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, bytes}});
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status();
    std::abort();
  }
  return std::move(*mem);
}

absl::StatusCode ParseCode(const std::vector<uint8_t>& file) {
  return ParseKernel(file).status().code();
}

TEST(ParseElfTest, ValidImage) {
  const std::vector<uint8_t> file = ValidElf();
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->format, KernelFormat::kElf);
  EXPECT_EQ(image->entry, 0x100010u);
  EXPECT_EQ(image->load_start, 0x100000u);
  EXPECT_EQ(image->load_end, 0x200040u);
  EXPECT_EQ(image->cmdline_max, kDefaultCmdlineMax);
  EXPECT_EQ(image->initrd_addr_max, 0x7fffffffu);
  EXPECT_FALSE(image->header.has_value());
  ASSERT_EQ(image->segments.size(), 2u);
  const uint64_t data_start = sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr);
  EXPECT_EQ(image->segments[0].file_offset, data_start);
  EXPECT_EQ(image->segments[0].paddr, 0x100000u);
  EXPECT_EQ(image->segments[0].file_size, 0x100u);
  EXPECT_EQ(image->segments[0].mem_size, 0x300u);
  EXPECT_EQ(image->segments[1].file_offset, data_start + 0x110);
  EXPECT_EQ(image->segments[1].paddr, 0x200000u);
  EXPECT_EQ(image->segments[1].file_size, 0x40u);
  EXPECT_EQ(image->segments[1].mem_size, 0x40u);
}

TEST(ParseElfTest, KernelVirtualEntryIsConverted) {
  const std::vector<uint8_t> file =
      BuildElf(kKernelVirtualBase + 0x1000040, {SegmentSpec{PT_LOAD, 0x1000000, Pattern(0x80, 0)}});
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->entry, 0x1000040u);
}

TEST(ParseElfTest, LoadRangeSpansUnorderedSegments) {
  const std::vector<uint8_t> file = BuildElf(
      0x400000, {SegmentSpec{PT_LOAD, 0x800000, Pattern(0x10, 0), 0x2000},
                 SegmentSpec{PT_LOAD, 0x400000, Pattern(0x10, 0), 0}});
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->load_start, 0x400000u);
  EXPECT_EQ(image->load_end, 0x802000u);
}

TEST(ParseElfTest, BadMagicRejected) {
  std::vector<uint8_t> file = ValidElf();
  file[1] = 'X';
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCode({}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCode({0x7f, 'E', 'L'}), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, ThirtyTwoBitClassRejected) {
  std::vector<uint8_t> file = ValidElf();
  file[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, BigEndianRejected) {
  std::vector<uint8_t> file = ValidElf();
  file[EI_DATA] = ELFDATA2MSB;
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, WrongMachineRejected) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Ehdr eh = GetEhdr(file);
  eh.e_machine = EM_AARCH64;
  SetEhdr(file, eh);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
  eh.e_machine = EM_386;
  SetEhdr(file, eh);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, TruncatedHeaderRejected) {
  const std::vector<uint8_t> file = ValidElf();
  for (size_t len : {size_t{4}, size_t{16}, sizeof(Elf64_Ehdr) - 1}) {
    EXPECT_EQ(ParseCode(std::vector<uint8_t>(file.begin(), file.begin() + len)),
              absl::StatusCode::kInvalidArgument)
        << len;
  }
}

TEST(ParseElfTest, TruncatedProgramHeadersRejected) {
  // Move the program header table to the end of the file, then cut inside its last entry: the
  // segments the first two entries describe are intact.
  std::vector<uint8_t> file = ValidElf();
  const size_t table_size = 3 * sizeof(Elf64_Phdr);
  const std::vector<uint8_t> table(file.begin() + sizeof(Elf64_Ehdr),
                                   file.begin() + sizeof(Elf64_Ehdr) + table_size);
  const size_t table_offset = file.size();
  file.insert(file.end(), table.begin(), table.end());
  Elf64_Ehdr eh = GetEhdr(file);
  eh.e_phoff = table_offset;
  SetEhdr(file, eh);
  ASSERT_TRUE(ParseKernel(file).ok());
  file.resize(table_offset + 2 * sizeof(Elf64_Phdr) + 10);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);

  // Program header table starting near or past the end of the file.
  std::vector<uint8_t> moved = ValidElf();
  eh = GetEhdr(moved);
  eh.e_phoff = moved.size() - sizeof(Elf64_Phdr) / 2;
  SetEhdr(moved, eh);
  EXPECT_EQ(ParseCode(moved), absl::StatusCode::kInvalidArgument);
  eh.e_phoff = moved.size() + 1;
  SetEhdr(moved, eh);
  EXPECT_EQ(ParseCode(moved), absl::StatusCode::kInvalidArgument);
  eh.e_phoff = ~0ull - 8;
  SetEhdr(moved, eh);
  EXPECT_EQ(ParseCode(moved), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, NoOrMisSizedProgramHeadersRejected) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Ehdr eh = GetEhdr(file);
  eh.e_phnum = 0;
  SetEhdr(file, eh);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
  eh = GetEhdr(ValidElf());
  eh.e_phentsize = sizeof(Elf64_Phdr) - 1;
  SetEhdr(file, eh);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, SegmentPastEndOfFileRejected) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Phdr ph = GetPhdr(file, 2);
  ph.p_filesz += 1;  // the last segment ends exactly at EOF
  ph.p_memsz += 1;
  SetPhdr(file, 2, ph);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);

  file = ValidElf();
  ph = GetPhdr(file, 0);
  ph.p_offset = file.size() + 1;
  SetPhdr(file, 0, ph);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);

  file = ValidElf();
  ph = GetPhdr(file, 0);
  ph.p_filesz = ~0ull;
  ph.p_memsz = ~0ull;
  SetPhdr(file, 0, ph);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, SegmentPastEndOfFileIgnoredWhenNotLoad) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Phdr ph = GetPhdr(file, 1);  // PT_NOTE
  ph.p_offset = file.size() + 0x1000;
  SetPhdr(file, 1, ph);
  EXPECT_TRUE(ParseKernel(file).ok());
}

TEST(ParseElfTest, FileSizeAboveMemSizeRejected) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Phdr ph = GetPhdr(file, 0);
  ph.p_memsz = ph.p_filesz - 1;
  SetPhdr(file, 0, ph);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, WrappingSegmentRejected) {
  std::vector<uint8_t> file = ValidElf();
  Elf64_Phdr ph = GetPhdr(file, 2);
  ph.p_paddr = ~0ull - 0x10;
  SetPhdr(file, 2, ph);
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, NoLoadSegmentRejected) {
  const std::vector<uint8_t> file =
      BuildElf(0x100000, {SegmentSpec{PT_NOTE, 0x100000, Pattern(0x10, 0), 0},
                          SegmentSpec{PT_GNU_STACK, 0, {}, 0}});
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseElfTest, EntryOutsideSegmentsRejected) {
  for (uint64_t entry : {uint64_t{0}, uint64_t{0xfffff}, uint64_t{0x200040}, uint64_t{0x300000},
                         kKernelVirtualBase + 0x300000}) {
    std::vector<uint8_t> file = ValidElf();
    Elf64_Ehdr eh = GetEhdr(file);
    eh.e_entry = entry;
    SetEhdr(file, eh);
    EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument) << std::hex << entry;
  }
  // The first and last byte of the load range are accepted.
  for (uint64_t entry : {uint64_t{0x100000}, uint64_t{0x20003f}}) {
    std::vector<uint8_t> file = ValidElf();
    Elf64_Ehdr eh = GetEhdr(file);
    eh.e_entry = entry;
    SetEhdr(file, eh);
    EXPECT_TRUE(ParseKernel(file).ok()) << std::hex << entry;
  }
}

TEST(ParseKernelTest, OversizedFileRejectedWithoutReadingIt) {
  const size_t size = (512 * kMiB) + 1;
  // Never touched: PROT_NONE makes any read crash the test.
  void* addr = ::mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(addr, MAP_FAILED);
  absl::Span<const uint8_t> file(static_cast<const uint8_t*>(addr), size);
  EXPECT_EQ(ParseKernel(file).status().code(), absl::StatusCode::kInvalidArgument);
  ::munmap(addr, size);
}

TEST(LoadKernelTest, ElfSegmentsCopiedAndBssZeroed) {
  const std::vector<uint8_t> file = ValidElf();
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  GuestMemory mem = MakeMemory(4 * kMiB);
  // Dirty the bss and the bytes around the segments.
  ASSERT_TRUE(mem.Fill(0x0ff000, 0xee, 0x202000).ok());
  ASSERT_TRUE(LoadKernel(*image, file, mem).ok());

  std::vector<uint8_t> text(0x100);
  ASSERT_TRUE(mem.Read(0x100000, text.data(), text.size()).ok());
  EXPECT_EQ(text, Pattern(0x100, 1));
  std::vector<uint8_t> bss(0x200);
  ASSERT_TRUE(mem.Read(0x100100, bss.data(), bss.size()).ok());
  EXPECT_THAT(bss, Each(0));
  std::vector<uint8_t> data(0x40);
  ASSERT_TRUE(mem.Read(0x200000, data.data(), data.size()).ok());
  EXPECT_EQ(data, Pattern(0x40, 3));
  // Nothing written outside the segments.
  EXPECT_EQ(*mem.ReadObj<uint8_t>(0x0fffff), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(0x100300), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(0x1fffff), 0xee);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(0x200040), 0xee);
  // The PT_NOTE was not loaded.
  EXPECT_FALSE(mem.Contains(0x5000000, 1));
}

TEST(LoadKernelTest, ElfTooBigForRamFailsWithOutOfRange) {
  const std::vector<uint8_t> file = ValidElf();
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok());
  GuestMemory mem = MakeMemory(2 * kMiB);  // load_end is 2 MiB + 0x40
  EXPECT_EQ(LoadKernel(*image, file, mem).code(), absl::StatusCode::kOutOfRange);
  // Checked before anything is written.
  std::vector<uint8_t> text(0x100);
  ASSERT_TRUE(mem.Read(0x100000, text.data(), text.size()).ok());
  EXPECT_THAT(text, Each(0));
}

// ---- Synthetic bzImages ----

constexpr uint64_t kSetupHeaderOffset = 0x1f1;

struct BzSpec {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint16_t xloadflags = XLF_KERNEL_64;
  uint8_t loadflags = LOADED_HIGH;
  uint16_t boot_flag = 0xaa55;
  uint32_t cmdline_size = 2047;
  uint32_t init_size = 0x400000;
  uint64_t pref_address = 0x1000000;
  uint8_t relocatable = 1;
  uint32_t initrd_addr_max = 0x7fffffff;
  size_t payload_size = 0x3000;
  // Header length: 0x202 + this byte is where the header ends.
  uint8_t header_len = static_cast<uint8_t>(kSetupHeaderOffset + sizeof(setup_header) - 0x202);
};

std::vector<uint8_t> BuildBzImage(const BzSpec& spec) {
  const uint64_t sects = spec.setup_sects == 0 ? 4 : spec.setup_sects;
  std::vector<uint8_t> file((sects + 1) * 512, 0);
  setup_header hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  hdr.setup_sects = spec.setup_sects;
  hdr.boot_flag = spec.boot_flag;
  hdr.jump = static_cast<uint16_t>(0xeb | (spec.header_len << 8));
  hdr.header = 0x53726448;
  hdr.version = spec.version;
  hdr.loadflags = spec.loadflags;
  hdr.initrd_addr_max = spec.initrd_addr_max;
  hdr.kernel_alignment = 0x200000;
  hdr.relocatable_kernel = spec.relocatable;
  hdr.xloadflags = spec.xloadflags;
  hdr.cmdline_size = spec.cmdline_size;
  hdr.pref_address = spec.pref_address;
  hdr.init_size = spec.init_size;
  std::memcpy(file.data() + kSetupHeaderOffset, &hdr, sizeof(hdr));
  const std::vector<uint8_t> payload = Pattern(spec.payload_size, 0x33);
  file.insert(file.end(), payload.begin(), payload.end());
  return file;
}

TEST(ParseBzImageTest, ValidImage) {
  const BzSpec spec;
  const std::vector<uint8_t> file = BuildBzImage(spec);
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->format, KernelFormat::kBzImage);
  EXPECT_EQ(image->entry, kHighMemoryStart + 0x200);
  EXPECT_EQ(image->load_start, kHighMemoryStart);
  // The decompressor runs the kernel from pref_address (16 MiB) even when relocatable.
  EXPECT_EQ(image->load_end, 0x1000000u + 0x400000);
  EXPECT_EQ(image->cmdline_max, 2048u);
  EXPECT_EQ(image->initrd_addr_max, 0x7fffffffu);
  EXPECT_EQ(image->payload_offset, 5u * 512);
  EXPECT_EQ(image->payload_size, 0x3000u);
  EXPECT_TRUE(image->segments.empty());
  ASSERT_TRUE(image->header.has_value());
  EXPECT_EQ(+image->header->version, 0x020f);
  EXPECT_EQ(+image->header->boot_flag, 0xaa55);
  EXPECT_EQ(+image->header->setup_sects, 4);
  EXPECT_EQ(+image->header->init_size, 0x400000u);
  EXPECT_EQ(+image->header->pref_address, 0x1000000u);
  EXPECT_EQ(+image->header->xloadflags, XLF_KERNEL_64);
}

TEST(ParseBzImageTest, PayloadLargerThanInitSizeSetsLoadEnd) {
  BzSpec spec;
  spec.init_size = 0x1000;
  spec.payload_size = 0x5000;
  spec.pref_address = 0;  // a header without a preferred address: only the payload at 1 MiB counts
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->load_end, kHighMemoryStart + 0x5000);
}

TEST(ParseBzImageTest, NonRelocatableKernelNeedsPrefAddressPlusInitSize) {
  BzSpec spec;
  spec.relocatable = 0;
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->load_end, 0x1000000u + 0x400000u);
}

TEST(ParseBzImageTest, ZeroSetupSectorsMeansFour) {
  BzSpec spec;
  spec.setup_sects = 0;
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->payload_offset, 5u * 512);
  EXPECT_EQ(image->payload_size, 0x3000u);
}

TEST(ParseBzImageTest, MoreSetupSectors) {
  BzSpec spec;
  spec.setup_sects = 30;
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->payload_offset, 31u * 512);
  EXPECT_EQ(image->payload_size, 0x3000u);
}

TEST(ParseBzImageTest, FieldsBeyondDeclaredHeaderLengthIgnored) {
  BzSpec spec;
  spec.relocatable = 0;
  // Header ends at 0x258: pref_address (0x258) and init_size (0x260) are not part of it.
  spec.header_len = 0x258 - 0x202;
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(+image->header->pref_address, 0u);
  EXPECT_EQ(+image->header->init_size, 0u);
  EXPECT_EQ(+image->header->cmdline_size, 2047u);  // at 0x238: inside
  EXPECT_EQ(image->load_end, kHighMemoryStart + 0x3000);
}

TEST(ParseBzImageTest, OldProtocolRejected) {
  BzSpec spec;
  spec.version = 0x020b;
  EXPECT_EQ(ParseCode(BuildBzImage(spec)), absl::StatusCode::kInvalidArgument);
  spec.version = 0x020c;
  EXPECT_TRUE(ParseKernel(BuildBzImage(spec)).ok());
}

TEST(ParseBzImageTest, No64BitEntryRejected) {
  BzSpec spec;
  spec.xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G;
  EXPECT_EQ(ParseCode(BuildBzImage(spec)), absl::StatusCode::kInvalidArgument);
}

TEST(ParseBzImageTest, NotLoadedHighRejected) {
  BzSpec spec;
  spec.loadflags = 0;
  EXPECT_EQ(ParseCode(BuildBzImage(spec)), absl::StatusCode::kInvalidArgument);
}

TEST(ParseBzImageTest, NoBootFlagRejected) {
  BzSpec spec;
  spec.boot_flag = 0x55aa;
  EXPECT_EQ(ParseCode(BuildBzImage(spec)), absl::StatusCode::kInvalidArgument);
}

TEST(ParseBzImageTest, NoHdrSMagicRejected) {
  std::vector<uint8_t> file = BuildBzImage(BzSpec{});
  file[0x205] = 'X';
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(ParseBzImageTest, TruncatedRejected) {
  const std::vector<uint8_t> file = BuildBzImage(BzSpec{});
  for (size_t len : {size_t{0x206}, size_t{0x240}, kSetupHeaderOffset + sizeof(setup_header) - 1}) {
    EXPECT_EQ(ParseCode(std::vector<uint8_t>(file.begin(), file.begin() + len)),
              absl::StatusCode::kInvalidArgument)
        << len;
  }
}

TEST(ParseBzImageTest, SetupSectorsPastEndOfFileRejected) {
  BzSpec spec;
  spec.payload_size = 0;  // setup sectors only, no protected-mode code
  EXPECT_EQ(ParseCode(BuildBzImage(spec)), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> file = BuildBzImage(BzSpec{});
  file[kSetupHeaderOffset] = 200;  // setup_sects: 100 KiB of setup in a 14 KiB file
  EXPECT_EQ(ParseCode(file), absl::StatusCode::kInvalidArgument);
}

TEST(LoadKernelTest, BzImagePayloadCopiedToOneMiB) {
  const std::vector<uint8_t> file = BuildBzImage(BzSpec{});
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok()) << image.status();
  GuestMemory mem = MakeMemory(24 * kMiB);  // room up to pref_address + init_size
  ASSERT_TRUE(LoadKernel(*image, file, mem).ok());
  std::vector<uint8_t> payload(0x3000);
  ASSERT_TRUE(mem.Read(kHighMemoryStart, payload.data(), payload.size()).ok());
  EXPECT_EQ(payload, Pattern(0x3000, 0x33));
  // The setup sectors are not loaded.
  std::vector<uint8_t> low(0x1000);
  ASSERT_TRUE(mem.Read(0, low.data(), low.size()).ok());
  EXPECT_THAT(low, Each(0));
}

TEST(LoadKernelTest, BzImageTooBigForRamFailsWithOutOfRange) {
  const std::vector<uint8_t> file = BuildBzImage(BzSpec{});  // needs RAM up to 5 MiB
  absl::StatusOr<KernelImage> image = ParseKernel(file);
  ASSERT_TRUE(image.ok());
  GuestMemory mem = MakeMemory(4 * kMiB);
  EXPECT_EQ(LoadKernel(*image, file, mem).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*mem.ReadObj<uint8_t>(kHighMemoryStart), 0);
}

// ---- PlaceInitrd ----

KernelImage ImageEndingAt(uint64_t load_end, uint64_t initrd_addr_max = 0x7fffffff) {
  KernelImage image;
  image.format = KernelFormat::kBzImage;
  image.load_start = kHighMemoryStart;
  image.load_end = load_end;
  image.initrd_addr_max = initrd_addr_max;
  image.cmdline_max = 2048;
  return image;
}

TEST(PlaceInitrdTest, HighestAlignedSpotBelowRamEnd) {
  const KernelImage image = ImageEndingAt(32 * kMiB);
  const uint64_t size = 0x123456;
  absl::StatusOr<uint64_t> addr = PlaceInitrd(image, size, 128 * kMiB);
  ASSERT_TRUE(addr.ok()) << addr.status();
  EXPECT_EQ(*addr % 4096, 0u);
  EXPECT_LE(*addr + size, 128 * kMiB);
  EXPECT_GT(*addr + size + 4096, 128 * kMiB);  // as high as alignment allows
  EXPECT_GE(*addr, image.load_end);
  EXPECT_EQ(*addr, 0x7edc000u);
}

TEST(PlaceInitrdTest, RespectsInitrdAddrMax) {
  const KernelImage image = ImageEndingAt(32 * kMiB, 0x37ffffff);
  const uint64_t size = 0x100000;
  absl::StatusOr<uint64_t> addr = PlaceInitrd(image, size, 3ull << 30);
  ASSERT_TRUE(addr.ok()) << addr.status();
  EXPECT_EQ(*addr, 0x38000000u - size);
  EXPECT_LE(*addr + size - 1, image.initrd_addr_max);
}

TEST(PlaceInitrdTest, ExactFitAboveKernel) {
  const KernelImage image = ImageEndingAt(32 * kMiB);
  absl::StatusOr<uint64_t> addr = PlaceInitrd(image, 96 * kMiB, 128 * kMiB);
  ASSERT_TRUE(addr.ok()) << addr.status();
  EXPECT_EQ(*addr, 32 * kMiB);
}

TEST(PlaceInitrdTest, OverlappingKernelFails) {
  const KernelImage image = ImageEndingAt(120 * kMiB);
  EXPECT_EQ(PlaceInitrd(image, 10 * kMiB, 128 * kMiB).status().code(),
            absl::StatusCode::kOutOfRange);
  // One byte more than the room between the kernel and RAM's end.
  const KernelImage image2 = ImageEndingAt(32 * kMiB);
  EXPECT_EQ(PlaceInitrd(image2, 96 * kMiB + 1, 128 * kMiB).status().code(),
            absl::StatusCode::kOutOfRange);
  // The kernel's last byte is the initrd's first.
  const KernelImage image3 = ImageEndingAt(32 * kMiB + 1);
  EXPECT_EQ(PlaceInitrd(image3, 96 * kMiB, 128 * kMiB).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST(PlaceInitrdTest, LargerThanRamFails) {
  const KernelImage image = ImageEndingAt(2 * kMiB);
  EXPECT_EQ(PlaceInitrd(image, 256 * kMiB, 128 * kMiB).status().code(),
            absl::StatusCode::kOutOfRange);
  // Larger than the initrd_addr_max window though RAM is big enough.
  const KernelImage capped = ImageEndingAt(2 * kMiB, 0x00ffffff);
  EXPECT_EQ(PlaceInitrd(capped, 32 * kMiB, 128 * kMiB).status().code(),
            absl::StatusCode::kOutOfRange);
}

// ---- CheckCmdline ----

TEST(CheckCmdlineTest, KernelLimitIncludesNul) {
  const KernelImage image = ImageEndingAt(32 * kMiB);  // cmdline_max 2048
  EXPECT_TRUE(CheckCmdline(image, "").ok());
  EXPECT_TRUE(CheckCmdline(image, "console=ttyS0").ok());
  EXPECT_TRUE(CheckCmdline(image, std::string(2047, 'a')).ok());
  EXPECT_EQ(CheckCmdline(image, std::string(2048, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckCmdlineTest, ReservedAreaCapsLargeKernelLimit) {
  KernelImage image = ImageEndingAt(32 * kMiB);
  image.cmdline_max = 1u << 20;
  EXPECT_TRUE(CheckCmdline(image, std::string(kCmdlineMaxBytes - 1, 'a')).ok());
  EXPECT_EQ(CheckCmdline(image, std::string(kCmdlineMaxBytes, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckCmdlineTest, NulByteRejected) {
  const KernelImage image = ImageEndingAt(32 * kMiB);
  EXPECT_EQ(CheckCmdline(image, std::string("console=ttyS0\0evil", 18)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckCmdline(image, std::string(1, '\0')).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckCmdlineTest, BzImageLimitFromHeader) {
  BzSpec spec;
  spec.cmdline_size = 255;
  absl::StatusOr<KernelImage> image = ParseKernel(BuildBzImage(spec));
  ASSERT_TRUE(image.ok());
  EXPECT_TRUE(CheckCmdline(*image, std::string(255, 'x')).ok());
  EXPECT_FALSE(CheckCmdline(*image, std::string(256, 'x')).ok());
}

}  // namespace
}  // namespace vessel::x86
