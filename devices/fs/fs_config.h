// FsConfig: what a virtio-fs device is built from (tag, shared directory, cache policy, limits),
// and the `TAG=DIR[,cache=never|auto|always][,ro][,writeback]` share spec the VMM's command line
// uses.
#ifndef VESSEL_DEVICES_FS_FS_CONFIG_H_
#define VESSEL_DEVICES_FS_FS_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vessel::fs {

// How long the guest may cache entries and attributes, and how it caches file data.
enum class CachePolicy {
  kNever,   // entry/attr timeouts 0, FOPEN_DIRECT_IO: every access reaches the host
  kAuto,    // 1 s timeouts, page cache dropped on open
  kAlways,  // 1 day timeouts, FOPEN_KEEP_CACHE (only for shares nobody else changes)
};

struct FsConfig {
  static constexpr size_t kMaxTagBytes = 36;  // virtio_fs_config.tag
  static constexpr uint32_t kMaxRequestQueues = 16;

  std::string tag;         // what the guest mounts: `mount -t virtiofs TAG /mnt`; 1..36 bytes
  std::string shared_dir;  // host directory the guest sees as the root of the mount
  uint32_t num_request_queues = 1;
  CachePolicy cache = CachePolicy::kAuto;
  bool read_only = false;        // every modifying request answers EROFS
  bool writeback = false;        // offer FUSE_WRITEBACK_CACHE
  size_t max_inodes = 1 << 20;   // inode table bound (lookups beyond it answer ENFILE)
  size_t max_handles = 1 << 16;  // open file/dir bound (opens beyond it answer ENFILE)
};

// OK when the tag is 1..36 bytes, the directory is named, the queue count is 1..16 and the limits
// are non-zero. Does not touch the file system (Create opens the directory).
absl::Status ValidateFsConfig(const FsConfig& config);

// Parses "TAG=DIR[,cache=never|auto|always][,ro][,writeback]" (the `--share` flag).
absl::StatusOr<FsConfig> ParseShareSpec(absl::string_view spec);

}  // namespace vessel::fs

#endif  // VESSEL_DEVICES_FS_FS_CONFIG_H_
