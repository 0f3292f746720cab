// GuestMemory: the guest's RAM as host anonymous mappings, and the only way to touch it.
//
// Every access names a guest-physical range [gpa, gpa+len) and is checked to lie wholly in RAM
// before a byte moves; a range that leaves RAM (or wraps) fails cleanly with OutOfRange. Nothing
// else in vessel does pointer arithmetic on guest addresses.
#ifndef VESSEL_VMM_MEMORY_GUEST_MEMORY_H_
#define VESSEL_VMM_MEMORY_GUEST_MEMORY_H_

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/base/scoped_mmap.h"

namespace vessel {

// One contiguous guest-physical range backed by one host mapping.
struct GuestRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;
  uint64_t end() const { return gpa + size; }
};

struct GuestRange {
  uint64_t gpa;
  uint64_t size;
};

class GuestMemory {
 public:
  struct Options {
    bool hugepages = false;  // MAP_HUGETLB; falls back with an error if none are reserved.
    // A snapshot's memory file (vmm/snapshot): when >= 0, range i is mapped MAP_PRIVATE from this
    // fd at backing_offsets[i] (page-aligned) instead of anonymous memory: pages load lazily on
    // first touch, guest writes stay private, and VMs restored from one file share every page
    // none of them wrote. The fd may be closed once Create returns.
    int backing_fd = -1;
    std::vector<uint64_t> backing_offsets;
  };

  // Maps each range (page-aligned, non-empty, non-overlapping) as anonymous MAP_NORESERVE memory
  // (or from options.backing_fd).
  static absl::StatusOr<GuestMemory> Create(std::vector<GuestRange> ranges, Options options);
  static absl::StatusOr<GuestMemory> Create(std::vector<GuestRange> ranges) {
    return Create(std::move(ranges), Options{});
  }

  GuestMemory(GuestMemory&&) = default;
  GuestMemory& operator=(GuestMemory&&) = default;

  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint64_t total_size() const;
  // True when [gpa, gpa+len) lies wholly in RAM (possibly across adjacent regions).
  bool Contains(uint64_t gpa, uint64_t len) const;

  absl::Status Read(uint64_t gpa, void* dst, uint64_t len) const;
  absl::Status Write(uint64_t gpa, const void* src, uint64_t len);
  absl::Status Fill(uint64_t gpa, uint8_t value, uint64_t len);

  template <typename T>
  absl::StatusOr<T> ReadObj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status s = Read(gpa, &value, sizeof(T));
    if (!s.ok()) return s;
    return value;
  }
  template <typename T>
  absl::Status WriteObj(uint64_t gpa, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(gpa, &value, sizeof(T));
  }

  // A host view of [gpa, gpa+len) when it lies within a single region (for zero-copy I/O).
  absl::StatusOr<absl::Span<uint8_t>> Slice(uint64_t gpa, uint64_t len);

 private:
  GuestMemory() = default;
  // Region holding `gpa`, or nullptr.
  const GuestRegion* Find(uint64_t gpa) const;
  absl::Status CheckRange(uint64_t gpa, uint64_t len) const;

  std::vector<GuestRegion> regions_;  // sorted by gpa
  std::vector<ScopedMmap> mappings_;  // one per region, same order
};

}  // namespace vessel

#endif  // VESSEL_VMM_MEMORY_GUEST_MEMORY_H_
