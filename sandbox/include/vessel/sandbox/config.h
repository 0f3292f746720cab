// What a sandbox and a container are made from. Plain structs: fill in what you need, the rest has
// defaults. RuntimeConfig is the part a configuration file sets (see sandbox/README.md).
#ifndef VESSEL_SANDBOX_CONFIG_H_
#define VESSEL_SANDBOX_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace vessel::sandbox {

// Machine-wide defaults, from a JSON file (LoadRuntimeConfig) or built in.
struct RuntimeConfig {
  // Guest kernel (ELF vmlinux or bzImage) and initramfs (/init = vessel-agent). Default: the ones
  // setup.sh builds (<build>/guest/vmlinux, <build>/guest/initramfs.cpio), or $VESSEL_GUEST_DIR.
  std::string kernel;
  std::string initramfs;
  uint32_t vcpus = 1;
  uint64_t memory_mib = 512;
  // virtio-fs cache policy of the sandbox share: "never", "auto" or "always".
  std::string shared_fs_cache = "auto";
  // Guest console: always written to <sandbox dir>/console.log; with debug_console also to stderr.
  bool debug_console = false;
  // How long Sandbox::Create waits for the agent. Software-emulated KVM (kvm_pvm) boots in ~40 s;
  // hardware KVM in well under a second.
  std::chrono::seconds boot_timeout{300};
  // Where sandbox directories (vsock socket, share, console log) live.
  std::string state_dir = "/run/vessel";
  // Appended to the guest kernel command line.
  std::string kernel_cmdline;
  // Per-thread seccomp filters on the VM's threads (docs/security.md). Off only for debugging.
  bool seccomp = true;
  // Start sandboxes from a matching template when one exists (vessel/sandbox/template.h);
  // false always boots the kernel (`vessel run --no-template`).
  bool use_template = true;
  // Where templates live; empty: $VESSEL_TEMPLATE_DIR, /var/cache/vessel/templates for root, or
  // ${XDG_CACHE_HOME:-~/.cache}/vessel/templates.
  std::string template_dir;
};

// The built-in defaults, with kernel/initramfs resolved ($VESSEL_GUEST_DIR, then the build tree).
RuntimeConfig DefaultRuntimeConfig();
// Parses a JSON object whose keys are RuntimeConfig's fields (boot_timeout as "boot_timeout_s");
// fields not given keep DefaultRuntimeConfig()'s values. Unknown keys, wrong types and out-of-range
// values are InvalidArgument naming the key and what is allowed.
absl::StatusOr<RuntimeConfig> ParseRuntimeConfig(absl::string_view json_text);
absl::StatusOr<RuntimeConfig> LoadRuntimeConfig(const std::string& path);
// Checks ranges and that kernel/initramfs are readable files.
absl::Status ValidateRuntimeConfig(const RuntimeConfig& config);

struct SandboxConfig {
  // [A-Za-z0-9_.-]{1,64}; unique among the live sandboxes of this process (and of state_dir).
  std::string id;
  std::string hostname;  // empty: the id
  RuntimeConfig runtime = DefaultRuntimeConfig();
  // The pod's network namespace (a path such as /var/run/netns/NAME or /proc/PID/ns/net). Its
  // interface is mirrored into the guest's eth0 with tc redirects (Kata's tcfilter model). Empty:
  // the guest has no network device.
  std::string netns_path;
  // resolv.conf lines for the guest ("nameserver 10.0.0.10").
  std::vector<std::string> dns;
  // Containers share one PID namespace.
  bool shared_pid_namespace = false;
  // Extra virtio-blk disks: host paths (files or block devices), /dev/vda, /dev/vdb, ... in order.
  std::vector<std::string> disks;
};

// How a container process's stdio reaches the caller. Every fd is the caller's: the sandbox
// duplicates what it needs, so the caller may close its copies at once. -1 = not connected
// (stdin reads EOF, output is discarded).
struct StdioConfig {
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // Run on a pseudo-terminal in the guest: stdin_fd feeds it, stdout_fd receives its output
  // (stderr_fd is unused).
  bool terminal = false;
};

struct ContainerConfig {
  // [A-Za-z0-9_.-]{1,64}, unique in the sandbox.
  std::string id;
  // An OCI runtime spec (config.json). root.path is ignored: the root is `rootfs`.
  // process.terminal is overridden by stdio.terminal.
  nlohmann::json spec;
  // A host directory holding the container's root filesystem: bind-shared into the guest.
  std::string rootfs_dir;
  StdioConfig stdio;
};

// A process to run in a running container (`exec`).
struct ExecConfig {
  std::string exec_id;
  // An OCI "process" object (args, env, cwd, user, terminal, capabilities, rlimits, ...).
  nlohmann::json process;
  StdioConfig stdio;
};

// The default OCI spec for `args`: like `runc spec` (PID/IPC/UTS/mount namespaces, /proc, /dev,
// /dev/pts, /dev/shm, /dev/mqueue, /sys, the default capabilities, PATH and TERM), with `env`
// ("K=V") added and `cwd` (default "/").
nlohmann::json DefaultOciSpec(std::vector<std::string> args, std::vector<std::string> env = {},
                              std::string cwd = "/", bool terminal = false);

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_CONFIG_H_
