#include "sandbox/oci_spec.h"

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "vessel/sandbox/config.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

using nlohmann::json;
namespace v1 = agent::v1;

absl::Status Bad(const std::string& where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("OCI spec: ", where, ": ", what));
}

// Optional members: absent or null = not set.
const json* Member(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ExpectObject(const json& value, const std::string& where) {
  return value.is_object() ? absl::OkStatus() : Bad(where, "must be an object");
}

absl::StatusOr<std::string> String(const json& value, const std::string& where) {
  if (!value.is_string()) return Bad(where, "must be a string");
  std::string s = value.get<std::string>();
  if (s.find('\0') != std::string::npos) return Bad(where, "contains a NUL byte");
  return s;
}

absl::StatusOr<std::vector<std::string>> Strings(const json& value, const std::string& where,
                                                 size_t max = kMaxSpecArgs) {
  if (!value.is_array()) return Bad(where, "must be an array of strings");
  if (value.size() > max) return Bad(where, absl::StrCat("has more than ", max, " entries"));
  std::vector<std::string> out;
  for (size_t i = 0; i < value.size(); ++i) {
    VESSEL_ASSIGN_OR_RETURN(std::string s, String(value[i], absl::StrCat(where, "[", i, "]")));
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<uint64_t> Unsigned(const json& value, const std::string& where,
                                  uint64_t max = std::numeric_limits<uint64_t>::max()) {
  if (!value.is_number_integer() || (value.is_number_integer() && !value.is_number_unsigned() &&
                                     value.get<int64_t>() < 0)) {
    return Bad(where, "must be a non-negative integer");
  }
  uint64_t v = value.get<uint64_t>();
  if (v > max) return Bad(where, absl::StrCat("must be at most ", max));
  return v;
}

absl::StatusOr<int64_t> Signed(const json& value, const std::string& where) {
  if (!value.is_number_integer()) return Bad(where, "must be an integer");
  if (value.is_number_unsigned() &&
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Bad(where, "is out of range");
  }
  return value.get<int64_t>();
}

absl::StatusOr<bool> Bool(const json& value, const std::string& where) {
  if (!value.is_boolean()) return Bad(where, "must be true or false");
  return value.get<bool>();
}

absl::Status ConvertUser(const json& user, const std::string& where, v1::User* out) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(user, where));
  if (const json* v = Member(user, "uid")) {
    VESSEL_ASSIGN_OR_RETURN(uint64_t uid, Unsigned(*v, where + ".uid", UINT32_MAX - 1));
    out->set_uid(static_cast<uint32_t>(uid));
  }
  if (const json* v = Member(user, "gid")) {
    VESSEL_ASSIGN_OR_RETURN(uint64_t gid, Unsigned(*v, where + ".gid", UINT32_MAX - 1));
    out->set_gid(static_cast<uint32_t>(gid));
  }
  if (const json* v = Member(user, "additionalGids")) {
    if (!v->is_array() || v->size() > 65536) return Bad(where + ".additionalGids", "must be an array");
    for (size_t i = 0; i < v->size(); ++i) {
      VESSEL_ASSIGN_OR_RETURN(uint64_t g, Unsigned((*v)[i], absl::StrCat(where, ".additionalGids[", i, "]"),
                                                   UINT32_MAX - 1));
      out->add_additional_gids(static_cast<uint32_t>(g));
    }
  }
  if (Member(user, "username") != nullptr) {
    return Bad(where + ".username", "is Windows-only; give uid and gid");
  }
  return absl::OkStatus();
}

absl::Status ConvertCapabilities(const json& caps, const std::string& where, v1::Capabilities* out) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(caps, where));
  struct Set {
    const char* key;
    google::protobuf::RepeatedPtrField<std::string>* field;
  } sets[] = {{"bounding", out->mutable_bounding()},
              {"effective", out->mutable_effective()},
              {"inheritable", out->mutable_inheritable()},
              {"permitted", out->mutable_permitted()},
              {"ambient", out->mutable_ambient()}};
  for (const Set& set : sets) {
    const json* v = Member(caps, set.key);
    if (v == nullptr) continue;
    VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> names,
                            Strings(*v, absl::StrCat(where, ".", set.key), 64));
    for (std::string& name : names) {
      if (!absl::StartsWith(name, "CAP_")) {
        return Bad(absl::StrCat(where, ".", set.key), absl::StrCat("\"", name, "\" is not a CAP_ name"));
      }
      set.field->Add(std::move(name));
    }
  }
  return absl::OkStatus();
}

