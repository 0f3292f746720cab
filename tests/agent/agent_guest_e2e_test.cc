// The default guest, end to end: vessel-vmm boots our kernel with build/guest/initramfs.cpio (the
// agent as /init), the host drives the agent over ttrpc on hybrid vsock: CreateSandbox mounts a
// virtio-fs share holding a busybox rootfs, writes resolv.conf and configures the pod interface
// (found by the MAC of the VMM's --net device) and its default route; one container with a
// cgroup namespace, memory.max, a seccomp filter and resolv.conf bind-mounted prints what it sees
// on a vsock port and exits 3. Then the snapshot-restore calls (issue 14): ReseedRandomDev
// (credited, CRNG reseeded, the next /proc/sys/kernel/random/uuid differs) and SetGuestDateTime
// (`date +%s` in a second container follows it, then it is set back). Prints the agent's
// RSS and create->running time in the guest as `# bench:` lines. Needs /dev/kvm and root (a scratch
// network namespace for the tap); ~2 minutes on kvm_pvm.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/empty.pb.h"
#include "gtest/gtest.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/socket.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Empty;
using ::testing::HasSubstr;
constexpr char kService[] = "vessel.agent.v1.Agent";
constexpr char kMac[] = "02:00:00:00:0e:01";

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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One connection accepted on `listener`; invalid if none comes within `ms`.
ScopedFd Accept(int listener, int ms) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, ms) != 1) return ScopedFd();
  return ScopedFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

// The next line from `fd` (without its newline; `pending` keeps what follows it); what there is
// at EOF or after `ms` of silence.
std::string ReadLine(int fd, std::string& pending, int ms) {
  for (;;) {
    if (size_t nl = pending.find('\n'); nl != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      return line;
    }
    pollfd p{fd, POLLIN, 0};
    char buf[256];
    ssize_t n = ::poll(&p, 1, ms) == 1 ? ::read(fd, buf, sizeof(buf)) : 0;
    if (n <= 0) return std::exchange(pending, "");
    pending.append(buf, static_cast<size_t>(n));
  }
}

