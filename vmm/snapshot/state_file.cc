#include "vmm/snapshot/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "vmm/base/errors.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::snapshot {
namespace {

constexpr char kMagic[8] = {'V', 'S', 'L', 'S', 'N', 'A', 'P', '1'};

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed it in chunks.
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t n = std::min<size_t>(bytes.size() - done, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + done), static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(crc);
}

void PutLe32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutLe64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetLe(absl::string_view bytes, size_t offset, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[offset + i])) << (8 * i);
  }
  return v;
}

}  // namespace

std::string EncodeStateFile(const v1::SnapshotState& state) {
  std::string payload;
  state.SerializeToString(&payload);
  std::string out(kMagic, sizeof(kMagic));
  PutLe32(out, kFormatVersion);
  PutLe32(out, Crc32(payload));
  PutLe64(out, payload.size());
  out += payload;
  return out;
}

absl::StatusOr<v1::SnapshotState> DecodeStateFile(absl::string_view bytes, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("snapshot state file ", what, ": ", why,
                                            "; take the snapshot again (or rebuild the template)"));
  };
  if (bytes.size() < kStateHeaderBytes) {
    return bad(absl::StrCat("truncated: ", bytes.size(), " bytes, shorter than its ",
                            kStateHeaderBytes, "-byte header"));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return bad("not a vessel snapshot (wrong magic)");
  }
  const uint32_t version = static_cast<uint32_t>(GetLe(bytes, 8, 4));
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot state file ", what, ": format version ", version,
                     ", this vessel reads version ", kFormatVersion,
                     "; take the snapshot again with this vessel (or rebuild the template)"));
  }
  const uint32_t crc = static_cast<uint32_t>(GetLe(bytes, 12, 4));
  const uint64_t length = GetLe(bytes, 16, 8);
  if (length > kMaxStatePayload) {
    return bad(absl::StrCat("payload length ", length, " is over the ", kMaxStatePayload >> 20,
                            " MiB cap"));
  }
  const absl::string_view payload = bytes.substr(kStateHeaderBytes);
  if (payload.size() != length) {
    return bad(absl::StrCat("the header says ", length, " payload bytes, the file has ",
                            payload.size(), payload.size() < length ? " (truncated)" : ""));
  }
  if (Crc32(payload) != crc) return bad("checksum mismatch (the file is corrupt)");
  v1::SnapshotState state;
  if (!state.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return bad("the payload does not parse");
  }
  if (state.format_version() != kFormatVersion) {
    return bad(absl::StrCat("the payload says format version ", state.format_version()));
  }
  return state;
}

absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state) {
  const std::string bytes = EncodeStateFile(state);
  const std::string tmp = path + ".tmp";
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return ErrnoStatus("create " + tmp);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status s = ErrnoStatus("write " + tmp);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoStatus("save " + path);
    ::unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open snapshot state file " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxStatePayload + kStateHeaderBytes) {
    return absl::DataLossError(absl::StrCat("snapshot state file ", path, ": ", st.st_size,
                                            " bytes, over the cap of ", kMaxStatePayload >> 20, " MiB"));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read " + path);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return DecodeStateFile(bytes, path);
}

}  // namespace vessel::snapshot
