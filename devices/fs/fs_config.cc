#include "devices/fs/fs_config.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace vessel::fs {

absl::Status ValidateFsConfig(const FsConfig& config) {
  if (config.tag.empty() || config.tag.size() > FsConfig::kMaxTagBytes) {
    return absl::InvalidArgumentError(absl::StrCat("virtio-fs: tag '", config.tag, "' must be 1..",
                                                   FsConfig::kMaxTagBytes, " bytes"));
  }
  if (config.tag.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("virtio-fs: the tag must not contain NUL bytes");
  }
  if (config.shared_dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs ", config.tag, ": no shared directory given (TAG=DIR)"));
  }
  if (config.num_request_queues == 0 || config.num_request_queues > FsConfig::kMaxRequestQueues) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs ", config.tag, ": ", config.num_request_queues,
                     " request queues; use 1..", FsConfig::kMaxRequestQueues));
  }
  if (config.max_inodes < 2 || config.max_handles == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs ", config.tag, ": max_inodes must be >= 2 and max_handles >= 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<FsConfig> ParseShareSpec(absl::string_view spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ',');
  FsConfig config;
  const size_t eq = parts[0].find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "share '", spec, "': expected TAG=DIR[,cache=never|auto|always][,ro][,writeback]"));
  }
  config.tag = std::string(parts[0].substr(0, eq));
  config.shared_dir = std::string(parts[0].substr(eq + 1));
  for (size_t i = 1; i < parts.size(); ++i) {
    absl::string_view p = parts[i];
    if (p == "ro") {
      config.read_only = true;
    } else if (p == "writeback") {
      config.writeback = true;
    } else if (p == "cache=never") {
      config.cache = CachePolicy::kNever;
    } else if (p == "cache=auto") {
      config.cache = CachePolicy::kAuto;
    } else if (p == "cache=always") {
      config.cache = CachePolicy::kAlways;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("share '", spec, "': unknown option '", p,
                       "' (known: cache=never|auto|always, ro, writeback)"));
    }
  }
  absl::Status s = ValidateFsConfig(config);
  if (!s.ok()) return s;
  return config;
}

}  // namespace vessel::fs
