#include "tests/vmm/tiny_guest.h"

#include <elf.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

namespace vessel::testing {

std::vector<uint8_t> OutByte(uint16_t port, uint8_t value) {
  return {0x66, 0xba, static_cast<uint8_t>(port & 0xff), static_cast<uint8_t>(port >> 8),  // mov dx, port
          0xb0, value,                                                                      // mov al, value
          0xee};                                                                            // out dx, al
}

std::vector<uint8_t> PowerOffCode() { return OutByte(0x600, 0x34); }

std::vector<uint8_t> SpinCode() { return {0xeb, 0xfe}; }

std::vector<uint8_t> Concat(std::vector<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<uint8_t> TinyElfKernel(const std::vector<uint8_t>& code) {
  constexpr uint64_t kCodeOffset = 0x1000;
  constexpr uint64_t kLoadAddr = 0x100000;
  std::vector<uint8_t> file(kCodeOffset + code.size(), 0);
  Elf64_Ehdr eh = {};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = kLoadAddr;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph = {};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_X;
  ph.p_offset = kCodeOffset;
  ph.p_vaddr = kLoadAddr;
  ph.p_paddr = kLoadAddr;
  ph.p_filesz = code.size();
  ph.p_memsz = code.size();
  ph.p_align = 0x1000;
  std::memcpy(file.data(), &eh, sizeof(eh));
  std::memcpy(file.data() + sizeof(eh), &ph, sizeof(ph));
  std::memcpy(file.data() + kCodeOffset, code.data(), code.size());
  return file;
}

std::string WriteTempFile(const std::string& name, const std::vector<uint8_t>& bytes) {
  const char* tmp = getenv("TMPDIR");
  std::string path = std::string(tmp ? tmp : "/tmp") + "/vessel-" + name + "-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) return "";
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  return path;
}

}  // namespace vessel::testing
