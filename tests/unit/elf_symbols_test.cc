#include "arch/x86_64/elf_symbols.h"

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vessel::x86 {
namespace {

struct SymbolSpec {
  std::string name;
  uint64_t value;
};

// Section indices in the built file.
constexpr uint16_t kSymtabIndex = 1;
constexpr uint16_t kStrtabIndex = 2;

// An ELF64 file: Ehdr | string table | symbol table | section headers (null, symtab, strtab).
struct ElfFile {
  std::vector<uint8_t> bytes;

  Elf64_Ehdr ehdr() const {
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof(eh));
    return eh;
  }
  void set_ehdr(const Elf64_Ehdr& eh) { std::memcpy(bytes.data(), &eh, sizeof(eh)); }
  Elf64_Shdr shdr(uint16_t i) const {
    Elf64_Shdr sh;
    std::memcpy(&sh, bytes.data() + ehdr().e_shoff + i * sizeof(sh), sizeof(sh));
    return sh;
  }
  void set_shdr(uint16_t i, const Elf64_Shdr& sh) {
    std::memcpy(bytes.data() + ehdr().e_shoff + i * sizeof(sh), &sh, sizeof(sh));
  }
};

ElfFile BuildElf(const std::vector<SymbolSpec>& symbols, uint32_t symtab_type = SHT_SYMTAB) {
  std::vector<uint8_t> strtab(1, 0);
  std::vector<Elf64_Sym> syms(1);  // index 0: the null symbol
  std::memset(syms.data(), 0, sizeof(Elf64_Sym));
  for (const SymbolSpec& s : symbols) {
    Elf64_Sym sym;
    std::memset(&sym, 0, sizeof(sym));
    sym.st_name = static_cast<uint32_t>(strtab.size());
    sym.st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
    sym.st_shndx = 1;
    sym.st_value = s.value;
    syms.push_back(sym);
    strtab.insert(strtab.end(), s.name.begin(), s.name.end());
    strtab.push_back(0);
  }

  ElfFile f;
  f.bytes.resize(sizeof(Elf64_Ehdr));
  const uint64_t strtab_off = f.bytes.size();
  f.bytes.insert(f.bytes.end(), strtab.begin(), strtab.end());
  while (f.bytes.size() % 8 != 0) f.bytes.push_back(0);
  const uint64_t symtab_off = f.bytes.size();
  const uint64_t symtab_size = syms.size() * sizeof(Elf64_Sym);
  f.bytes.resize(symtab_off + symtab_size);
  std::memcpy(f.bytes.data() + symtab_off, syms.data(), symtab_size);
  const uint64_t shoff = f.bytes.size();

  Elf64_Shdr sh[3];
  std::memset(sh, 0, sizeof(sh));
  sh[kSymtabIndex].sh_type = symtab_type;
  sh[kSymtabIndex].sh_offset = symtab_off;
  sh[kSymtabIndex].sh_size = symtab_size;
  sh[kSymtabIndex].sh_link = kStrtabIndex;
  sh[kSymtabIndex].sh_entsize = sizeof(Elf64_Sym);
  sh[kStrtabIndex].sh_type = SHT_STRTAB;
  sh[kStrtabIndex].sh_offset = strtab_off;
  sh[kStrtabIndex].sh_size = strtab.size();
  f.bytes.resize(shoff + sizeof(sh));
  std::memcpy(f.bytes.data() + shoff, sh, sizeof(sh));

  Elf64_Ehdr eh;
  std::memset(&eh, 0, sizeof(eh));
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_shoff = shoff;
  eh.e_shentsize = sizeof(Elf64_Shdr);
  eh.e_shnum = 3;
  f.set_ehdr(eh);
  return f;
}

const std::vector<SymbolSpec> kSymbols = {
    {"startup_64", 0xffffffff81000000ull},
    {"asm_exc_page_fault", 0xffffffff81a00b30ull},
    {"foobar", 0x1234},
    {"undefined_sym", 0},
};

absl::StatusCode FindCode(const ElfFile& f, const char* name) {
  return FindElfSymbol(f.bytes, name).status().code();
}

TEST(ElfSymbolsTest, FindsSymbols) {
  const ElfFile f = BuildElf(kSymbols);
  absl::StatusOr<uint64_t> v = FindElfSymbol(f.bytes, "asm_exc_page_fault");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 0xffffffff81a00b30ull);
  v = FindElfSymbol(f.bytes, "startup_64");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 0xffffffff81000000ull);
  v = FindElfSymbol(f.bytes, "foobar");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 0x1234u);
}

