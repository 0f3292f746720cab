// Sandbox templates (vessel/sandbox/template.h): the key, the store under TemplateRoot, building one
// (SandboxImpl::BootAndSnapshot), and a sandbox's restore from one (SandboxImpl::RestoreFromTemplate).
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sandbox/sandbox_impl.h"
#include "vessel/sandbox/template.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"
#include "vmm/kvm/platform.h"
#include "vmm/snapshot/state_file.h"

namespace vessel::sandbox {
namespace {

namespace v1 = agent::v1;
using Clock = std::chrono::steady_clock;
constexpr char kMetadataFile[] = "template.json";
constexpr size_t kEntropyBytes = 64;

std::string Hex(const unsigned char* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 15]);
  }
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view bytes) { EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()); }
  void Field(absl::string_view name, absl::string_view value) {
    Update(absl::StrCat(name, "=", value.size(), ":", value, "\n"));
  }
  absl::Status UpdateFile(const std::string& what, const std::string& path) {
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(absl::StrCat("template key: open the ", what, " ", path));
    std::string buf(1 << 20, '\0');
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(absl::StrCat("template key: read the ", what, " ", path));
      if (n == 0) break;
      Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    }
    return absl::OkStatus();
  }
  std::string HexDigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    return Hex(md, len);
  }

 private:
  EVP_MD_CTX* ctx_;
};

uint64_t DiskBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    struct stat st;
    if (::stat(entry.path().c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

absl::StatusOr<TemplateInfo> ReadTemplate(const std::string& dir) {
  std::ifstream in(dir + "/" + kMetadataFile);
  if (!in) return absl::NotFoundError(absl::StrCat(dir, " has no ", kMetadataFile));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(dir, "/", kMetadataFile, " is not a JSON object"));
  }
  TemplateInfo t;
  t.dir = dir;
  t.key = j.value("key", "");
  t.kernel = j.value("kernel", "");
  t.initramfs = j.value("initramfs", "");
  t.vcpus = j.value("vcpus", 0u);
  t.memory_mib = j.value("memory_mib", uint64_t{0});
  t.kernel_cmdline = j.value("kernel_cmdline", "");
  t.platform = j.value("platform", "");
  t.network = j.value("network", false);
  t.network_mac = j.value("network_mac", "");
  t.created_unix = j.value("created_unix", int64_t{0});
  t.memory_file_bytes = j.value("memory_file_bytes", uint64_t{0});
  t.disk_bytes = DiskBytes(dir);
  return t;
}

}  // namespace

std::string TemplateRoot(const RuntimeConfig& rt) {
  if (!rt.template_dir.empty()) return rt.template_dir;
  if (const char* env = std::getenv("VESSEL_TEMPLATE_DIR"); env != nullptr && *env == '/') return env;
  // root (containerd's shims, `sudo vessel run`) shares one system-wide store whatever $HOME is.
  if (::geteuid() == 0) return "/var/cache/vessel/templates";
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg == '/') {
    return absl::StrCat(xdg, "/vessel/templates");
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/') {
    return absl::StrCat(home, "/.cache/vessel/templates");
  }
  return "/var/cache/vessel/templates";
}

namespace {

// The digest of everything a template's guest is made of except its network shape: the two
// template shapes share it (ListTemplates reads the kernel and initramfs once for both).
absl::StatusOr<std::string> InputsDigest(const RuntimeConfig& rt) {
  Sha256 h;
  h.Field("vessel-template", "1");
  h.Field("snapshot-format", absl::StrCat(snapshot::kFormatVersion));
  h.Field("platform", DetectPlatform().Name());
  h.Field("vcpus", absl::StrCat(rt.vcpus));
  h.Field("memory_mib", absl::StrCat(rt.memory_mib));
  h.Field("kernel_cmdline", rt.kernel_cmdline);
  h.Update("kernel\n");
  VESSEL_RETURN_IF_ERROR(h.UpdateFile("kernel", rt.kernel));
  h.Update("initramfs\n");
  VESSEL_RETURN_IF_ERROR(h.UpdateFile("initramfs", rt.initramfs));
  return h.HexDigest();
}

std::string KeyOf(const std::string& inputs_digest, bool network) {
  Sha256 h;
  h.Field("inputs", inputs_digest);
  h.Field("network", network ? "1" : "0");
  return h.HexDigest();
}

}  // namespace

absl::StatusOr<std::string> TemplateKey(const RuntimeConfig& rt, bool network) {
  VESSEL_ASSIGN_OR_RETURN(std::string inputs, InputsDigest(rt));
  return KeyOf(inputs, network);
}

