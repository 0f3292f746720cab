#include "vmm/memory/guest_memory.h"

#include <sys/mman.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/base/errors.h"

namespace vessel {
namespace {

constexpr uint64_t kPageSize = 4096;

std::string Hex(uint64_t v) { return absl::StrFormat("%#x", v); }

}  // namespace

absl::StatusOr<GuestMemory> GuestMemory::Create(std::vector<GuestRange> ranges, Options options) {
  if (ranges.empty()) return absl::InvalidArgumentError("guest memory: no RAM ranges given");
  auto by_gpa = [](const GuestRange& a, const GuestRange& b) { return a.gpa < b.gpa; };
  if (options.backing_fd >= 0 && !std::is_sorted(ranges.begin(), ranges.end(), by_gpa)) {
    return absl::InvalidArgumentError("guest memory: file-backed ranges must be sorted by address");
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const GuestRange& a, const GuestRange& b) { return a.gpa < b.gpa; });
  const bool file_backed = options.backing_fd >= 0;
  if (file_backed && options.backing_offsets.size() != ranges.size()) {
    return absl::InvalidArgumentError(absl::StrCat("guest memory: ", ranges.size(), " ranges but ",
                                                   options.backing_offsets.size(), " file offsets"));
  }
  if (file_backed && options.hugepages) {
    return absl::InvalidArgumentError("guest memory: hugepages cannot back a memory file mapping");
  }
  GuestMemory mem;
  uint64_t prev_end = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const GuestRange& r = ranges[i];
    if (r.size == 0 || r.gpa % kPageSize != 0 || r.size % kPageSize != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("guest memory: range ", Hex(r.gpa), "+", Hex(r.size),
                       " must be non-empty and 4 KiB aligned"));
    }
    if (r.gpa + r.size < r.gpa) {
      return absl::InvalidArgumentError(absl::StrCat("guest memory: range at ", Hex(r.gpa), " wraps"));
    }
    if (i > 0 && r.gpa < prev_end) {
      return absl::InvalidArgumentError(
          absl::StrCat("guest memory: range at ", Hex(r.gpa), " overlaps the previous one"));
    }
    prev_end = r.gpa + r.size;
    int flags = MAP_PRIVATE | MAP_NORESERVE | (file_backed ? 0 : MAP_ANONYMOUS);
    if (options.hugepages) flags |= MAP_HUGETLB;
    const uint64_t offset = file_backed ? options.backing_offsets[i] : 0;
    if (offset % kPageSize != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("guest memory: file offset ", Hex(offset), " is not 4 KiB aligned"));
    }
    void* addr = ::mmap(nullptr, r.size, PROT_READ | PROT_WRITE, flags, options.backing_fd,
                        static_cast<off_t>(offset));
    if (addr == MAP_FAILED) {
      return ErrnoStatus(absl::StrCat("guest memory: mmap of ", r.size >> 20, " MiB",
                                      options.hugepages
                                          ? " with hugepages (reserve some via /proc/sys/vm/nr_hugepages)"
                                          : ""));
    }
    mem.mappings_.emplace_back(addr, r.size);
    // Guest RAM never goes into a core dump of the VMM, and the kernel may back it with THP.
    ::madvise(addr, r.size, MADV_DONTDUMP);
    if (!options.hugepages && !file_backed) ::madvise(addr, r.size, MADV_HUGEPAGE);
    mem.regions_.push_back(GuestRegion{r.gpa, r.size, static_cast<uint8_t*>(addr)});
  }
  return mem;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const GuestRegion& r : regions_) total += r.size;
  return total;
}

const GuestRegion* GuestMemory::Find(uint64_t gpa) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), gpa,
                             [](uint64_t a, const GuestRegion& r) { return a < r.gpa; });
  if (it == regions_.begin()) return nullptr;
  --it;
  return gpa < it->end() ? &*it : nullptr;
}

bool GuestMemory::Contains(uint64_t gpa, uint64_t len) const { return CheckRange(gpa, len).ok(); }

absl::Status GuestMemory::CheckRange(uint64_t gpa, uint64_t len) const {
  if (len == 0) return absl::OkStatus();
  if (gpa + len < gpa) {
    return absl::OutOfRangeError(absl::StrCat("guest range ", Hex(gpa), "+", Hex(len), " wraps"));
  }
  uint64_t cur = gpa;
  const uint64_t end = gpa + len;
  while (cur < end) {
    const GuestRegion* r = Find(cur);
    if (r == nullptr) {
      return absl::OutOfRangeError(absl::StrCat("guest range ", Hex(gpa), "+", Hex(len),
                                                " is not RAM at ", Hex(cur)));
    }
    cur = r->end();
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Read(uint64_t gpa, void* dst, uint64_t len) const {
  absl::Status s = CheckRange(gpa, len);
  if (!s.ok()) return s;
  uint8_t* out = static_cast<uint8_t*>(dst);
  while (len > 0) {
    const GuestRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->end() - gpa);
    std::memcpy(out, r->host + (gpa - r->gpa), n);
    out += n;
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t gpa, const void* src, uint64_t len) {
  absl::Status s = CheckRange(gpa, len);
  if (!s.ok()) return s;
  const uint8_t* in = static_cast<const uint8_t*>(src);
  while (len > 0) {
    const GuestRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->end() - gpa);
    std::memcpy(r->host + (gpa - r->gpa), in, n);
    in += n;
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Fill(uint64_t gpa, uint8_t value, uint64_t len) {
  absl::Status s = CheckRange(gpa, len);
  if (!s.ok()) return s;
  while (len > 0) {
    const GuestRegion* r = Find(gpa);
    uint64_t n = std::min(len, r->end() - gpa);
    std::memset(r->host + (gpa - r->gpa), value, n);
    gpa += n;
    len -= n;
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) {
  const GuestRegion* r = Find(gpa);
  if (r == nullptr || len > r->end() - gpa) {
    return absl::OutOfRangeError(absl::StrCat("guest range ", Hex(gpa), "+", Hex(len),
                                              " is not inside one RAM region"));
  }
  return absl::Span<uint8_t>(r->host + (gpa - r->gpa), len);
}

}  // namespace vessel