absl::Status ConvertMount(const json& m, const std::string& where, v1::Mount* out, bool* is_bind) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(m, where));
  const json* dest = Member(m, "destination");
  if (dest == nullptr) return Bad(where + ".destination", "is required");
  VESSEL_ASSIGN_OR_RETURN(std::string d, String(*dest, where + ".destination"));
  if (d.empty() || d[0] != '/') return Bad(where + ".destination", "must be an absolute path");
  out->set_destination(d);
  std::vector<std::string> options;
  if (const json* v = Member(m, "options")) {
    VESSEL_ASSIGN_OR_RETURN(options, Strings(*v, where + ".options", 64));
  }
  std::string type;
  if (const json* v = Member(m, "type")) {
    VESSEL_ASSIGN_OR_RETURN(type, String(*v, where + ".type"));
  }
  bool bind = type == "bind" || type == "rbind";
  for (const std::string& o : options) bind = bind || o == "bind" || o == "rbind";
  if (bind && type.empty()) type = "bind";
  if (type.empty()) return Bad(where + ".type", "is required for a mount that is not a bind mount");
  out->set_type(type);
  if (const json* v = Member(m, "source")) {
    VESSEL_ASSIGN_OR_RETURN(std::string s, String(*v, where + ".source"));
    out->set_source(s);
  }
  if (bind && (out->source().empty() || out->source()[0] != '/')) {
    return Bad(where + ".source", "a bind mount needs an absolute host path");
  }
  for (std::string& o : options) out->add_options(std::move(o));
  *is_bind = bind;
  return absl::OkStatus();
}

absl::Status ConvertNamespaces(const json& namespaces, const std::string& where,
                               v1::CreateContainerRequest* out) {
  if (!namespaces.is_array() || namespaces.size() > 16) return Bad(where, "must be an array");
  for (size_t i = 0; i < namespaces.size(); ++i) {
    std::string at = absl::StrCat(where, "[", i, "]");
    VESSEL_RETURN_IF_ERROR(ExpectObject(namespaces[i], at));
    const json* t = Member(namespaces[i], "type");
    if (t == nullptr) return Bad(at + ".type", "is required");
    VESSEL_ASSIGN_OR_RETURN(std::string type, String(*t, at + ".type"));
    v1::NamespaceType nt;
    if (type == "pid") {
      nt = v1::NAMESPACE_TYPE_PID;
    } else if (type == "mount") {
      nt = v1::NAMESPACE_TYPE_MOUNT;
    } else if (type == "ipc") {
      nt = v1::NAMESPACE_TYPE_IPC;
    } else if (type == "uts") {
      nt = v1::NAMESPACE_TYPE_UTS;
    } else if (type == "cgroup") {
      nt = v1::NAMESPACE_TYPE_CGROUP;
    } else if (type == "network") {
      continue;  // the VM is the pod: every container shares the guest's network
    } else if (type == "user") {
      return Bad(at + ".type", "user namespaces are not supported in the guest yet");
    } else {
      return Bad(at + ".type", absl::StrCat("unknown namespace type \"", type, "\""));
    }
    // A path names a host namespace (e.g. the pause container's): meaningless in the guest. The
    // sandbox's shared PID namespace option covers the one Kubernetes uses.
    if (const json* p = Member(namespaces[i], "path")) {
      VESSEL_ASSIGN_OR_RETURN(std::string path, String(*p, at + ".path"));
      if (!path.empty()) continue;
    }
    out->add_namespaces()->set_type(nt);
  }
  return absl::OkStatus();
}

