#include "arch/aarch64/gic.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arch/aarch64/layout.h"

namespace vessel::aarch64 {

absl::string_view GicName(GicVersion version) {
  return version == GicVersion::kV3 ? "GICv3" : "GICv2";
}

absl::StatusOr<GicLayout> GicLayoutFor(GicVersion version, uint32_t vcpus) {
  const uint32_t max = version == GicVersion::kV3 ? kMaxVcpus : kMaxVcpusGicV2;
  if (vcpus == 0 || vcpus > max) {
    return absl::InvalidArgumentError(absl::StrCat(GicName(version), " addresses 1..", max,
                                                   " vCPUs, not ", vcpus, "; lower --vcpus"));
  }
  GicLayout l;
  l.version = version;
  if (version == GicVersion::kV3) {
    l.distributor = {kGicDistBase, kGicDistSize};
    l.cpu = {kGicV3RedistBase, uint64_t{vcpus} * kGicV3RedistSizePerCpu};
  } else {
    l.distributor = {kGicDistBase, 0x1000};  // KVM_VGIC_V2_DIST_SIZE
    l.cpu = {kGicV2CpuBase, kGicV2CpuSize};
  }
  return l;
}

uint32_t TimerPpiFlags(GicVersion version, uint32_t vcpus) {
  if (version == GicVersion::kV3) return kIrqTypeLevelHigh;
  const uint32_t cpus = std::min(vcpus, kMaxVcpusGicV2);
  return (((1u << cpus) - 1) << 8) | kIrqTypeLevelHigh;
}

}  // namespace vessel::aarch64
