#include "shim/address.h"

#include <openssl/sha.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace vessel::shim {

std::string CleanPath(absl::string_view path) {
  if (path.empty()) return ".";
  bool rooted = path.front() == '/';
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!out.empty() && out.back() != "..") {
        out.pop_back();
      } else if (!rooted) {
        out.emplace_back("..");
      }  // "/.." is "/"
      continue;
    }
    out.emplace_back(part);
  }
  std::string joined = absl::StrJoin(out, "/");
  if (rooted) return "/" + joined;
  return joined.empty() ? "." : joined;
}

absl::StatusOr<std::string> SocketAddress(absl::string_view containerd_address, absl::string_view ns,
                                          absl::string_view id) {
  if (ns.empty()) return absl::InvalidArgumentError("the containerd namespace is empty (pass -namespace)");
  if (id.empty()) return absl::InvalidArgumentError("the shim id is empty (pass -id)");
  // filepath.Join skips empty elements and cleans the result.
  std::vector<absl::string_view> parts;
  for (absl::string_view p : {containerd_address, ns, id}) {
    if (!p.empty()) parts.push_back(p);
  }
  std::string joined = CleanPath(absl::StrJoin(parts, "/"));
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), digest);
  return absl::StrCat("unix://", kSocketDir, "/",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest),
                                                               sizeof(digest))));
}

absl::StatusOr<std::string> SocketPath(absl::string_view address) {
  if (!absl::ConsumePrefix(&address, "unix://") || address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shim address \"", address, "\" is not a unix:// path (abstract sockets are not supported)"));
  }
  if (address.size() > kSocketPathLimit) {
    return absl::InvalidArgumentError(absl::StrCat("shim socket path ", address, " is longer than ",
                                                   kSocketPathLimit, " bytes"));
  }
  return std::string(address);
}

bool IsValidNamespace(absl::string_view ns) {
  if (ns.empty() || ns.size() > 76) return false;
  bool after_separator = true;  // the first character and the one after a separator: alphanumeric
  for (char c : ns) {
    if (absl::ascii_isalnum(c)) {
      after_separator = false;
    } else if (c == '.' || c == '_' || c == '-') {
      if (after_separator) return false;
      after_separator = true;
    } else {
      return false;
    }
  }
  return !after_separator;
}

bool IsValidId(absl::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

absl::StatusOr<PodMembership> PodMembershipFromSpec(const nlohmann::json& spec,
                                                    absl::string_view container_id) {
  PodMembership m{std::string(container_id), false};
  if (!spec.is_object() || !spec.contains("annotations")) return m;
  const nlohmann::json& a = spec["annotations"];
  if (a.is_null()) return m;
  if (!a.is_object()) {
    return absl::InvalidArgumentError("config.json: \"annotations\" must be an object of strings");
  }
  auto get = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = a.find(key);
    if (it == a.end()) return std::string();
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: annotation \"", key, "\" must be a string"));
    }
    return it->get<std::string>();
  };
  absl::StatusOr<std::string> sandbox = get(kSandboxIdAnnotation);
  if (!sandbox.ok()) return sandbox.status();
  absl::StatusOr<std::string> type = get(kContainerTypeAnnotation);
  if (!type.ok()) return type.status();
  if (!sandbox->empty()) {
    if (!IsValidId(*sandbox)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: annotation ", kSandboxIdAnnotation, "=\"", *sandbox,
          "\" is not a valid sandbox id (1-64 characters of [A-Za-z0-9_.-])"));
    }
    m.sandbox_id = *sandbox;
    m.joins_existing_pod = *type == "container" && *sandbox != container_id;
  }
  return m;
}

}  // namespace vessel::shim