absl::StatusOr<TemplateInfo> BuildTemplate(const RuntimeConfig& rt_in, bool network) {
  RuntimeConfig rt = rt_in;
  rt.use_template = false;
  VESSEL_RETURN_IF_ERROR(ValidateRuntimeConfig(rt));
  VESSEL_ASSIGN_OR_RETURN(std::string key, TemplateKey(rt, network));
  const std::string root = TemplateRoot(rt);
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("create template directory ", root, ": ", ec.message()));
  ::chmod(root.c_str(), 0700);
  const std::string building = absl::StrCat(root, "/.building-", key.substr(0, 16), "-", ::getpid());
  std::filesystem::remove_all(building, ec);

  SandboxConfig sc;
  sc.id = absl::StrCat("template-", key.substr(0, 12), "-", ::getpid());
  sc.runtime = rt;
  LogInfo("template ", key.substr(0, 12), ": booting ", rt.kernel, " + ", rt.initramfs, " (", rt.vcpus,
          " vCPU, ", rt.memory_mib, " MiB) until the agent answers, then saving it under ", root);
  absl::StatusOr<SnapshotInfo> snap = SandboxImpl::BootAndSnapshot(sc, building, network);
  if (!snap.ok()) {
    std::filesystem::remove_all(building, ec);
    return absl::Status(snap.status().code(), absl::StrCat("template build: ", snap.status().message()));
  }
  nlohmann::json meta = {
      {"key", key},
      {"kernel", rt.kernel},
      {"initramfs", rt.initramfs},
      {"vcpus", rt.vcpus},
      {"memory_mib", rt.memory_mib},
      {"kernel_cmdline", rt.kernel_cmdline},
      {"platform", DetectPlatform().Name()},
      {"network", network},
      {"network_mac", network ? std::string(kTemplateMac) : std::string()},
      {"created_unix", static_cast<int64_t>(::time(nullptr))},
      {"memory_file_bytes", snap->memory_file_bytes},
      {"memory_data_bytes", snap->memory_data_bytes},
  };
  {
    std::ofstream out(building + "/" + kMetadataFile);
    out << meta.dump(2) << "\n";
    if (!out) {
      std::filesystem::remove_all(building, ec);
      return absl::InternalError(absl::StrCat("write ", building, "/", kMetadataFile));
    }
  }
  const std::string dir = absl::StrCat(root, "/", key);
  std::filesystem::remove_all(dir, ec);
  if (::rename(building.c_str(), dir.c_str()) != 0) {
    absl::Status s = ErrnoStatus(absl::StrCat("rename ", building, " to ", dir));
    std::filesystem::remove_all(building, ec);
    return s;
  }
  LogInfo("template ", key.substr(0, 12), ": saved in ", dir, " (", snap->memory_data_bytes >> 20,
          " MiB of data in a ", snap->memory_file_bytes >> 20, " MiB memory file)");
  VESSEL_ASSIGN_OR_RETURN(TemplateInfo info, ReadTemplate(dir));
  info.current = true;
  return info;
}

absl::StatusOr<std::vector<TemplateInfo>> ListTemplates(const RuntimeConfig& rt) {
  std::vector<TemplateInfo> out;
  const std::string root = TemplateRoot(rt);
  std::error_code ec;
  if (!std::filesystem::exists(root, ec)) return out;
  absl::StatusOr<std::string> inputs = InputsDigest(rt);
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || !entry.is_directory()) continue;
    absl::StatusOr<TemplateInfo> t = ReadTemplate(entry.path().string());
    if (!t.ok()) continue;
    t->current = name == t->key && inputs.ok() &&
                 (t->key == KeyOf(*inputs, false) || t->key == KeyOf(*inputs, true));
    out.push_back(std::move(*t));
  }
  if (ec) return absl::InternalError(absl::StrCat("list ", root, ": ", ec.message()));
  return out;
}

absl::Status RemoveTemplate(const RuntimeConfig& rt, const std::string& key_prefix) {
  const std::string root = TemplateRoot(rt);
  VESSEL_ASSIGN_OR_RETURN(std::vector<TemplateInfo> all, ListTemplates(rt));
  std::vector<std::string> dirs;
  if (key_prefix == "all") {
    for (const TemplateInfo& t : all) dirs.push_back(t.dir);
  } else {
    if (key_prefix.size() < 8) {
      return absl::InvalidArgumentError("give at least 8 hex digits of the template key (or \"all\")");
    }
    for (const TemplateInfo& t : all) {
      if (absl::StartsWith(t.key, key_prefix)) dirs.push_back(t.dir);
    }
    if (dirs.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key_prefix, "\" matches ", dirs.size(),
                                                     " templates: give more of the key"));
    }
  }
  if (dirs.empty() && key_prefix != "all") {
    return absl::NotFoundError(absl::StrCat("no template under ", root, " has a key starting with ",
                                            key_prefix, " (see `vessel template ls`)"));
  }
  for (const std::string& d : dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
    if (ec) return absl::InternalError(absl::StrCat("remove ", d, ": ", ec.message()));
    LogInfo("template removed: ", d);
  }
  return absl::OkStatus();
}

// --- SandboxImpl's template paths ---