absl::Status ConvertResources(const json& r, const std::string& where, v1::LinuxResources* out) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(r, where));
  if (const json* mem = Member(r, "memory")) {
    VESSEL_RETURN_IF_ERROR(ExpectObject(*mem, where + ".memory"));
    if (const json* limit = Member(*mem, "limit")) {
      VESSEL_ASSIGN_OR_RETURN(int64_t v, Signed(*limit, where + ".memory.limit"));
      if (v < -1) return Bad(where + ".memory.limit", "must be -1 (no limit) or a byte count");
      out->set_memory_limit(v);
    }
  }
  if (const json* cpu = Member(r, "cpu")) {
    VESSEL_RETURN_IF_ERROR(ExpectObject(*cpu, where + ".cpu"));
    if (const json* v = Member(*cpu, "shares")) {
      VESSEL_ASSIGN_OR_RETURN(uint64_t s, Unsigned(*v, where + ".cpu.shares", 262144));
      out->set_cpu_shares(s);
    }
    if (const json* v = Member(*cpu, "quota")) {
      VESSEL_ASSIGN_OR_RETURN(int64_t q, Signed(*v, where + ".cpu.quota"));
      out->set_cpu_quota(q);
    }
    if (const json* v = Member(*cpu, "period")) {
      VESSEL_ASSIGN_OR_RETURN(uint64_t p, Unsigned(*v, where + ".cpu.period", 1000000));
      out->set_cpu_period(p);
    }
  }
  if (const json* pids = Member(r, "pids")) {
    VESSEL_RETURN_IF_ERROR(ExpectObject(*pids, where + ".pids"));
    if (const json* limit = Member(*pids, "limit")) {
      VESSEL_ASSIGN_OR_RETURN(int64_t v, Signed(*limit, where + ".pids.limit"));
      out->set_pids_limit(v <= 0 ? -1 : v);  // OCI: 0 or -1 = unlimited
    }
  }
  return absl::OkStatus();
}