TEST(ElfSymbolsTest, MissingSymbolIsNotFound) {
  const ElfFile f = BuildElf(kSymbols);
  EXPECT_EQ(FindCode(f, "no_such_symbol"), absl::StatusCode::kNotFound);
  EXPECT_EQ(FindCode(f, "foo"), absl::StatusCode::kNotFound);  // a prefix is not a match
  EXPECT_EQ(FindCode(f, "foobarbaz"), absl::StatusCode::kNotFound);
  EXPECT_EQ(FindCode(f, ""), absl::StatusCode::kNotFound);     // the null symbol has value 0
}

TEST(ElfSymbolsTest, SymbolWithZeroValueIsNotFound) {
  const ElfFile f = BuildElf(kSymbols);
  EXPECT_EQ(FindCode(f, "undefined_sym"), absl::StatusCode::kNotFound);
}

TEST(ElfSymbolsTest, FallsBackToDynsym) {
  const ElfFile f = BuildElf(kSymbols, SHT_DYNSYM);
  absl::StatusOr<uint64_t> v = FindElfSymbol(f.bytes, "foobar");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 0x1234u);
}

TEST(ElfSymbolsTest, NoSymbolTableIsNotFound) {
  ElfFile f = BuildElf(kSymbols);
  Elf64_Shdr sh = f.shdr(kSymtabIndex);
  sh.sh_type = SHT_PROGBITS;
  f.set_shdr(kSymtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kNotFound);

  ElfFile none = BuildElf(kSymbols);
  Elf64_Ehdr eh = none.ehdr();
  eh.e_shnum = 0;
  none.set_ehdr(eh);
  EXPECT_EQ(FindCode(none, "foobar"), absl::StatusCode::kNotFound);
}

