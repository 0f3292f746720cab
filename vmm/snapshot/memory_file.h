// The snapshot memory file: guest RAM regions back to back (region i at file offset
// layout[i].file_offset, page-aligned), written sparsely: only pages that are resident in the VMM
// (mincore: the guest, or the VMM for it, touched them) and not all zeros get bytes; the rest stay
// holes, which read back as zeros. A restore maps the file MAP_PRIVATE (GuestMemory::Options::
// backing_fd), so pages load lazily and clones share what they do not write.
#ifndef VESSEL_VMM_SNAPSHOT_MEMORY_FILE_H_
#define VESSEL_VMM_SNAPSHOT_MEMORY_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vessel/snapshot/v1/snapshot.pb.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/memory/guest_memory.h"

namespace vessel::snapshot {

struct MemoryFileWritten {
  std::vector<v1::MemoryRegion> layout;  // one per guest region, in order
  uint64_t file_bytes = 0;               // the file's (apparent) size
  uint64_t data_bytes = 0;               // bytes actually written (the rest are holes)
};

absl::StatusOr<MemoryFileWritten> WriteMemoryFile(const std::string& path, const GuestMemory& memory);

// Checks `layout` (page-aligned, non-overlapping, inside `file_bytes`) and that the file at `path`
// is a regular file of at least `file_bytes` bytes; returns the guest ranges, their offsets and
// the open file for GuestMemory::Create.
struct MemoryFileToMap {
  ScopedFd fd;
  std::vector<GuestRange> ranges;
  std::vector<uint64_t> offsets;
};
absl::StatusOr<MemoryFileToMap> OpenMemoryFile(const std::string& path,
                                               const google::protobuf::RepeatedPtrField<v1::MemoryRegion>& layout,
                                               uint64_t file_bytes);

}  // namespace vessel::snapshot

#endif  // VESSEL_VMM_SNAPSHOT_MEMORY_FILE_H_
