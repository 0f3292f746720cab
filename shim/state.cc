#include "shim/state.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "shim/mounts.h"

namespace vessel::shim {
namespace {

std::string ReadMountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string DecodeOctal(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      bool ok = true;
      int v = 0;
      for (size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

std::string ShimStateDir(const std::string& base, const std::string& ns) { return absl::StrCat(base, "/", ns); }

std::string SandboxStateDir(const std::string& state_dir, const std::string& sandbox_id) {
  return absl::StrCat(state_dir, "/sandboxes/", sandbox_id);
}

std::string FindSandboxOf(const std::string& state_dir, const std::string& container_id) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(state_dir + "/sandboxes", ec)) {
    std::error_code e2;
    if (std::filesystem::exists(entry.path() / "shared" / container_id, e2)) return entry.path().filename().string();
  }
  return "";
}

std::vector<std::string> MountsUnder(const std::string& dir, const std::string& mountinfo_text) {
  std::vector<std::string> found;
  for (absl::string_view line : absl::StrSplit(mountinfo_text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 5) continue;
    std::string point = DecodeOctal(fields[4]);
    if (point == dir || (point.size() > dir.size() && point.compare(0, dir.size(), dir) == 0 &&
                         point[dir.size()] == '/')) {
      found.push_back(point);
    }
  }
  std::sort(found.begin(), found.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() > b.size() : a < b;
  });
  found.erase(std::unique(found.begin(), found.end()), found.end());
  return found;
}

absl::Status RemoveSandboxState(const std::string& sandbox_dir, const std::string& container_id) {
  absl::Status status;
  std::error_code ec;
  if (!std::filesystem::exists(sandbox_dir, ec)) return status;
  auto clean = [&](const std::string& d) {
    for (const std::string& m : MountsUnder(d, ReadMountinfo())) status.Update(UnmountAll(m));
    if (!MountsUnder(d, ReadMountinfo()).empty()) {
      status.Update(absl::FailedPreconditionError(
          absl::StrCat("not removing ", d, ": something is still mounted under it (unmount it by hand)")));
      return;
    }
    std::error_code rm;
    std::filesystem::remove_all(d, rm);
    // containerd runs one `delete` per container of a dead pod, concurrently: another one may
    // have removed it first.
    if (rm && rm != std::errc::no_such_file_or_directory) {
      status.Update(absl::InternalError(absl::StrCat("remove ", d, ": ", rm.message())));
    }
  };
  if (!container_id.empty()) {
    std::string mine = absl::StrCat(sandbox_dir, "/shared/", container_id);
    if (std::filesystem::exists(mine, ec)) clean(mine);
    for (const auto& entry : std::filesystem::directory_iterator(sandbox_dir + "/shared", ec)) {
      (void)entry;
      return status;  // another container's state: its own `delete` finishes the sandbox
    }
  }
  clean(sandbox_dir);
  return status;
}

}  // namespace vessel::shim
