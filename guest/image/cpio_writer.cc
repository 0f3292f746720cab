#include "guest/image/cpio_writer.h"

#include <sys/stat.h>
#include <zlib.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace vessel {
namespace {

void Pad4(std::vector<uint8_t>& out) {
  while (out.size() % 4 != 0) out.push_back(0);
}

void AppendHeader(std::vector<uint8_t>& out, const std::string& name, uint32_t ino, uint32_t mode,
                  uint32_t nlink, uint64_t filesize, uint32_t rmajor, uint32_t rminor) {
  std::string h = absl::StrFormat(
      "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0 /*uid*/, 0 /*gid*/,
      nlink, 0 /*mtime*/, static_cast<uint32_t>(filesize), 0 /*devmajor*/, 0 /*devminor*/, rmajor,
      rminor, static_cast<uint32_t>(name.size() + 1), 0 /*check*/);
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), name.begin(), name.end());
  out.push_back(0);
  Pad4(out);
}

}  // namespace

absl::StatusOr<std::string> CpioWriter::Normalize(const std::string& path) const {
  std::string p = path;
  while (!p.empty() && p.front() == '/') p.erase(p.begin());
  while (!p.empty() && p.back() == '/') p.pop_back();
  if (p.empty()) return absl::InvalidArgumentError(absl::StrCat("cpio: empty path '", path, "'"));
  for (absl::string_view part : absl::StrSplit(p, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(absl::StrCat("cpio: path '", path, "' has an empty, . or .. part"));
    }
  }
  return p;
}

absl::Status CpioWriter::Add(const std::string& path, Entry entry) {
  absl::StatusOr<std::string> p = Normalize(path);
  if (!p.ok()) return p.status();
  // Parents become directories unless given explicitly.
  for (size_t slash = p->find('/'); slash != std::string::npos; slash = p->find('/', slash + 1)) {
    std::string parent = p->substr(0, slash);
    auto it = entries_.find(parent);
    if (it == entries_.end()) {
      entries_.emplace(parent, Entry{S_IFDIR | 0755, {}});
    } else if (!S_ISDIR(it->second.mode)) {
      return absl::InvalidArgumentError(absl::StrCat("cpio: ", parent, " is not a directory"));
    }
  }
  auto existing = entries_.find(*p);
  if (existing != entries_.end()) {
    if (S_ISDIR(existing->second.mode) && S_ISDIR(entry.mode)) {
      existing->second.mode = entry.mode;
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(absl::StrCat("cpio: ", path, " added twice"));
  }
  entries_.emplace(*p, std::move(entry));
  return absl::OkStatus();
}

absl::Status CpioWriter::AddDirectory(const std::string& path, uint32_t mode) {
  return Add(path, Entry{S_IFDIR | (mode & 07777), {}});
}

absl::Status CpioWriter::AddFile(const std::string& path, std::vector<uint8_t> data, uint32_t mode) {
  if (data.size() > 0xffffffffu) return absl::InvalidArgumentError("cpio: file over 4 GiB");
  return Add(path, Entry{S_IFREG | (mode & 07777), std::move(data)});
}

absl::Status CpioWriter::AddSymlink(const std::string& path, const std::string& target) {
  if (target.empty()) return absl::InvalidArgumentError("cpio: empty symlink target");
  return Add(path, Entry{S_IFLNK | 0777, std::vector<uint8_t>(target.begin(), target.end())});
}

absl::Status CpioWriter::AddDeviceNode(const std::string& path, char type, uint32_t major,
                                       uint32_t minor, uint32_t mode) {
  if (type != 'c' && type != 'b') return absl::InvalidArgumentError("cpio: device type must be c or b");
  Entry e{(type == 'c' ? S_IFCHR : S_IFBLK) | (mode & 07777), {}};
  e.rdev_major = major;
  e.rdev_minor = minor;
  return Add(path, std::move(e));
}

std::vector<uint8_t> CpioWriter::Finish() const {
  std::vector<uint8_t> out;
  uint32_t ino = 1;
  for (const auto& [path, e] : entries_) {
    AppendHeader(out, path, ino++, e.mode, S_ISDIR(e.mode) ? 2 : 1, e.data.size(), e.rdev_major,
                 e.rdev_minor);
    out.insert(out.end(), e.data.begin(), e.data.end());
    Pad4(out);
  }
  AppendHeader(out, "TRAILER!!!", 0, 0, 1, 0, 0, 0);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> CpioWriter::FinishGzip() const {
  std::vector<uint8_t> raw = Finish();
  z_stream zs = {};
  // windowBits 15 + 16: gzip wrapper; deflateSetHeader is not called, so mtime is 0.
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::InternalError("cpio: deflateInit2 failed");
  }
  std::vector<uint8_t> out(deflateBound(&zs, raw.size()) + 64);
  zs.next_in = raw.data();
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (r != Z_STREAM_END) return absl::InternalError("cpio: gzip compression failed");
  return out;
}

}  // namespace vessel