TEST(AgentGuestE2e, DefaultGuestRunsAContainerFromTheShare) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/kvm";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace for the tap)";
  char tmpl[] = "/tmp/vessel-agent-e2e-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::string uds = dir + "/vm.sock";
  // The share: a busybox rootfs the container runs from.
  std::string rootfs = dir + "/share/rootfs";
  for (const char* d : {"/bin", "/proc", "/sys/fs/cgroup", "/tmp", "/etc"})
    fs::create_directories(rootfs + d);
  fs::copy_file(VESSEL_BUSYBOX_PATH, rootfs + "/bin/busybox");
  for (const char* tool : {"sh", "cat", "hostname", "ip", "mkdir", "echo", "date"})
    fs::create_symlink("busybox", rootfs + "/bin/" + tool);
  std::string netns = "vessel-agent-e2e-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("ip netns add " + netns).c_str()), 0);
  struct Cleanup {
    std::string dir, netns;
    ~Cleanup() {
      int unused = std::system(("ip netns del " + netns + " 2>/dev/null").c_str());
      (void)unused;
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir, netns};

  pid_t vmm = ::fork();
  ASSERT_GE(vmm, 0);
  if (vmm == 0) {
    std::string kernel = std::string("--kernel=") + VESSEL_GUEST_DIR + "/vmlinux";
    std::string initrd = std::string("--initrd=") + VESSEL_GUEST_DIR + "/initramfs.cpio";
    std::string console = "--console=file:" + dir + "/console.log";
    std::string vsock = "3," + uds;
    std::string share = "--share=vessel=" + dir + "/share";
    std::string net = std::string("--net=vtap0,mac=") + kMac + ",netns=/var/run/netns/" + netns;
    ::execl(VESSEL_VMM_BINARY, VESSEL_VMM_BINARY, kernel.c_str(), initrd.c_str(), "--mem-mib=512",
            console.c_str(), "--vsock", vsock.c_str(), share.c_str(), net.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct KillVmm {
    pid_t pid;
    ~KillVmm() {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  } kill_vmm{vmm};
  ttrpc::IoThread io;
  ScopedFd fd = ConnectGuest(uds, 1024, absl::Minutes(8));
  ASSERT_TRUE(fd.valid()) << "the agent did not answer on vsock 1024; see " << dir
                          << "/console.log";
  EXPECT_THAT(ReadFile(dir + "/console.log"), HasSubstr("vessel-agent: serving on vsock:1024"));
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
  absl::StatusOr<v1::HealthResponse> idle =
      call("Health", v1::HealthRequest(), v1::HealthResponse());
  ASSERT_TRUE(idle.ok()) << idle.status();
  EXPECT_GT(idle->agent_rss_bytes(), 0u);
  std::printf("# bench: platform=guest-on-kvm (see ../shared/platform.md for kvm_pvm)\n");
  std::printf(
      "# bench: agent RSS idle in the guest: %llu KiB (file-backed %llu KiB, anonymous "
      "%llu KiB)\n",
      static_cast<unsigned long long>(idle->agent_rss_bytes() / 1024),
      static_cast<unsigned long long>(idle->agent_rss_file_bytes() / 1024),
      static_cast<unsigned long long>((idle->agent_rss_bytes() - idle->agent_rss_file_bytes()) /
                                      1024));

  v1::CreateSandboxRequest sandbox;
  sandbox.set_sandbox_id("sb");
  sandbox.set_hostname("guest-sb");
  v1::Storage* share = sandbox.add_storages();
  share->set_driver("virtio-fs");
  share->set_source("vessel");
  share->set_fstype("virtiofs");
  share->set_mount_point("/run/share");
  sandbox.add_dns("nameserver 10.77.0.1");
  sandbox.add_dns("search e2e.test");
  v1::Interface* eth = sandbox.add_interfaces();
  eth->set_name("pod0");
  eth->set_mac(kMac);
  eth->set_mtu(1400);
  v1::IPAddress* addr = eth->add_addresses();
  addr->set_address("10.77.0.2");
  addr->set_prefix_length(24);
  v1::Route* def = sandbox.add_routes();
  def->set_gateway("10.77.0.1");
  def->set_device("pod0");
  absl::StatusOr<Empty> created_sandbox = call("CreateSandbox", sandbox, Empty());
  ASSERT_TRUE(created_sandbox.ok()) << created_sandbox.status();

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
  req.set_rootfs("/run/share/rootfs");
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
  v1::Mount* mqueue = req.add_mounts();  // the kernel's POSIX_MQUEUE
  mqueue->set_destination("/dev/mqueue");
  mqueue->set_type("mqueue");
  v1::Mount* resolv = req.add_mounts();
  resolv->set_destination("/etc/resolv.conf");
  resolv->set_type("bind");
  resolv->set_source("/etc/resolv.conf");
  resolv->add_options("rbind");
  resolv->add_options("ro");
  v1::LinuxSeccomp* seccomp = req.mutable_seccomp();
  seccomp->set_default_action("SCMP_ACT_ALLOW");
  v1::LinuxSyscall* deny = seccomp->add_syscalls();
  deny->add_names("mkdir");
  deny->add_names("mkdirat");
  deny->set_action("SCMP_ACT_ERRNO");
  req.mutable_process()->add_args("sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args(
      "echo $(hostname) $$; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max; "
      "cat /etc/resolv.conf; "
      "ip -o link show pod0; ip -o addr show pod0; ip route; mkdir /tmp/x 2>&1; exit 3");
  req.mutable_process()->add_env("PATH=/bin");
  req.mutable_process()->set_no_new_privileges(true);
  req.mutable_resources()->set_memory_limit(64 << 20);
  req.mutable_resources()->set_cpu_quota(50000);  // the kernel's CFS_BANDWIDTH
  req.mutable_resources()->set_cpu_period(100000);
  req.mutable_stdio()->set_stdout_port(5000);
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<v1::CreateContainerResponse> created =
      call("CreateContainer", req, v1::CreateContainerResponse());
  ASSERT_TRUE(created.ok()) << created.status();
  auto t1 = std::chrono::steady_clock::now();
  v1::StartContainerRequest start;
  start.set_container_id("c1");
  ASSERT_TRUE(call("StartContainer", start, Empty()).ok());
  auto t2 = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::printf(
      "# bench: guest CreateContainer %lld ms, StartContainer (until execve) %lld ms, "
      "create->running %lld ms (software-emulated guest kernel: not a product number)\n",
      static_cast<long long>(ms(t1 - t0)), static_cast<long long>(ms(t2 - t1)),
      static_cast<long long>(ms(t2 - t0)));
  absl::StatusOr<v1::HealthResponse> busy =
      call("Health", v1::HealthRequest(), v1::HealthResponse());
  if (busy.ok()) {
    std::printf("# bench: agent RSS in the guest with 1 container: %llu KiB\n",
                static_cast<unsigned long long>(busy->agent_rss_bytes() / 1024));
  }
  v1::WaitProcessRequest wait;
  wait.set_container_id("c1");
  absl::StatusOr<v1::WaitProcessResponse> waited =
      call("WaitProcess", wait, v1::WaitProcessResponse());
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ(waited->exit_status(), 3u);
  reader.join();  // EOF: the container and every copy of its stdout are gone
  EXPECT_THAT(
      out, ::testing::StartsWith("guest-sb 1\n67108864\n50000 100000\n"
                                        "nameserver 10.77.0.1\nsearch e2e.test\n"));
  EXPECT_THAT(out, HasSubstr("mtu 1400"));
  EXPECT_THAT(out, HasSubstr("inet 10.77.0.2/24"));
  EXPECT_THAT(out, HasSubstr("default via 10.77.0.1 dev pod0"));
  EXPECT_THAT(out, HasSubstr("mkdir: can't create directory '/tmp/x': Operation not permitted"));
  EXPECT_FALSE(fs::exists(rootfs + "/tmp/x"));
  v1::RemoveContainerRequest remove;
  remove.set_container_id("c1");
  EXPECT_TRUE(call("RemoveContainer", remove, Empty()).ok());

  // ---- Snapshot restore (issue 14): the guest's random pool and clock, seen from a second
  // container that reads a line of stdin between its steps (no execs: each costs seconds here).
  absl::StatusOr<ScopedFd> stdin_listener = ttrpc::ListenUnix(uds + "_5001");
  absl::StatusOr<ScopedFd> stdout_listener = ttrpc::ListenUnix(uds + "_5002");
  ASSERT_TRUE(stdin_listener.ok() && stdout_listener.ok());
  constexpr char kUuid[] = "/proc/sys/kernel/random/uuid";
  v1::CreateContainerRequest restore_req;
  restore_req.set_container_id("c2");
  restore_req.set_rootfs("/run/share/rootfs");
  for (v1::NamespaceType t : {v1::NAMESPACE_TYPE_MOUNT, v1::NAMESPACE_TYPE_PID})
    restore_req.add_namespaces()->set_type(t);
  v1::Mount* proc2 = restore_req.add_mounts();
  proc2->set_destination("/proc");
  proc2->set_type("proc");
  restore_req.mutable_process()->add_args("sh");
  restore_req.mutable_process()->add_args("-c");
  restore_req.mutable_process()->add_args(
      absl::StrCat("cat ", kUuid, "; date +%s; read x; cat ", kUuid, "; date +%s; read x; date +%s"));
  restore_req.mutable_process()->add_env("PATH=/bin");
  restore_req.mutable_stdio()->set_stdin_port(5001);
  restore_req.mutable_stdio()->set_stdout_port(5002);
  ASSERT_TRUE(call("CreateContainer", restore_req, v1::CreateContainerResponse()).ok());
  ScopedFd c2_in = Accept(stdin_listener->get(), 60000);
  ScopedFd c2_out = Accept(stdout_listener->get(), 60000);
  ASSERT_TRUE(c2_in.valid() && c2_out.valid()) << "c2's stdio did not connect";
  v1::StartContainerRequest start2;
  start2.set_container_id("c2");
  ASSERT_TRUE(call("StartContainer", start2, Empty()).ok());
  std::string pending;
  auto next_line = [&] { return ReadLine(c2_out.get(), pending, 120000); };
  auto go_on = [&] { ASSERT_EQ(::write(c2_in.get(), "\n", 1), 1); };

  const std::string uuid1 = next_line();
  const std::string date0 = next_line();
  EXPECT_EQ(uuid1.size(), 36u) << uuid1;
  v1::ReseedRandomDevRequest reseed;
  EXPECT_EQ(call("ReseedRandomDev", reseed, v1::ReseedRandomDevResponse()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string seed(256, '\0');
  {
    std::ifstream urandom("/dev/urandom", std::ios::binary);
    ASSERT_TRUE(urandom.read(seed.data(), static_cast<std::streamsize>(seed.size())));
  }
  reseed.set_data(seed);
  absl::StatusOr<v1::ReseedRandomDevResponse> reseeded =
      call("ReseedRandomDev", reseed, v1::ReseedRandomDevResponse());
  ASSERT_TRUE(reseeded.ok()) << reseeded.status();
  EXPECT_EQ(reseeded->entropy_bits_credited(), 256u * 8);
  EXPECT_TRUE(reseeded->crng_reseeded());
  // Linux 6.1: the input pool counts credited bits up to 256 (= the CRNG is initialized).
  EXPECT_EQ(reseeded->entropy_avail_after(), 256u);
  std::printf("# guest entropy_avail before ReseedRandomDev %u, after %u (%u bits credited)\n",
              reseeded->entropy_avail_before(), reseeded->entropy_avail_after(),
              reseeded->entropy_bits_credited());

  v1::SetGuestDateTimeRequest set_time;
  set_time.set_usec(1000000);
  EXPECT_EQ(call("SetGuestDateTime", set_time, Empty()).status().code(),
            absl::StatusCode::kInvalidArgument);
  timespec host{};
  ::clock_gettime(CLOCK_REALTIME, &host);
  const int64_t ahead = static_cast<int64_t>(host.tv_sec) + 1000;
  set_time.set_sec(ahead);
  set_time.set_usec(host.tv_nsec / 1000);
  ASSERT_TRUE(call("SetGuestDateTime", set_time, Empty()).ok());
  go_on();
  const std::string uuid2 = next_line();
  const std::string date1 = next_line();
  const int64_t host_after = static_cast<int64_t>(::time(nullptr));
  EXPECT_EQ(uuid2.size(), 36u) << uuid2;
  EXPECT_NE(uuid2, uuid1);
  int64_t guest_sec = 0;
  ASSERT_TRUE(absl::SimpleAtoi(date1, &guest_sec)) << date1;
  std::printf("# guest clock: %s before SetGuestDateTime, %lld after setting %lld (host %lld)\n",
              date0.c_str(), static_cast<long long>(guest_sec), static_cast<long long>(ahead),
              static_cast<long long>(host_after));
  EXPECT_GE(guest_sec, ahead - 2);
  EXPECT_LE(guest_sec, host_after + 1000 + 5);

  // Back to the host's time.
  ::clock_gettime(CLOCK_REALTIME, &host);
  const int64_t now = static_cast<int64_t>(host.tv_sec);
  set_time.set_sec(now);
  set_time.set_usec(host.tv_nsec / 1000);
  ASSERT_TRUE(call("SetGuestDateTime", set_time, Empty()).ok());
  go_on();
  const std::string date2 = next_line();
  const int64_t host_end = static_cast<int64_t>(::time(nullptr));
  ASSERT_TRUE(absl::SimpleAtoi(date2, &guest_sec)) << date2;
  EXPECT_GE(guest_sec, now - 2);
  EXPECT_LE(guest_sec, host_end + 5);

  v1::WaitProcessRequest wait2;
  wait2.set_container_id("c2");
  absl::StatusOr<v1::WaitProcessResponse> waited2 =
      call("WaitProcess", wait2, v1::WaitProcessResponse());
  EXPECT_TRUE(waited2.ok() && waited2->exit_status() == 0u) << waited2.status();
  remove.set_container_id("c2");
  EXPECT_TRUE(call("RemoveContainer", remove, Empty()).ok());
  EXPECT_TRUE(call("DestroySandbox", v1::DestroySandboxRequest(), Empty()).ok());
}

}  // namespace
}  // namespace vessel::agent
