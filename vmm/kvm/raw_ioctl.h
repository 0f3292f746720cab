// KVM ioctls on one fixed-size structure, as raw bytes (the snapshot state file keeps KVM
// structures that way): shared by KvmVcpu and KvmVm.
#ifndef VESSEL_VMM_KVM_RAW_IOCTL_H_
#define VESSEL_VMM_KVM_RAW_IOCTL_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vessel {

// ioctl(fd, request, buffer) on a `size`-byte buffer initialised from `in` (zeros past it).
absl::StatusOr<std::string> RawIoctlGet(int fd, unsigned long request, size_t size, const char* name,
                                        absl::string_view in = {});
// ioctl(fd, request, copy of `bytes`); refuses bytes of another size than `size`, naming `name`.
absl::Status RawIoctlSet(int fd, unsigned long request, absl::string_view bytes, size_t size,
                         const char* name);

}  // namespace vessel

#endif  // VESSEL_VMM_KVM_RAW_IOCTL_H_