TEST(ElfSymbolsTest, NotElfRejected) {
  ElfFile f = BuildElf(kSymbols);
  f.bytes[0] = 0;
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);
  ElfFile elf32 = BuildElf(kSymbols);
  elf32.bytes[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(FindCode(elf32, "foobar"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FindElfSymbol({}, "foobar").status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<uint8_t> short_file(f.bytes.begin(), f.bytes.begin() + 20);
  EXPECT_EQ(FindElfSymbol(short_file, "foobar").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, WrongSectionHeaderSizeRejected) {
  ElfFile f = BuildElf(kSymbols);
  Elf64_Ehdr eh = f.ehdr();
  eh.e_shentsize = 40;  // Elf32_Shdr
  f.set_ehdr(eh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, TruncatedSectionHeadersRejected) {
  ElfFile f = BuildElf(kSymbols);
  f.bytes.resize(f.bytes.size() - 10);  // cut into the strtab's section header
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);

  ElfFile far = BuildElf(kSymbols);
  Elf64_Ehdr eh = far.ehdr();
  eh.e_shoff = far.bytes.size() + 0x1000;
  far.set_ehdr(eh);
  EXPECT_EQ(FindCode(far, "foobar"), absl::StatusCode::kInvalidArgument);
  eh.e_shoff = ~0ull - 0x20;
  far.set_ehdr(eh);
  EXPECT_EQ(FindCode(far, "foobar"), absl::StatusCode::kInvalidArgument);

  ElfFile many = BuildElf(kSymbols);
  eh = many.ehdr();
  eh.e_shnum = 0xffff;
  many.set_ehdr(eh);
  EXPECT_EQ(FindCode(many, "no_such_symbol"), absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, BadStringTableLinkRejected) {
  ElfFile f = BuildElf(kSymbols);
  // A well-formed string table header right after the table, one past e_shnum: a link to it is
  // still out of range.
  const Elf64_Shdr strtab = f.shdr(kStrtabIndex);
  const size_t end = f.bytes.size();
  f.bytes.resize(end + sizeof(strtab));
  std::memcpy(f.bytes.data() + end, &strtab, sizeof(strtab));
  Elf64_Shdr sh = f.shdr(kSymtabIndex);
  sh.sh_link = 3;  // == e_shnum
  f.set_shdr(kSymtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);
  sh.sh_link = 0xffffffff;
  f.set_shdr(kSymtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, StringTablePastEndOfFileRejected) {
  ElfFile f = BuildElf(kSymbols);
  Elf64_Shdr sh = f.shdr(kStrtabIndex);
  sh.sh_size = f.bytes.size();  // runs past EOF from its offset
  f.set_shdr(kStrtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);

  ElfFile off = BuildElf(kSymbols);
  sh = off.shdr(kStrtabIndex);
  sh.sh_offset = off.bytes.size() + 1;
  sh.sh_size = 0;
  off.set_shdr(kStrtabIndex, sh);
  EXPECT_EQ(FindCode(off, "foobar"), absl::StatusCode::kInvalidArgument);

  ElfFile wrap = BuildElf(kSymbols);
  sh = wrap.shdr(kStrtabIndex);
  sh.sh_size = ~0ull;
  wrap.set_shdr(kStrtabIndex, sh);
  EXPECT_EQ(FindCode(wrap, "foobar"), absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, SymbolTablePastEndOfFileRejected) {
  ElfFile f = BuildElf(kSymbols);
  Elf64_Shdr sh = f.shdr(kSymtabIndex);
  sh.sh_size = f.bytes.size();
  f.set_shdr(kSymtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kInvalidArgument);
}

TEST(ElfSymbolsTest, NameOffsetsOutsideStringTableAreSkipped) {
  ElfFile f = BuildElf(kSymbols);
  // Shrink the string table so that it ends inside "foobar" (no NUL): names are bounded by it.
  Elf64_Shdr sh = f.shdr(kStrtabIndex);
  const uint64_t foobar_name = 1 + std::string("startup_64").size() + 1 +
                               std::string("asm_exc_page_fault").size() + 1;
  sh.sh_size = foobar_name + 3;  // "foo"
  f.set_shdr(kStrtabIndex, sh);
  EXPECT_EQ(FindCode(f, "foobar"), absl::StatusCode::kNotFound);
  EXPECT_EQ(FindCode(f, "undefined_sym"), absl::StatusCode::kNotFound);
  EXPECT_TRUE(FindElfSymbol(f.bytes, "asm_exc_page_fault").ok());
}

TEST(ElfSymbolsTest, SymtabPreferredOverDynsym) {
  // Two symbol tables sharing one string table: .dynsym first in section order, .symtab second.
  ElfFile f = BuildElf({{"foobar", 0x1111}});
  ElfFile other = BuildElf({{"foobar", 0x2222}});
  // Append other's symbol table and a fourth section header pointing at it.
  const Elf64_Shdr other_sym = other.shdr(kSymtabIndex);
  const uint64_t new_symtab_off = f.bytes.size();
  f.bytes.insert(f.bytes.end(), other.bytes.begin() + other_sym.sh_offset,
                 other.bytes.begin() + other_sym.sh_offset + other_sym.sh_size);
  const uint64_t new_shoff = f.bytes.size();
  Elf64_Shdr sh[4];
  for (uint16_t i = 0; i < 3; ++i) sh[i] = f.shdr(i);
  sh[kSymtabIndex].sh_type = SHT_DYNSYM;
  sh[3] = other_sym;
  sh[3].sh_offset = new_symtab_off;
  f.bytes.resize(new_shoff + sizeof(sh));
  std::memcpy(f.bytes.data() + new_shoff, sh, sizeof(sh));
  Elf64_Ehdr eh = f.ehdr();
  eh.e_shoff = new_shoff;
  eh.e_shnum = 4;
  f.set_ehdr(eh);

  absl::StatusOr<uint64_t> v = FindElfSymbol(f.bytes, "foobar");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 0x2222u);
}

}  // namespace
}  // namespace vessel::x86