absl::StatusOr<SnapshotInfo> SandboxImpl::BootAndSnapshot(SandboxConfig config,
                                                          const std::string& snapshot_dir, bool network) {
  config.runtime.use_template = false;
  std::unique_ptr<SandboxImpl> sandbox(new SandboxImpl(std::move(config), SandboxEvents{}));
  sandbox->snapshot_to_ = snapshot_dir;
  sandbox->template_network_ = network;
  absl::Status booted = sandbox->Boot();
  absl::StatusOr<SnapshotInfo> info = absl::UnknownError("not saved");
  if (booted.ok()) {
    // The agent answered: its listener is up and nothing else runs. The host's connection is
    // closed now; the guest's end of it is reset at each restore (vsock transport reset).
    sandbox->agent_->Close();
    absl::Status paused = sandbox->machine_->Pause();
    if (paused.ok()) {
      info = sandbox->machine_->SaveSnapshot(snapshot_dir);
    } else {
      info = paused;
    }
  } else {
    std::string tail = sandbox->ConsoleTail(2048);
    info = tail.empty() ? booted
                        : absl::Status(booted.code(), absl::StrCat(booted.message(),
                                                                   "\n--- end of the guest console ---\n", tail));
  }
  if (sandbox->machine_ != nullptr) sandbox->machine_->Stop();
  (void)sandbox->Stop(std::chrono::seconds(5));
  return info;
}

std::unique_ptr<Machine> SandboxImpl::RestoreFromTemplate(const MachineConfig& mc) {
  const RuntimeConfig& rt = config_.runtime;
  if (!rt.use_template) {
    timeline_.start_path = "cold boot: templates are off (use_template false / --no-template)";
    return nullptr;
  }
  if (!config_.disks.empty()) {
    timeline_.start_path = "cold boot: templates cover sandboxes without extra disks";
    return nullptr;
  }
  const bool network = !config_.netns_path.empty();
  const auto t0 = Clock::now();
  absl::StatusOr<std::string> key = TemplateKey(rt, network);
  if (!key.ok()) {
    timeline_.start_path = absl::StrCat("cold boot: ", key.status().message());
    return nullptr;
  }
  const std::string dir = absl::StrCat(TemplateRoot(rt), "/", *key);
  // A template becomes this sandbox's guest memory and vCPU state: only one from a store nobody
  // else can write to.
  struct stat root_st;
  if (::stat(TemplateRoot(rt).c_str(), &root_st) == 0 &&
      (root_st.st_uid != ::geteuid() || (root_st.st_mode & 022) != 0)) {
    LogWarning("sandbox ", config_.id, ": template directory ", TemplateRoot(rt),
               " is writable by others or not owned by this user: its templates are not used "
               "(chmod 700 it, or remove it and run `vessel template build`)");
    timeline_.start_path = "cold boot: the template directory is not private";
    return nullptr;
  }
  if (::access((dir + "/" + snapshot::kStateFileName).c_str(), R_OK) != 0) {
    timeline_.start_path = absl::StrCat("cold boot: no template ", key->substr(0, 12), " for this kernel, "
                                        "initramfs and VM shape under ", TemplateRoot(rt),
                                        network ? " (`vessel template build --network` makes one)"
                                                : " (`vessel template build` makes one)");
    return nullptr;
  }
  const auto keyed = Clock::now();
  absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Restore(mc, dir);
  if (!m.ok()) {
    LogWarning("sandbox ", config_.id, ": template ", dir, " cannot be restored: ", m.status().message(),
               "; booting the kernel instead (`vessel template build` replaces the template)");
    timeline_.start_path = "cold boot: the template failed to restore";
    return nullptr;
  }
  timeline_.from_template = true;
  timeline_.template_key = *key;
  if (network) template_device_mac_ = kTemplateMac;
  timeline_.start_path = absl::StrCat(
      "restored from template ", key->substr(0, 12), " (key ",
      std::chrono::duration_cast<std::chrono::milliseconds>(keyed - t0).count(), " ms, restore ",
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - keyed).count(), " ms)");
  return std::move(*m);
}

absl::Status SandboxImpl::MakeRestoredGuestUnique() {
  // Fresh entropy: the guest's pool and CRNG state are the template's, shared by every clone.
  v1::ReseedRandomDevRequest reseed;
  std::string bytes(kEntropyBytes, '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("getrandom for the restored guest's entropy");
    got += static_cast<size_t>(n);
  }
  reseed.set_data(bytes);
  absl::StatusOr<v1::ReseedRandomDevResponse> r =
      agent_->Call<v1::ReseedRandomDevResponse>("ReseedRandomDev", reseed, absl::Seconds(30));
  if (!r.ok()) {
    return absl::Status(r.status().code(), absl::StrCat("sandbox ", config_.id,
                                                        ": reseeding the restored guest's RNG: ",
                                                        r.status().message()));
  }
  // The guest clock continued from the template's instant: set it to the host's.
  struct timeval now;
  ::gettimeofday(&now, nullptr);
  v1::SetGuestDateTimeRequest date;
  date.set_sec(now.tv_sec);
  date.set_usec(now.tv_usec);
  absl::Status dated = agent_->CallEmpty("SetGuestDateTime", date, absl::Seconds(30));
  if (!dated.ok()) {
    return absl::Status(dated.code(), absl::StrCat("sandbox ", config_.id,
                                                   ": setting the restored guest's clock: ", dated.message()));
  }
  return absl::OkStatus();
}

}  // namespace vessel::sandbox
