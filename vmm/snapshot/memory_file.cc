#include "vmm/snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/base/errors.h"

namespace vessel::snapshot {
namespace {

constexpr uint64_t kPage = 4096;

bool IsZeroPage(const uint8_t* p) {
  const uint64_t* words = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / sizeof(uint64_t); ++i) {
    if (words[i] != 0) return false;
  }
  return true;
}

absl::Status PwriteAll(int fd, const uint8_t* data, uint64_t len, uint64_t offset,
                       const std::string& path) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("write " + path);
    data += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MemoryFileWritten> WriteMemoryFile(const std::string& path, const GuestMemory& memory) {
  MemoryFileWritten out;
  uint64_t offset = 0;
  for (const GuestRegion& r : memory.regions()) {
    v1::MemoryRegion region;
    region.set_gpa(r.gpa);
    region.set_size(r.size);
    region.set_file_offset(offset);
    out.layout.push_back(region);
    offset += r.size;
  }
  out.file_bytes = offset;
  const std::string tmp = path + ".tmp";
  ScopedFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return ErrnoStatus("create " + tmp);
  auto fail = [&](absl::Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(out.file_bytes)) != 0) {
    return fail(ErrnoStatus("size " + tmp));
  }
  std::vector<unsigned char> resident;
  for (size_t i = 0; i < memory.regions().size(); ++i) {
    const GuestRegion& r = memory.regions()[i];
    const uint64_t pages = r.size / kPage;
    resident.assign(pages, 0);
    if (::mincore(r.host, r.size, resident.data()) != 0) {
      return fail(ErrnoStatus("mincore on guest RAM"));
    }
    // Runs of resident, non-zero pages become one write each.
    uint64_t run_start = 0, run_len = 0;
    auto flush = [&]() -> absl::Status {
      if (run_len == 0) return absl::OkStatus();
      VESSEL_RETURN_IF_ERROR(PwriteAll(fd.get(), r.host + run_start * kPage, run_len * kPage,
                                       out.layout[i].file_offset() + run_start * kPage, tmp));
      out.data_bytes += run_len * kPage;
      run_len = 0;
      return absl::OkStatus();
    };
    for (uint64_t p = 0; p < pages; ++p) {
      const bool data = (resident[p] & 1) != 0 && !IsZeroPage(r.host + p * kPage);
      if (data) {
        if (run_len == 0) run_start = p;
        ++run_len;
      } else if (absl::Status s = flush(); !s.ok()) {
        return fail(s);
      }
    }
    if (absl::Status s = flush(); !s.ok()) return fail(s);
  }
  if (::fsync(fd.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrnoStatus("save " + path));
  }
  return out;
}

absl::StatusOr<MemoryFileToMap> OpenMemoryFile(
    const std::string& path, const google::protobuf::RepeatedPtrField<v1::MemoryRegion>& layout,
    uint64_t file_bytes) {
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("snapshot memory layout for ", path, ": ", why,
                                            "; take the snapshot again"));
  };
  if (layout.empty()) return bad("no guest RAM regions");
  MemoryFileToMap out;
  uint64_t prev_gpa_end = 0;
  for (int i = 0; i < layout.size(); ++i) {
    const v1::MemoryRegion& r = layout[i];
    if (r.size() == 0 || r.gpa() % kPage != 0 || r.size() % kPage != 0 ||
        r.file_offset() % kPage != 0) {
      return bad(absl::StrFormat("region %d (%#x+%#x at offset %#x) is not 4 KiB aligned", i,
                                 r.gpa(), r.size(), r.file_offset()));
    }
    if (r.gpa() + r.size() < r.gpa() || r.file_offset() + r.size() < r.file_offset() ||
        r.file_offset() + r.size() > file_bytes) {
      return bad(absl::StrFormat("region %d ends past the %d-byte memory file", i, file_bytes));
    }
    if (i > 0 && r.gpa() < prev_gpa_end) return bad(absl::StrFormat("region %d overlaps", i));
    prev_gpa_end = r.gpa() + r.size();
    out.ranges.push_back(GuestRange{r.gpa(), r.size()});
    out.offsets.push_back(r.file_offset());
  }
  out.fd = ScopedFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!out.fd.valid()) return ErrnoStatus("open snapshot memory file " + path);
  struct stat st;
  if (::fstat(out.fd.get(), &st) != 0) return ErrnoStatus("stat " + path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) < file_bytes) {
    return absl::DataLossError(absl::StrCat("snapshot memory file ", path, " has ", st.st_size,
                                            " bytes, the state says ", file_bytes,
                                            " (truncated); take the snapshot again"));
  }
  return out;
}

}  // namespace vessel::snapshot
