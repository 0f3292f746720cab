// containerd-shim-vessel-v2: containerd's runtime v2 shim for vessel (io.containerd.vessel.v2).
// One shim process per pod; the pod's VM runs inside it (see shim/README.md).
#include <iostream>
#include <string>
#include <vector>

#include "shim/commands.h"
#include "shim/task_service.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<vessel::shim::ShimFlags> flags = vessel::shim::ParseFlags(args);
  if (!flags.ok()) {
    std::cerr << "containerd-shim-vessel-v2: " << flags.status().message() << "\n";
    return 2;
  }
  if (flags->version) {
    std::cout << argv[0] << ":\n  Version:  " << vessel::shim::kShimVersion
              << "\n  Runtime:  io.containerd.vessel.v2 (VM per pod, VMM in the shim)\n";
    return 0;
  }
  if (flags->action == "start") return vessel::shim::RunStart(*flags);
  if (flags->action == "delete") return vessel::shim::RunDelete(*flags);
  return vessel::shim::RunServe(*flags);
}
