#include "vmm/kvm/raw_ioctl.h"

#include <sys/ioctl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"

namespace vessel {

absl::StatusOr<std::string> RawIoctlGet(int fd, unsigned long request, size_t size, const char* name,
                                        absl::string_view in) {
  std::string bytes(size, '\0');
  std::copy_n(in.data(), std::min(in.size(), size), bytes.data());
  if (::ioctl(fd, request, bytes.data()) < 0) return ErrnoStatus(name);
  return bytes;
}

absl::Status RawIoctlSet(int fd, unsigned long request, absl::string_view bytes, size_t size,
                         const char* name) {
  if (bytes.size() != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": the state holds ", bytes.size(), " bytes, KVM expects ", size));
  }
  std::string copy(bytes);
  if (::ioctl(fd, request, copy.data()) < 0) return ErrnoStatus(name);
  return absl::OkStatus();
}

}  // namespace vessel
