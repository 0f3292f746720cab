#include "arch/aarch64/kvm_arm.h"

#include "absl/strings/str_cat.h"
#include "arch/aarch64/layout.h"
#include "arch/aarch64/regs.h"

#if defined(__aarch64__)
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstddef>

#include "vmm/base/errors.h"
#endif

namespace vessel::aarch64 {

#if defined(__aarch64__)

#define VESSEL_CORE_REG(field) \
  (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(field))
static_assert(XRegId(0) == VESSEL_CORE_REG(regs.regs[0]));
static_assert(XRegId(3) == VESSEL_CORE_REG(regs.regs[3]));
static_assert(kSpRegId == VESSEL_CORE_REG(regs.sp));
static_assert(kPcRegId == VESSEL_CORE_REG(regs.pc));
static_assert(kPstateRegId == VESSEL_CORE_REG(regs.pstate));
static_assert(kBootPstate == (PSR_MODE_EL1h | PSR_D_BIT | PSR_A_BIT | PSR_I_BIT | PSR_F_BIT));
static_assert(SpiIrqLine(0) == ((KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | 32));
#undef VESSEL_CORE_REG

namespace {

absl::Status SetDeviceAttr(int device_fd, uint32_t group, uint64_t attr, const void* value,
                           absl::string_view what) {
  kvm_device_attr a = {};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uint64_t>(value);
  if (ioctl(device_fd, KVM_SET_DEVICE_ATTR, &a) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_SET_DEVICE_ATTR (", what, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<KvmGic> CreateGicVersion(int vm_fd, uint32_t vcpus, GicVersion version) {
  VESSEL_ASSIGN_OR_RETURN(GicLayout layout, GicLayoutFor(version, vcpus));
  kvm_create_device dev = {};
  dev.type = version == GicVersion::kV3 ? KVM_DEV_TYPE_ARM_VGIC_V3 : KVM_DEV_TYPE_ARM_VGIC_V2;
  if (ioctl(vm_fd, KVM_CREATE_DEVICE, &dev) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_CREATE_DEVICE (", GicName(version), ")"));
  }
  KvmGic gic{ScopedFd(static_cast<int>(dev.fd)), layout};
  const int fd = gic.fd.get();
  const uint64_t dist = layout.distributor.base;
  const uint64_t cpu = layout.cpu.base;
  if (version == GicVersion::kV3) {
    VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST,
                                         &dist, "GICv3 distributor address"));
    VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST,
                                         &cpu, "GICv3 redistributor address"));
  } else {
    VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V2_ADDR_TYPE_DIST,
                                         &dist, "GICv2 distributor address"));
    VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V2_ADDR_TYPE_CPU,
                                         &cpu, "GICv2 CPU interface address"));
  }
  const uint32_t nr_irqs = kGicNrIrqs;
  VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr_irqs, "number of IRQs"));
  VESSEL_RETURN_IF_ERROR(SetDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT,
                                       nullptr, "VGIC init; create it after every vCPU"));
  return gic;
}

}  // namespace

bool KvmArmAvailable() { return true; }

absl::Status InitVcpu(int vm_fd, int vcpu_fd, bool powered_off) {
  kvm_vcpu_init init = {};
  if (ioctl(vm_fd, KVM_ARM_PREFERRED_TARGET, &init) != 0) {
    return ErrnoStatus("KVM_ARM_PREFERRED_TARGET");
  }
  init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
  if (powered_off) init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
  if (ioctl(vcpu_fd, KVM_ARM_VCPU_INIT, &init) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_ARM_VCPU_INIT (target ", init.target, ", PSCI 0.2)"));
  }
  return absl::OkStatus();
}

absl::Status SetOneReg(int vcpu_fd, uint64_t id, uint64_t value) {
  kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(&value)};
  if (ioctl(vcpu_fd, KVM_SET_ONE_REG, &reg) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_SET_ONE_REG ", absl::Hex(id)));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> GetOneReg(int vcpu_fd, uint64_t id) {
  uint64_t value = 0;
  kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(&value)};
  if (ioctl(vcpu_fd, KVM_GET_ONE_REG, &reg) != 0) {
    return ErrnoStatus(absl::StrCat("KVM_GET_ONE_REG ", absl::Hex(id)));
  }
  return value;
}

absl::StatusOr<KvmGic> CreateGic(int vm_fd, uint32_t vcpus, std::optional<GicVersion> version) {
  if (version.has_value()) return CreateGicVersion(vm_fd, vcpus, *version);
  absl::StatusOr<KvmGic> v3 = CreateGicVersion(vm_fd, vcpus, GicVersion::kV3);
  if (v3.ok()) return v3;
  absl::StatusOr<KvmGic> v2 = CreateGicVersion(vm_fd, vcpus, GicVersion::kV2);
  if (v2.ok()) return v2;
  return absl::Status(v2.status().code(),
                      absl::StrCat("no in-kernel GIC: GICv3: ", v3.status().message(),
                                   "; GICv2: ", v2.status().message()));
}

#else  // !__aarch64__

namespace {
absl::Status NotHere(absl::string_view what) {
  return absl::UnimplementedError(
      absl::StrCat(what, " needs an aarch64 host: this build is not for arm64"));
}
}  // namespace

bool KvmArmAvailable() { return false; }
absl::Status InitVcpu(int, int, bool) { return NotHere("KVM_ARM_VCPU_INIT"); }
absl::Status SetOneReg(int, uint64_t, uint64_t) { return NotHere("KVM_SET_ONE_REG"); }
absl::StatusOr<uint64_t> GetOneReg(int, uint64_t) { return NotHere("KVM_GET_ONE_REG"); }
absl::StatusOr<KvmGic> CreateGic(int, uint32_t, std::optional<GicVersion>) {
  return NotHere("the arm64 in-kernel GIC");
}

#endif  // __aarch64__

absl::Status SetBootRegs(int vcpu_fd, uint64_t pc, uint64_t fdt_addr) {
  absl::Status s = SetOneReg(vcpu_fd, kPstateRegId, kBootPstate);
  if (!s.ok()) return s;
  for (uint32_t n = 1; n <= 3; ++n) {
    s = SetOneReg(vcpu_fd, XRegId(n), 0);
    if (!s.ok()) return s;
  }
  s = SetOneReg(vcpu_fd, XRegId(0), fdt_addr);
  if (!s.ok()) return s;
  return SetOneReg(vcpu_fd, kPcRegId, pc);
}

}  // namespace vessel::aarch64
