// Reading whole files into memory, with a size cap and an error that names the file.
#ifndef VESSEL_VMM_BASE_FILE_UTIL_H_
#define VESSEL_VMM_BASE_FILE_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/scoped_mmap.h"

namespace vessel {

// Reads `path` completely. Fails with a message naming the file if it cannot be opened, is not a
// regular file, or is larger than `max_bytes`.
absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path, uint64_t max_bytes);

// Maps a regular file read-only (MAP_PRIVATE), at most `max_bytes`; an empty file gives an empty
// mapping. For large inputs read once (kernel, initramfs): no heap copy that the allocator would
// keep after it is freed. The file must not shrink while mapped.
absl::StatusOr<ScopedMmap> MapFileReadOnly(const std::string& path, uint64_t max_bytes);

}  // namespace vessel

#endif  // VESSEL_VMM_BASE_FILE_UTIL_H_
