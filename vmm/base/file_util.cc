#include "vmm/base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel {

namespace {

// Opens `path` for reading when it is a regular file of at most `max_bytes`; its size in *size.
absl::StatusOr<ScopedFd> OpenRegularFile(const std::string& path, uint64_t max_bytes, size_t* size) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::OutOfRangeError(absl::StrCat(path, " is ", st.st_size, " bytes; the limit is ",
                                              max_bytes, " bytes"));
  }
  *size = static_cast<size_t>(st.st_size);
  return fd;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path, uint64_t max_bytes) {
  size_t size = 0;
  absl::StatusOr<ScopedFd> fd = OpenRegularFile(path, max_bytes, &size);
  if (!fd.ok()) return fd.status();
  std::vector<uint8_t> data(size);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::read(fd->get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(absl::StrCat("read ", path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

absl::StatusOr<ScopedMmap> MapFileReadOnly(const std::string& path, uint64_t max_bytes) {
  size_t size = 0;
  absl::StatusOr<ScopedFd> fd = OpenRegularFile(path, max_bytes, &size);
  if (!fd.ok()) return fd.status();
  if (size == 0) return ScopedMmap();
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd->get(), 0);
  if (addr == MAP_FAILED) return ErrnoStatus(absl::StrCat("mmap ", path));
  return ScopedMmap(addr, size);
}

}  // namespace vessel
