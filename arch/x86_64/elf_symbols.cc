#include "arch/x86_64/elf_symbols.h"

#include <elf.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace vessel::x86 {
namespace {

template <typename T>
bool ReadAt(absl::Span<const uint8_t> file, uint64_t offset, T* out) {
  if (offset > file.size() || sizeof(T) > file.size() - offset) return false;
  std::memcpy(out, file.data() + offset, sizeof(T));
  return true;
}

}  // namespace

absl::StatusOr<uint64_t> FindElfSymbol(absl::Span<const uint8_t> elf, absl::string_view name) {
  Elf64_Ehdr eh;
  if (!ReadAt(elf, 0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64) {
    return absl::InvalidArgumentError("symbol lookup: not a 64-bit ELF file");
  }
  if (eh.e_shentsize != sizeof(Elf64_Shdr)) {
    return absl::InvalidArgumentError("symbol lookup: unexpected section header size");
  }
  for (int want : {SHT_SYMTAB, SHT_DYNSYM}) {
    for (uint16_t i = 0; i < eh.e_shnum; ++i) {
      Elf64_Shdr sh;
      if (!ReadAt(elf, eh.e_shoff + uint64_t{i} * sizeof(sh), &sh)) {
        return absl::InvalidArgumentError("symbol lookup: section headers are truncated");
      }
      if (sh.sh_type != static_cast<uint32_t>(want)) continue;
      Elf64_Shdr strtab;
      if (sh.sh_link >= eh.e_shnum ||
          !ReadAt(elf, eh.e_shoff + uint64_t{sh.sh_link} * sizeof(strtab), &strtab)) {
        return absl::InvalidArgumentError("symbol lookup: bad string table link");
      }
      if (strtab.sh_offset > elf.size() || strtab.sh_size > elf.size() - strtab.sh_offset ||
          sh.sh_offset > elf.size() || sh.sh_size > elf.size() - sh.sh_offset) {
        return absl::InvalidArgumentError("symbol lookup: symbol table is truncated");
      }
      const char* strings = reinterpret_cast<const char*>(elf.data() + strtab.sh_offset);
      uint64_t count = sh.sh_size / sizeof(Elf64_Sym);
      for (uint64_t k = 0; k < count; ++k) {
        Elf64_Sym sym;
        ReadAt(elf, sh.sh_offset + k * sizeof(sym), &sym);
        if (sym.st_name >= strtab.sh_size) continue;
        uint64_t max_len = strtab.sh_size - sym.st_name;
        absl::string_view sym_name(strings + sym.st_name, strnlen(strings + sym.st_name, max_len));
        if (sym_name == name && sym.st_value != 0) return sym.st_value;
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("symbol ", name, " not found in the ELF symbol table"));
}

}  // namespace vessel::x86
