// libFuzzer target: the agent's handling of the OCI spec it receives (guest/agent), everything
// CreateContainer / ExecProcess / CreateSandbox check and convert before anything is spawned or
// mounted: ids (ValidateId), the process (PlanProcess: args, env, cwd, user, rlimits,
// capabilities), the seccomp filter compiled with libseccomp (CompileSeccomp), namespaces
// (PlanNamespaces), rootfs and OCI mounts with their options (PlanRootfs), resources without
// cgroups (ContainerCgroup::Create on a disabled root: no file is written), and the pod network
// (ValidateNetwork). Nothing is cloned, mounted or configured: the plans are only built.
// Paths resolve under a scratch root: /rootfs (a directory), /src/dir, /src/file (bind sources)
// and /ns/{net,uts,ipc,pid,cgroup,mnt} (links to this process's namespaces, which are only opened).
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_agent_spec_fuzzer
// Run:           tests/fuzz/run_fuzzers.sh (all targets) or
//                build-fuzz/tests/fuzz/vessel_agent_spec_fuzzer tests/fuzz/corpus/agent_spec
//
// Input: byte 0 selects the message (0 CreateContainerRequest, 1 CreateSandboxRequest, 2
// ExecProcessRequest, modulo 3); the rest is that message in protobuf wire format.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_split.h"
#include "guest/agent/cgroups.h"
#include "guest/agent/fs_util.h"
#include "guest/agent/mounts.h"
#include "guest/agent/namespaces.h"
#include "guest/agent/network.h"
#include "guest/agent/seccomp.h"
#include "guest/agent/spawn.h"
#include "vessel/agent/v1/agent.pb.h"

namespace {

namespace agent = vessel::agent;
namespace v1 = vessel::agent::v1;

const std::string& ScratchRoot() {
  static const std::string* root = [] {
    std::string t = "/tmp/vessel-agent-fuzz-XXXXXX";
    if (mkdtemp(t.data()) == nullptr) abort();
    std::error_code ec;
    std::filesystem::create_directories(t + "/rootfs/etc", ec);
    std::filesystem::create_directories(t + "/src/dir", ec);
    std::filesystem::create_directories(t + "/ns", ec);
    std::ofstream(t + "/src/file") << "x";
    for (const char* ns : {"net", "uts", "ipc", "pid", "cgroup", "mnt"}) {
      std::filesystem::create_symlink(std::string("/proc/self/ns/") + ns, t + "/ns/" + ns, ec);
    }
    std::atexit([] {  // the scratch root goes with the process
      std::error_code ignored;
      std::filesystem::remove_all(ScratchRoot(), ignored);
    });
    return new std::string(t);
  }();
  return *root;
}

// What the child will execve with: NULL-terminated argv/envp views of the strings, somewhere to
// look for the executable, an absolute cwd.
void CheckProcessPlan(const absl::StatusOr<agent::ProcessPlan>& plan) {
  if (!plan.ok()) return;
  const agent::ProcessPlan& p = *plan;
  bool ok = !p.argv.empty() && p.argv_c.size() == p.argv.size() + 1 &&
            p.argv_c.back() == nullptr && p.env_c.size() == p.env.size() + 1 &&
            p.env_c.back() == nullptr && !p.cwd.empty() && p.cwd[0] == '/';
  for (size_t i = 0; ok && i < p.argv.size(); ++i) ok = p.argv_c[i] == p.argv[i].c_str();
  for (size_t i = 0; ok && i < p.env.size(); ++i) ok = p.env_c[i] == p.env[i].c_str();
  if (!ok) abort();
}

void CreateContainer(const v1::CreateContainerRequest& req) {
  const std::string& root = ScratchRoot();
  (void)agent::ValidateId("container_id", req.container_id());
  CheckProcessPlan(agent::PlanProcess(req.process()));
  if (req.has_seccomp()) {
    absl::StatusOr<std::shared_ptr<const agent::SeccompProgram>> program =
        agent::CompileSeccomp(req.seccomp());
    if (program.ok() && (*program == nullptr || (*program)->instructions.empty() ||
                         (*program)->instructions.size() > 0xffff)) {
      abort();  // a compiled filter is a loadable classic BPF program
    }
  }
  (void)agent::PlanNamespaces(req.namespaces(), root);
  absl::StatusOr<agent::RootfsPlan> plan =
      agent::PlanRootfs(root, req.rootfs(), req.rootfs_readonly(), req.mounts());
  if (plan.ok()) {
    for (const agent::MountStep& step : plan->steps) {
      // A step's path relative to the rootfs never climbs out of it.
      for (absl::string_view part : absl::StrSplit(step.rel, '/')) {
        if (part == "..") abort();
      }
    }
  }
  agent::CgroupRoot no_cgroups;
  (void)agent::ContainerCgroup::Create(no_cgroups, req.container_id(), req.resources());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t* msg = data + 1;
  const int len = static_cast<int>(std::min<size_t>(size - 1, 1 << 20));
  switch (data[0] % 3) {
    case 0: {
      v1::CreateContainerRequest req;
      if (req.ParseFromArray(msg, len)) CreateContainer(req);
      break;
    }
    case 1: {
      v1::CreateSandboxRequest req;
      if (req.ParseFromArray(msg, len)) {
        (void)agent::ValidateId("sandbox_id", req.sandbox_id());
        (void)agent::ValidateNetwork(req.interfaces(), req.routes());
      }
      break;
    }
    case 2: {
      v1::ExecProcessRequest req;
      if (req.ParseFromArray(msg, len)) {
        (void)agent::ValidateId("exec_id", req.exec_id());
        CheckProcessPlan(agent::PlanProcess(req.process()));
      }
      break;
    }
  }
  return 0;
}
