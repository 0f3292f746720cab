// CpioWriter: a reproducible initramfs in the "newc" cpio format.
//
// Entries are sorted by path, parents are created implicitly, every mtime is 0 and every owner
// root, inode numbers are assigned in order: the same inputs give the same bytes. Output is
// uncompressed by default (gzip costs a minute of emulated inflate on software-KVM hosts).
#ifndef VESSEL_GUEST_IMAGE_CPIO_WRITER_H_
#define VESSEL_GUEST_IMAGE_CPIO_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vessel {

class CpioWriter {
 public:
  absl::Status AddDirectory(const std::string& path, uint32_t mode = 0755);
  absl::Status AddFile(const std::string& path, std::vector<uint8_t> data, uint32_t mode = 0644);
  absl::Status AddSymlink(const std::string& path, const std::string& target);
  // type 'c' or 'b'.
  absl::Status AddDeviceNode(const std::string& path, char type, uint32_t major, uint32_t minor,
                             uint32_t mode);

  // The archive, ending with the TRAILER!!! entry.
  std::vector<uint8_t> Finish() const;
  // Same archive, gzip-compressed with a fixed header (mtime 0).
  absl::StatusOr<std::vector<uint8_t>> FinishGzip() const;

 private:
  struct Entry {
    uint32_t mode;  // including S_IF* type bits
    std::vector<uint8_t> data;
    uint32_t rdev_major = 0, rdev_minor = 0;
  };
  absl::StatusOr<std::string> Normalize(const std::string& path) const;
  absl::Status Add(const std::string& path, Entry entry);

  std::map<std::string, Entry> entries_;  // key: path without leading '/'
};

}  // namespace vessel

#endif  // VESSEL_GUEST_IMAGE_CPIO_WRITER_H_
