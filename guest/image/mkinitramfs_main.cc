// vessel-mkinitramfs: builds a reproducible initramfs (cpio newc, uncompressed unless --gzip).
//   vessel-mkinitramfs --out FILE [--gzip] [--dir /path[:MODE]] [--file /dest=SRC[:MODE]]
//                      [--symlink /path=TARGET] [--node /path=c|b:MAJOR:MINOR:MODE] ...
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "guest/image/cpio_writer.h"
#include "vmm/base/file_util.h"

namespace vessel {
namespace {

constexpr uint64_t kMaxInputFile = 1ull << 30;

int Fail(const std::string& msg) {
  std::fprintf(stderr, "vessel-mkinitramfs: %s\n", msg.c_str());
  return 1;
}

bool ParseMode(absl::string_view s, uint32_t* mode) {
  if (s.empty() || s.size() > 4) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    v = v * 8 + static_cast<uint32_t>(c - '0');
  }
  *mode = v;
  return true;
}

int Main(int argc, char** argv) {
  CpioWriter cpio;
  std::string out;
  bool gzip = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--gzip") {
      gzip = true;
      continue;
    }
    if (i + 1 >= argc) return Fail(absl::StrCat(flag, " needs a value"));
    std::string value = argv[++i];
    absl::Status s;
    if (flag == "--out") {
      out = value;
    } else if (flag == "--dir") {
      std::vector<std::string> parts = absl::StrSplit(value, ':');
      uint32_t mode = 0755;
      if (parts.size() > 1 && !ParseMode(parts[1], &mode)) return Fail("bad mode in --dir " + value);
      s = cpio.AddDirectory(parts[0], mode);
    } else if (flag == "--file") {
      std::vector<std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
      if (kv.size() != 2) return Fail("--file wants /dest=SRC[:MODE]");
      std::string src = kv[1];
      uint32_t mode = 0644;
      size_t colon = src.rfind(':');
      if (colon != std::string::npos && ParseMode(src.substr(colon + 1), &mode)) src = src.substr(0, colon);
      absl::StatusOr<std::vector<uint8_t>> data = ReadFileBytes(src, kMaxInputFile);
      if (!data.ok()) return Fail(std::string(data.status().message()));
      s = cpio.AddFile(kv[0], std::move(*data), mode);
    } else if (flag == "--symlink") {
      std::vector<std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
      if (kv.size() != 2) return Fail("--symlink wants /path=TARGET");
      s = cpio.AddSymlink(kv[0], kv[1]);
    } else if (flag == "--node") {
      std::vector<std::string> kv = absl::StrSplit(value, absl::MaxSplits('=', 1));
      std::vector<std::string> f = kv.size() == 2 ? absl::StrSplit(kv[1], ':') : std::vector<std::string>{};
      uint32_t major, minor, mode;
      if (f.size() != 4 || f[0].size() != 1 || !absl::SimpleAtoi(f[1], &major) ||
          !absl::SimpleAtoi(f[2], &minor) || !ParseMode(f[3], &mode)) {
        return Fail("--node wants /path=c|b:MAJOR:MINOR:MODE");
      }
      s = cpio.AddDeviceNode(kv[0], f[0][0], major, minor, mode);
    } else {
      return Fail("unknown flag " + flag);
    }
    if (!s.ok()) return Fail(std::string(s.message()));
  }
  if (out.empty()) return Fail("--out FILE is required");
  std::vector<uint8_t> bytes;
  if (gzip) {
    absl::StatusOr<std::vector<uint8_t>> z = cpio.FinishGzip();
    if (!z.ok()) return Fail(std::string(z.status().message()));
    bytes = std::move(*z);
  } else {
    bytes = cpio.Finish();
  }
  std::string tmp = out + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return Fail("cannot write " + tmp);
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), out.c_str()) != 0) return Fail("cannot write " + out);
  std::printf("vessel-mkinitramfs: wrote %s (%zu bytes%s)\n", out.c_str(), bytes.size(), gzip ? ", gzip" : "");
  return 0;
}

}  // namespace
}  // namespace vessel

int main(int argc, char** argv) { return vessel::Main(argc, argv); }
