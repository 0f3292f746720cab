// RuntimeConfig: defaults, the JSON configuration file, validation.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "vessel/sandbox/config.h"
#include "vmm/base/errors.h"

#ifndef VESSEL_DEFAULT_GUEST_DIR
#error "VESSEL_DEFAULT_GUEST_DIR must name the directory setup.sh builds the guest into"
#endif

namespace vessel::sandbox {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("vessel config: \"", key, "\" ", what));
}

absl::Status ReadableFile(const std::string& what, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("vessel config: no ", what, " given"));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(what, " ", path,
                                            " is not a readable file: run ./setup.sh to build the "
                                            "default guest, or set \"",
                                            what, "\" in the config file"));
  }
  return absl::OkStatus();
}

}  // namespace

RuntimeConfig DefaultRuntimeConfig() {
  RuntimeConfig config;
  std::string dir = VESSEL_DEFAULT_GUEST_DIR;
  if (const char* env = std::getenv("VESSEL_GUEST_DIR"); env != nullptr && *env != '\0') dir = env;
  config.kernel = dir + "/vmlinux";
  config.initramfs = dir + "/initramfs.cpio";
  return config;
}

absl::StatusOr<RuntimeConfig> ParseRuntimeConfig(absl::string_view json_text) {
  json doc = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false,
                         /*ignore_comments=*/true);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError("vessel config: not valid JSON (a syntax error; comments are allowed)");
  }
  if (!doc.is_object()) return absl::InvalidArgumentError("vessel config: the top level must be an object");
  RuntimeConfig config = DefaultRuntimeConfig();
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    auto string_field = [&](std::string* out) -> absl::Status {
      if (!v.is_string()) return Bad(key, "must be a string");
      *out = v.get<std::string>();
      // Checked here too (not only in ValidateRuntimeConfig) so the message names this key.
      if (out->find('\0') != std::string::npos) return Bad(key, "must not contain a NUL byte");
      return absl::OkStatus();
    };
    auto uint_field = [&](uint64_t lo, uint64_t hi, uint64_t* out) -> absl::Status {
      if (!v.is_number_unsigned() || v.get<uint64_t>() < lo || v.get<uint64_t>() > hi) {
        return Bad(key, absl::StrCat("must be an integer from ", lo, " to ", hi));
      }
      *out = v.get<uint64_t>();
      return absl::OkStatus();
    };
    uint64_t n = 0;
    if (key == "kernel") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.kernel));
    } else if (key == "initramfs") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.initramfs));
    } else if (key == "vcpus") {
      VESSEL_RETURN_IF_ERROR(uint_field(1, 64, &n));
      config.vcpus = static_cast<uint32_t>(n);
    } else if (key == "memory_mib") {
      VESSEL_RETURN_IF_ERROR(uint_field(64, 1 << 20, &n));
      config.memory_mib = n;
    } else if (key == "shared_fs_cache") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.shared_fs_cache));
    } else if (key == "debug_console") {
      if (!v.is_boolean()) return Bad(key, "must be true or false");
      config.debug_console = v.get<bool>();
    } else if (key == "boot_timeout_s") {
      VESSEL_RETURN_IF_ERROR(uint_field(1, 3600, &n));
      config.boot_timeout = std::chrono::seconds(n);
    } else if (key == "state_dir") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.state_dir));
    } else if (key == "kernel_cmdline") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.kernel_cmdline));
    } else if (key == "seccomp") {
      if (!v.is_boolean()) return Bad(key, "must be true or false");
      config.seccomp = v.get<bool>();
    } else if (key == "use_template") {
      if (!v.is_boolean()) return Bad(key, "must be true or false");
      config.use_template = v.get<bool>();
    } else if (key == "template_dir") {
      VESSEL_RETURN_IF_ERROR(string_field(&config.template_dir));
    } else {
      return Bad(key, "is not a known setting (kernel, initramfs, vcpus, memory_mib, shared_fs_cache, "
                      "debug_console, boot_timeout_s, state_dir, kernel_cmdline, seccomp, use_template, "
                      "template_dir)");
    }
  }
  VESSEL_RETURN_IF_ERROR(ValidateRuntimeConfig(config));
  return config;
}

absl::StatusOr<RuntimeConfig> LoadRuntimeConfig(const std::string& path) {
  constexpr size_t kMaxConfigBytes = 1 << 20;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("vessel config file ", path, " is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("vessel config file ", path, " cannot be read: ",
                                            std::strerror(errno)));
  }
  // Read at most one byte past the limit: a FIFO or a device such as /dev/zero may never end.
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat("vessel config file ", path, " is over 1 MiB"));
  }
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

absl::Status ValidateRuntimeConfig(const RuntimeConfig& config) {
  if (config.vcpus < 1 || config.vcpus > 64) return Bad("vcpus", "must be from 1 to 64");
  if (config.memory_mib < 64) return Bad("memory_mib", "must be at least 64 (the agent and kernel need it)");
  if (config.memory_mib > (1 << 20)) return Bad("memory_mib", "must be at most 1048576 (1 TiB)");
  if (config.shared_fs_cache != "never" && config.shared_fs_cache != "auto" &&
      config.shared_fs_cache != "always") {
    return Bad("shared_fs_cache", "must be \"never\", \"auto\" or \"always\"");
  }
  if (config.boot_timeout.count() < 1) return Bad("boot_timeout_s", "must be at least 1");
  // A NUL byte cuts a path short at every system call: "/\0x" would be "/" to mkdir and remove_all.
  for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"kernel", &config.kernel},
                                   {"initramfs", &config.initramfs},
                                   {"state_dir", &config.state_dir},
                                   {"template_dir", &config.template_dir},
                                   {"kernel_cmdline", &config.kernel_cmdline}}) {
    if (value->find('\0') != std::string::npos) return Bad(key, "must not contain a NUL byte");
  }
  if (config.state_dir.empty() || config.state_dir[0] != '/') {
    return Bad("state_dir", "must be an absolute path");
  }
  if (!config.template_dir.empty() && config.template_dir[0] != '/') {
    return Bad("template_dir", "must be an absolute path (or empty for the default)");
  }
  if (config.kernel_cmdline.size() > 1024) return Bad("kernel_cmdline", "is longer than 1024 bytes");
  VESSEL_RETURN_IF_ERROR(ReadableFile("kernel", config.kernel));
  VESSEL_RETURN_IF_ERROR(ReadableFile("initramfs", config.initramfs));
  return absl::OkStatus();
}

}  // namespace vessel::sandbox
