// Looks up a symbol's address in an ELF file's symbol table (.symtab, else .dynsym).
#ifndef VESSEL_ARCH_X86_64_ELF_SYMBOLS_H_
#define VESSEL_ARCH_X86_64_ELF_SYMBOLS_H_

#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vessel::x86 {

// NotFound when the file has no symbol table or no such symbol; InvalidArgument when malformed.
absl::StatusOr<uint64_t> FindElfSymbol(absl::Span<const uint8_t> elf, absl::string_view name);

}  // namespace vessel::x86

#endif  // VESSEL_ARCH_X86_64_ELF_SYMBOLS_H_
