#include "vmm/kvm/kvm_vm.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/kvm/raw_ioctl.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace vessel {

absl::Status KvmVm::SetUserMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region region = {};
  region.slot = slot;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_SET_USER_MEMORY_REGION slot ", slot));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetTssAddress(uint64_t gpa) {
  if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(gpa)) != 0) {
    return ErrnoStatus("KVM_SET_TSS_ADDR");
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetIdentityMapAddress(uint64_t gpa) {
  uint64_t addr = gpa;
  if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) != 0) {
    return ErrnoStatus("KVM_SET_IDENTITY_MAP_ADDR");
  }
  return absl::OkStatus();
}

absl::Status KvmVm::CreateIrqchip() {
  if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) return ErrnoStatus("KVM_CREATE_IRQCHIP");
  return absl::OkStatus();
}

absl::Status KvmVm::CreatePit() {
  kvm_pit_config config = {};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  if (::ioctl(fd_.get(), KVM_CREATE_PIT2, &config) != 0) return ErrnoStatus("KVM_CREATE_PIT2");
  return absl::OkStatus();
}

absl::Status KvmVm::SetIrqLine(uint32_t irq, bool level) {
  kvm_irq_level line = {};
  line.irq = irq;
  line.level = level ? 1 : 0;
  if (::ioctl(fd_.get(), KVM_IRQ_LINE, &line) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_IRQ_LINE ", irq));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::RegisterIoeventfd(uint64_t gpa, uint32_t len, uint64_t datamatch, int eventfd) {
  kvm_ioeventfd io = {};
  io.datamatch = datamatch;
  io.addr = gpa;
  io.len = len;
  io.fd = eventfd;
  io.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
  if (::ioctl(fd_.get(), KVM_IOEVENTFD, &io) != 0) return ErrnoStatus(absl::StrCat("KVM_IOEVENTFD at ", gpa));
  return absl::OkStatus();
}

absl::Status KvmVm::RegisterIrqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd = {};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) != 0) return ErrnoStatus(absl::StrCat("KVM_IRQFD gsi ", gsi));
  return absl::OkStatus();
}

absl::StatusOr<KvmVcpu> KvmVm::CreateVcpu(uint32_t id) {
  ScopedFd fd(::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id)));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("KVM_CREATE_VCPU ", id));
  void* run = ::mmap(nullptr, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (run == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap kvm_run of vCPU ", id));
  return KvmVcpu(id, std::move(fd), ScopedMmap(run, vcpu_mmap_size_));
}

absl::StatusOr<std::string> KvmVm::GetRaw(unsigned long request, size_t size, const char* name,
                                          absl::string_view in) const {
  return RawIoctlGet(fd_.get(), request, size, name, in);
}

absl::Status KvmVm::SetRaw(unsigned long request, absl::string_view bytes, size_t size,
                           const char* name) {
  return RawIoctlSet(fd_.get(), request, bytes, size, name);
}

}  // namespace vessel
