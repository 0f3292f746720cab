// FileBackend: a disk image (regular file or block device) accessed with positioned I/O.
#ifndef VESSEL_DEVICES_BLOCK_FILE_BACKEND_H_
#define VESSEL_DEVICES_BLOCK_FILE_BACKEND_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::block {

class FileBackend {
 public:
  // Opens `path` read-write (or read-only). Errors name the file and the fix.
  // With `direct`, the file is opened O_DIRECT: buffers, offsets and lengths must then be
  // 4 KiB-aligned multiples (the device's bounce buffer is; sector offsets need 512-byte support).
  static absl::StatusOr<FileBackend> Open(const std::string& path, bool read_only, bool direct = false);

  uint64_t size_bytes() const { return size_; }
  bool read_only() const { return read_only_; }
  // The opened file's identity (fstat st_dev / st_ino): a snapshot restore checks it.
  uint64_t dev() const { return dev_; }
  uint64_t ino() const { return ino_; }
  // Whole-buffer positioned I/O: short transfers are retried, EOF is an error.
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> dst) const;
  absl::Status WriteAt(uint64_t offset, absl::Span<const uint8_t> src);
  absl::Status Flush();  // fdatasync
  absl::Status Discard(uint64_t offset, uint64_t len);     // punch a hole (keeps the size)
  absl::Status WriteZeroes(uint64_t offset, uint64_t len);  // zero range, falls back to writes

 private:
  FileBackend(ScopedFd fd, uint64_t size, bool read_only, uint64_t dev, uint64_t ino)
      : fd_(std::move(fd)), size_(size), read_only_(read_only), dev_(dev), ino_(ino) {}
  ScopedFd fd_;
  uint64_t size_;
  bool read_only_;
  uint64_t dev_;
  uint64_t ino_;
};

}  // namespace vessel::block

#endif  // VESSEL_DEVICES_BLOCK_FILE_BACKEND_H_
