// vessel-agent as the guest's /init: boots the real guest (vessel-vmm, our kernel, an initramfs
// with the agent and a busybox rootfs) and drives one container over ttrpc on hybrid vsock, its
// stdout coming back on a vsock port. Needs /dev/kvm; ~2 minutes on kvm_pvm.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/empty.pb.h"
#include "gtest/gtest.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {
namespace {

using google::protobuf::Empty;
constexpr char kService[] = "vessel.agent.v1.Agent";

// Connects through the VMM's hybrid vsock socket: "CONNECT <port>\n", then "OK <n>\n".
ScopedFd ConnectGuest(const std::string& uds, uint32_t port, absl::Duration patience) {
  absl::Time deadline = absl::Now() + patience;
  while (absl::Now() < deadline) {
    absl::StatusOr<ScopedFd> fd = ttrpc::ConnectUnix(uds);
    if (fd.ok()) {
      std::string hello = absl::StrCat("CONNECT ", port, "\n");
      if (::write(fd->get(), hello.data(), hello.size()) == static_cast<ssize_t>(hello.size())) {
        std::string line;
        char c;
        while (line.size() < 64 && ::read(fd->get(), &c, 1) == 1 && c != '\n') line.push_back(c);
        if (line.rfind("OK", 0) == 0) return std::move(*fd);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return ScopedFd();
}

TEST(AgentGuestE2e, ContainerInTheGuest) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/kvm";
  char tmpl[] = "/tmp/vessel-agent-e2e-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::string uds = dir + "/vm.sock";
  pid_t vmm = ::fork();
  ASSERT_GE(vmm, 0);
  if (vmm == 0) {
    std::string kernel = std::string("--kernel=") + VESSEL_GUEST_DIR + "/vmlinux";
    std::string initrd = std::string("--initrd=") + VESSEL_AGENT_INITRAMFS;
    std::string console = "--console=file:" + dir + "/console.log";
    std::string vsock = "3," + uds;
    ::execl(VESSEL_VMM_BINARY, VESSEL_VMM_BINARY, kernel.c_str(), initrd.c_str(), "--mem-mib=512",
            console.c_str(), "--vsock", vsock.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ttrpc::IoThread io;
  ScopedFd fd = ConnectGuest(uds, 1024, absl::Minutes(8));
  ASSERT_TRUE(fd.valid()) << "the agent did not answer on vsock 1024; see " << dir
                          << "/console.log";
  absl::StatusOr<std::shared_ptr<ttrpc::Client>> client =
      ttrpc::Client::Create(io.io(), std::move(fd), "guest-agent");
  ASSERT_TRUE(client.ok());
  ttrpc::CallOptions opts;
  opts.timeout = absl::Minutes(3);
  auto call = [&](const char* method, const auto& req, auto resp) {
    return ttrpc::CallTyped<decltype(resp)>(**client, kService, method, req, opts);
  };

  absl::StatusOr<v1::VersionResponse> version =
      call("Version", v1::VersionRequest(), v1::VersionResponse());
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->protocol_version(), static_cast<uint32_t>(v1::PROTOCOL_VERSION_CURRENT));
  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("sb");
  sandbox.set_hostname("guest-sb");
  ASSERT_TRUE(call("CreateSandbox", sandbox, Empty()).ok());

  // The container's stdout/stderr reach the host at <uds>_5000.
  absl::StatusOr<ScopedFd> listener = ttrpc::ListenUnix(uds + "_5000");
  ASSERT_TRUE(listener.ok());
  std::string out;
  std::thread reader([&] {
    int c = ::accept(listener->get(), nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(c, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(c);
  });
  struct JoinOnExit {
    std::thread& t;
    int listener;
    ~JoinOnExit() {
      ::shutdown(listener, SHUT_RDWR);  // a failed assertion must not leave accept() waiting
      if (t.joinable()) t.join();
    }
  } join_on_exit{reader, listener->get()};
  v1::CreateContainerRequest req;
  req.set_container_id("c1");
  req.set_rootfs("/rootfs");
  for (v1::NamespaceType t :
       {v1::NAMESPACE_TYPE_MOUNT, v1::NAMESPACE_TYPE_PID, v1::NAMESPACE_TYPE_UTS,
        v1::NAMESPACE_TYPE_IPC, v1::NAMESPACE_TYPE_CGROUP}) {
    req.add_namespaces()->set_type(t);
  }
  v1::Mount* proc = req.add_mounts();
  proc->set_destination("/proc");
  proc->set_type("proc");
  v1::Mount* cg = req.add_mounts();
  cg->set_destination("/sys/fs/cgroup");
  cg->set_type("cgroup2");
  req.mutable_process()->add_args("sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args("echo $(hostname) $$; cat /sys/fs/cgroup/memory.max; exit 3");
  req.mutable_process()->add_env("PATH=/bin");
  req.mutable_resources()->set_memory_limit(64 << 20);
  req.mutable_stdio()->set_stdout_port(5000);
  absl::StatusOr<v1::CreateContainerResponse> created =
      call("CreateContainer", req, v1::CreateContainerResponse());
  ASSERT_TRUE(created.ok()) << created.status();
  v1::StartContainerRequest start;
  start.set_container_id("c1");
  ASSERT_TRUE(call("StartContainer", start, Empty()).ok());
  v1::WaitProcessRequest wait;
  wait.set_container_id("c1");
  absl::StatusOr<v1::WaitProcessResponse> waited =
      call("WaitProcess", wait, v1::WaitProcessResponse());
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ(waited->exit_status(), 3u);
  reader.join();  // EOF: the container and every copy of its stdout are gone
  EXPECT_EQ(out, "guest-sb 1\n67108864\n");
  v1::RemoveContainerRequest remove;
  remove.set_container_id("c1");
  EXPECT_TRUE(call("RemoveContainer", remove, Empty()).ok());
  EXPECT_TRUE(call("DestroySandbox", v1::DestroySandboxRequest(), Empty()).ok());

  ::kill(vmm, SIGTERM);
  int status = 0;
  ::waitpid(vmm, &status, 0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace vessel::agent
