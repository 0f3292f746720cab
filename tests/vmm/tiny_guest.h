// Tiny guests for fast VMM tests and benchmarks: a minimal ELF64 "kernel" whose 64-bit code runs
// at the kernel entry (1 MiB) in the long mode the VMM sets up, then powers off, reboots, faults
// or spins. Each boots and ends in milliseconds, even on software KVM.
#ifndef VESSEL_TESTS_VMM_TINY_GUEST_H_
#define VESSEL_TESTS_VMM_TINY_GUEST_H_

#include <cstdint>
#include <string>
#include <vector>

namespace vessel::testing {

// x86-64 machine code snippets.
std::vector<uint8_t> OutByte(uint16_t port, uint8_t value);  // mov dx,port; mov al,value; out dx,al
std::vector<uint8_t> PowerOffCode();                         // out 0x600, 0x34
std::vector<uint8_t> SpinCode();                             // jmp $
std::vector<uint8_t> Concat(std::vector<std::vector<uint8_t>> parts);

// An ELF64 image with `code` as its only PT_LOAD segment at physical 1 MiB, entry at its start.
std::vector<uint8_t> TinyElfKernel(const std::vector<uint8_t>& code);

// Writes `bytes` to a fresh file under $TMPDIR (or /tmp) and returns its path.
std::string WriteTempFile(const std::string& name, const std::vector<uint8_t>& bytes);

}  // namespace vessel::testing

#endif  // VESSEL_TESTS_VMM_TINY_GUEST_H_
