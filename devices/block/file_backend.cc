#include "devices/block/file_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"

namespace vessel::block {

absl::StatusOr<FileBackend> FileBackend::Open(const std::string& path, bool read_only, bool direct) {
  ScopedFd fd(::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? O_DIRECT : 0)));
  if (!fd.valid()) {
    return ErrnoStatus(absl::StrCat("disk ", path, read_only ? " (read-only)" : " (read-write: add ,ro for a read-only disk)"));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(absl::StrCat("stat disk ", path));
  uint64_t size = 0;
  if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return ErrnoStatus(absl::StrCat("BLKGETSIZE64 ", path));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("disk ", path, " is neither a regular file nor a block device"));
  }
  return FileBackend(std::move(fd), size, read_only, static_cast<uint64_t>(st.st_dev),
                     static_cast<uint64_t>(st.st_ino));
}

absl::Status FileBackend::ReadAt(uint64_t offset, absl::Span<uint8_t> dst) const {
  size_t done = 0;
  while (done < dst.size()) {
    ssize_t n = ::pread(fd_.get(), dst.data() + done, dst.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("disk read");
    if (n == 0) return absl::OutOfRangeError("disk read past the end of the image");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FileBackend::WriteAt(uint64_t offset, absl::Span<const uint8_t> src) {
  if (read_only_) return absl::PermissionDeniedError("disk is read-only");
  size_t done = 0;
  while (done < src.size()) {
    ssize_t n = ::pwrite(fd_.get(), src.data() + done, src.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("disk write");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FileBackend::Flush() {
  if (::fdatasync(fd_.get()) != 0) return ErrnoStatus("disk fdatasync");
  return absl::OkStatus();
}

absl::Status FileBackend::Discard(uint64_t offset, uint64_t len) {
  if (read_only_) return absl::PermissionDeniedError("disk is read-only");
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) != 0) {
    return ErrnoStatus("disk discard (punch hole)");
  }
  return absl::OkStatus();
}

absl::Status FileBackend::WriteZeroes(uint64_t offset, uint64_t len) {
  if (read_only_) return absl::PermissionDeniedError("disk is read-only");
  if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) == 0) {
    return absl::OkStatus();
  }
  std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  while (len > 0) {
    uint64_t n = std::min<uint64_t>(len, zeros.size());
    absl::Status s = WriteAt(offset, absl::MakeConstSpan(zeros.data(), n));
    if (!s.ok()) return s;
    offset += n;
    len -= n;
  }
  return absl::OkStatus();
}

}  // namespace vessel::block
