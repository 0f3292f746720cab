// Sandbox templates: a VM that booted the default guest up to a ready agent, paused and saved as a
// snapshot (vmm/snapshot). Sandbox::Create restores a sandbox from the template that matches its
// runtime configuration instead of booting a kernel (RuntimeConfig::use_template, on by default);
// `vessel template build|ls|rm` manages them. See sandbox/README.md.
//
// A template is keyed by a SHA-256 over everything that shapes the booted guest: the kernel's and
// the initramfs's bytes (the agent is in the initramfs), vCPUs, memory, the extra kernel command
// line, the KVM platform, the snapshot format and whether the VM has a network device. A template
// whose inputs changed therefore has another key and is never used. Two shapes exist: without a
// network device (sandboxes without a pod network) and with one virtio-net device (sandboxes with
// a pod network: the clone's tap and MAC replace the template's; the agent gives the guest's NIC
// the pod's MAC). Sandboxes with extra disks cold-boot.
#ifndef VESSEL_SANDBOX_TEMPLATE_H_
#define VESSEL_SANDBOX_TEMPLATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vessel/sandbox/config.h"

namespace vessel::sandbox {

struct TemplateInfo {
  std::string key;   // 64 hex digits
  std::string dir;   // <template_dir>/<key>: state, memory, template.json
  std::string kernel;
  std::string initramfs;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  std::string kernel_cmdline;
  std::string platform;
  bool network = false;      // the VM has a virtio-net device (for sandboxes with a pod network)
  std::string network_mac;   // the MAC the template's guest NIC was probed with
  int64_t created_unix = 0;
  uint64_t memory_file_bytes = 0;  // apparent size (= guest RAM)
  uint64_t disk_bytes = 0;         // blocks the template's files occupy
  bool current = false;            // matches the given runtime configuration's inputs now
};

// The template directory of `rt`: rt.template_dir, else $VESSEL_TEMPLATE_DIR, else for root
// /var/cache/vessel/templates (one store for the CLI and containerd's shims), else
// ${XDG_CACHE_HOME:-$HOME/.cache}/vessel/templates.
std::string TemplateRoot(const RuntimeConfig& rt);
// The key a sandbox with `rt` (and a pod network when `network`) looks for (hashes the kernel and
// initramfs).
absl::StatusOr<std::string> TemplateKey(const RuntimeConfig& rt, bool network = false);
// Boots the guest of `rt` to a ready agent, pauses it and saves it as the template for `rt`
// (replacing one with the same key). Takes one boot (~40 s on kvm_pvm, under a second on
// hardware KVM); logs progress. With `network` the VM gets a virtio-net device on a throwaway tap.
absl::StatusOr<TemplateInfo> BuildTemplate(const RuntimeConfig& rt, bool network = false);
// Every template under TemplateRoot(rt), `current` set on the ones `rt` would use.
absl::StatusOr<std::vector<TemplateInfo>> ListTemplates(const RuntimeConfig& rt);
// Removes the template whose key starts with `key_prefix` (at least 8 hex digits, unambiguous), or
// every template for "all". NotFound when none matches.
absl::Status RemoveTemplate(const RuntimeConfig& rt, const std::string& key_prefix);

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_TEMPLATE_H_