absl::Status ConvertSeccomp(const json& s, const std::string& where, v1::LinuxSeccomp* out) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(s, where));
  const json* def = Member(s, "defaultAction");
  if (def == nullptr) return Bad(where + ".defaultAction", "is required");
  VESSEL_ASSIGN_OR_RETURN(std::string action, String(*def, where + ".defaultAction"));
  out->set_default_action(action);
  if (const json* v = Member(s, "defaultErrnoRet")) {
    VESSEL_ASSIGN_OR_RETURN(uint64_t e, Unsigned(*v, where + ".defaultErrnoRet", 4095));
    out->set_default_errno_ret(static_cast<uint32_t>(e));
  }
  if (const json* v = Member(s, "architectures")) {
    VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> a, Strings(*v, where + ".architectures", 32));
    for (std::string& x : a) out->add_architectures(std::move(x));
  }
  if (const json* v = Member(s, "flags")) {
    VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> f, Strings(*v, where + ".flags", 16));
    for (std::string& x : f) out->add_flags(std::move(x));
  }
  if (const json* v = Member(s, "syscalls")) {
    if (!v->is_array() || v->size() > 4096) return Bad(where + ".syscalls", "must be an array");
    for (size_t i = 0; i < v->size(); ++i) {
      std::string at = absl::StrCat(where, ".syscalls[", i, "]");
      const json& rule = (*v)[i];
      VESSEL_RETURN_IF_ERROR(ExpectObject(rule, at));
      v1::LinuxSyscall* sc = out->add_syscalls();
      const json* names = Member(rule, "names");
      if (names == nullptr) return Bad(at + ".names", "is required");
      VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> n, Strings(*names, at + ".names", 1024));
      for (std::string& x : n) sc->add_names(std::move(x));
      const json* act = Member(rule, "action");
      if (act == nullptr) return Bad(at + ".action", "is required");
      VESSEL_ASSIGN_OR_RETURN(std::string a, String(*act, at + ".action"));
      sc->set_action(a);
      if (const json* e = Member(rule, "errnoRet")) {
        VESSEL_ASSIGN_OR_RETURN(uint64_t er, Unsigned(*e, at + ".errnoRet", 4095));
        sc->set_errno_ret(static_cast<uint32_t>(er));
      }
      if (const json* args = Member(rule, "args")) {
        if (!args->is_array() || args->size() > 6) return Bad(at + ".args", "must be an array of at most 6");
        for (size_t j = 0; j < args->size(); ++j) {
          std::string aat = absl::StrCat(at, ".args[", j, "]");
          const json& arg = (*args)[j];
          VESSEL_RETURN_IF_ERROR(ExpectObject(arg, aat));
          v1::LinuxSeccompArg* pa = sc->add_args();
          if (const json* x = Member(arg, "index")) {
            VESSEL_ASSIGN_OR_RETURN(uint64_t idx, Unsigned(*x, aat + ".index", 5));
            pa->set_index(static_cast<uint32_t>(idx));
          }
          if (const json* x = Member(arg, "value")) {
            VESSEL_ASSIGN_OR_RETURN(uint64_t val, Unsigned(*x, aat + ".value"));
            pa->set_value(val);
          }
          if (const json* x = Member(arg, "valueTwo")) {
            VESSEL_ASSIGN_OR_RETURN(uint64_t val, Unsigned(*x, aat + ".valueTwo"));
            pa->set_value_two(val);
          }
          const json* op = Member(arg, "op");
          if (op == nullptr) return Bad(aat + ".op", "is required");
          VESSEL_ASSIGN_OR_RETURN(std::string o, String(*op, aat + ".op"));
          pa->set_op(o);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::Process> ConvertOciProcess(const json& process, const std::string& where) {
  VESSEL_RETURN_IF_ERROR(ExpectObject(process, where));
  v1::Process out;
  const json* args = Member(process, "args");
  if (args == nullptr) return Bad(where + ".args", "is required");
  VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> argv, Strings(*args, where + ".args"));
  if (argv.empty() || argv[0].empty()) return Bad(where + ".args", "must name a program");
  for (std::string& a : argv) out.add_args(std::move(a));
  if (const json* v = Member(process, "env")) {
    VESSEL_ASSIGN_OR_RETURN(std::vector<std::string> env, Strings(*v, where + ".env"));
    for (size_t i = 0; i < env.size(); ++i) {
      if (env[i].find('=') == std::string::npos || env[i][0] == '=') {
        return Bad(absl::StrCat(where, ".env[", i, "]"), "must be KEY=VALUE");
      }
      out.add_env(std::move(env[i]));
    }
  }
  std::string cwd = "/";
  if (const json* v = Member(process, "cwd")) {
    VESSEL_ASSIGN_OR_RETURN(cwd, String(*v, where + ".cwd"));
  }
  if (cwd.empty() || cwd[0] != '/') return Bad(where + ".cwd", "must be an absolute path");
  out.set_cwd(cwd);
  if (const json* v = Member(process, "terminal")) {
    VESSEL_ASSIGN_OR_RETURN(bool t, Bool(*v, where + ".terminal"));
    out.set_terminal(t);
  }
  if (const json* v = Member(process, "user")) {
    VESSEL_RETURN_IF_ERROR(ConvertUser(*v, where + ".user", out.mutable_user()));
  }
  if (const json* v = Member(process, "capabilities")) {
    VESSEL_RETURN_IF_ERROR(ConvertCapabilities(*v, where + ".capabilities", out.mutable_capabilities()));
  }
  if (const json* v = Member(process, "noNewPrivileges")) {
    VESSEL_ASSIGN_OR_RETURN(bool n, Bool(*v, where + ".noNewPrivileges"));
    out.set_no_new_privileges(n);
  }
  if (const json* v = Member(process, "rlimits")) {
    if (!v->is_array() || v->size() > 64) return Bad(where + ".rlimits", "must be an array");
    for (size_t i = 0; i < v->size(); ++i) {
      std::string at = absl::StrCat(where, ".rlimits[", i, "]");
      const json& r = (*v)[i];
      VESSEL_RETURN_IF_ERROR(ExpectObject(r, at));
      const json* type = Member(r, "type");
      const json* hard = Member(r, "hard");
      const json* soft = Member(r, "soft");
      if (type == nullptr || hard == nullptr || soft == nullptr) {
        return Bad(at, "needs type, hard and soft");
      }
      v1::Rlimit* rl = out.add_rlimits();
      VESSEL_ASSIGN_OR_RETURN(std::string t, String(*type, at + ".type"));
      if (!absl::StartsWith(t, "RLIMIT_")) return Bad(at + ".type", "must be an RLIMIT_ name");
      rl->set_type(t);
      VESSEL_ASSIGN_OR_RETURN(uint64_t h, Unsigned(*hard, at + ".hard"));
      VESSEL_ASSIGN_OR_RETURN(uint64_t s, Unsigned(*soft, at + ".soft"));
      if (s > h) return Bad(at, "soft is above hard");
      rl->set_hard(h);
      rl->set_soft(s);
    }
  }
  return out;
}

absl::StatusOr<ConvertedSpec> ConvertOciSpec(const json& spec) {
  if (!spec.is_object()) return Bad("(top level)", "must be a JSON object");
  ConvertedSpec out;
  v1::CreateContainerRequest& req = out.request;
  const json* process = Member(spec, "process");
  if (process == nullptr) return Bad("process", "is required");
  VESSEL_ASSIGN_OR_RETURN(*req.mutable_process(), ConvertOciProcess(*process, "process"));
  if (const json* root = Member(spec, "root")) {
    VESSEL_RETURN_IF_ERROR(ExpectObject(*root, "root"));
    if (const json* ro = Member(*root, "readonly")) {
      VESSEL_ASSIGN_OR_RETURN(bool r, Bool(*ro, "root.readonly"));
      req.set_rootfs_readonly(r);
    }
  }
  if (const json* v = Member(spec, "hostname")) {
    VESSEL_ASSIGN_OR_RETURN(std::string h, String(*v, "hostname"));
    if (h.size() > 64) return Bad("hostname", "is longer than 64 bytes");
    req.set_hostname(h);
  }
  if (const json* mounts = Member(spec, "mounts")) {
    if (!mounts->is_array()) return Bad("mounts", "must be an array");
    if (mounts->size() > kMaxSpecMounts) {
      return Bad("mounts", absl::StrCat("has more than ", kMaxSpecMounts, " entries"));
    }
    for (size_t i = 0; i < mounts->size(); ++i) {
      bool bind = false;
      v1::Mount* m = req.add_mounts();
      VESSEL_RETURN_IF_ERROR(ConvertMount((*mounts)[i], absl::StrCat("mounts[", i, "]"), m, &bind));
      if (bind) out.binds.push_back({static_cast<int>(i), m->source()});
    }
  }
  if (const json* linux = Member(spec, "linux")) {
    VESSEL_RETURN_IF_ERROR(ExpectObject(*linux, "linux"));
    if (const json* v = Member(*linux, "namespaces")) {
      VESSEL_RETURN_IF_ERROR(ConvertNamespaces(*v, "linux.namespaces", &req));
    }
    if (const json* v = Member(*linux, "resources")) {
      VESSEL_RETURN_IF_ERROR(ConvertResources(*v, "linux.resources", req.mutable_resources()));
    }
    if (const json* v = Member(*linux, "seccomp")) {
      VESSEL_RETURN_IF_ERROR(ConvertSeccomp(*v, "linux.seccomp", req.mutable_seccomp()));
    }
  }
  if (!req.hostname().empty()) {
    bool uts = false;
    for (const v1::Namespace& ns : req.namespaces()) uts = uts || ns.type() == v1::NAMESPACE_TYPE_UTS;
    if (!uts) req.clear_hostname();  // the hostname of a shared UTS namespace is the sandbox's
  }
  return out;
}

json DefaultOciSpec(std::vector<std::string> args, std::vector<std::string> env, std::string cwd,
                    bool terminal) {
  std::vector<std::string> full_env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  if (terminal) full_env.push_back("TERM=xterm");
  for (std::string& e : env) full_env.push_back(std::move(e));
  const std::vector<std::string> caps = {"CAP_CHOWN",  "CAP_DAC_OVERRIDE",     "CAP_FSETID",
                                         "CAP_FOWNER", "CAP_MKNOD",            "CAP_NET_RAW",
                                         "CAP_SETGID", "CAP_SETUID",           "CAP_SETFCAP",
                                         "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                                         "CAP_KILL",   "CAP_AUDIT_WRITE"};
  json spec = {
      {"ociVersion", "1.0.2"},
      {"process",
       {{"terminal", terminal},
        {"user", {{"uid", 0}, {"gid", 0}}},
        {"args", std::move(args)},
        {"env", std::move(full_env)},
        {"cwd", std::move(cwd)},
        {"capabilities",
         {{"bounding", caps}, {"effective", caps}, {"permitted", caps}}},
        {"rlimits", json::array({{{"type", "RLIMIT_NOFILE"}, {"hard", 1024}, {"soft", 1024}}})},
        {"noNewPrivileges", true}}},
      {"root", {{"path", "rootfs"}, {"readonly", false}}},
      {"mounts",
       json::array({
           {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
           {{"destination", "/dev"},
            {"type", "tmpfs"},
            {"source", "tmpfs"},
            {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
           {{"destination", "/dev/pts"},
            {"type", "devpts"},
            {"source", "devpts"},
            {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}}},
           {{"destination", "/dev/shm"},
            {"type", "tmpfs"},
            {"source", "shm"},
            {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
           {{"destination", "/dev/mqueue"},
            {"type", "mqueue"},
            {"source", "mqueue"},
            {"options", {"nosuid", "noexec", "nodev"}}},
           {{"destination", "/sys"},
            {"type", "sysfs"},
            {"source", "sysfs"},
            {"options", {"nosuid", "noexec", "nodev", "ro"}}},
       })},
      {"linux",
       {{"namespaces", json::array({{{"type", "pid"}},
                                    {{"type", "ipc"}},
                                    {{"type", "uts"}},
                                    {{"type", "mount"}}})}}}};
  return spec;
}

}  // namespace vessel::sandbox
