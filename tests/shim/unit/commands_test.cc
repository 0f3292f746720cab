#include "shim/commands.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/empty.pb.h>
#include <gtest/gtest.h>

#include "containerd/task/v2/shim.pb.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/io_thread.h"
#include "rpc/ttrpc/typed.h"
#include "shim/address.h"
#include "shim/mounts.h"
#include "shim/state.h"
#include "shim/task_service.h"

namespace vessel::shim {
namespace {

namespace task = containerd::task::v2;

TEST(ParseFlagsTest, ContainerdStartLine) {
  absl::StatusOr<ShimFlags> f = ParseFlags({"-namespace", "default", "-address", "/run/containerd/containerd.sock",
                                            "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->ns, "default");
  EXPECT_EQ(f->address, "/run/containerd/containerd.sock");
  EXPECT_EQ(f->publish_binary, "/usr/bin/containerd");
  EXPECT_EQ(f->id, "c1");
  EXPECT_TRUE(f->debug);
  EXPECT_EQ(f->action, "start");
}

TEST(ParseFlagsTest, DeleteAndServeAndVersion) {
  absl::StatusOr<ShimFlags> f =
      ParseFlags({"-namespace=k8s.io", "--address", "/a.sock", "-id", "c1", "-bundle", "/b/c1", "delete"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->ns, "k8s.io");
  EXPECT_EQ(f->bundle, "/b/c1");
  EXPECT_EQ(f->action, "delete");
  f = ParseFlags({"-namespace", "default", "-id", "c1", "-address", "/a.sock"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->action, "");
  f = ParseFlags({"-v"});
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->version);
}

TEST(ParseFlagsTest, Rejects) {
  EXPECT_EQ(ParseFlags({"-bogus", "x"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"-id"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"-id", "c1", "explode"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFlags({"-debug=maybe"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeleteResponseTest, KilledNow) {
  absl::Time now = absl::FromUnixSeconds(1763950000);
  task::DeleteResponse r;
  ASSERT_TRUE(r.ParseFromString(DeleteResponseBytes(42, now)));
  EXPECT_EQ(r.pid(), 42u);
  EXPECT_EQ(r.exit_status(), 137u);  // 128 + SIGKILL, as runc's shim reports a dead shim's task
  EXPECT_EQ(r.exited_at().seconds(), 1763950000);
}

// The binary itself: `start` spawns the serving process (no VM until a Create), which answers on
// containerd's socket name; a grouped container gets the same address; Shutdown ends it; `delete`
// prints a DeleteResponse. Needs root (the socket lives in /run/containerd/s).
class ShimBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (/run/containerd/s)";
    char tmpl[] = "/tmp/vessel-shim-bin-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    // A containerd address unique to this run: its hash names the socket.
    containerd_address_ = dir_ + "/containerd.sock";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    std::ifstream in("/proc/self/mountinfo");
    std::string info((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const std::string& m : MountsUnder(dir_, info)) (void)UnmountAll(m);  // a failed test's
    std::filesystem::remove_all(dir_);
  }
  std::string MakeBundle(const std::string& id, const nlohmann::json& annotations) {
    std::string b = dir_ + "/" + id;
    std::filesystem::create_directories(b);
    nlohmann::json spec = {{"ociVersion", "1.0.2"}, {"process", {{"args", {"/bin/true"}}}}};
    if (!annotations.is_null()) spec["annotations"] = annotations;
    std::ofstream(b + "/config.json") << spec.dump();
    return b;
  }
  // Runs the binary in `cwd`; returns its stdout and exit code.
  std::pair<std::string, int> Run(const std::string& cwd, const std::string& args, const std::string& env = "") {
    std::string cmd = "cd '" + cwd + "' && env -u TTRPC_ADDRESS " + env + " " + std::string(VESSEL_SHIM_BINARY) + " " +
                      args + " </dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    int st = ::pclose(p);
    return {out, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
  }
  std::string dir_;
  std::string containerd_address_;
};

TEST_F(ShimBinaryTest, StartServeGroupShutdownDelete) {
  std::string b1 = MakeBundle("c1", nullptr);
  std::string flags = "-namespace vessel-test -address " + containerd_address_ + " -publish-binary /bin/false";
  auto [address, rc] = Run(b1, flags + " -id c1 start");
  ASSERT_EQ(rc, 0) << address;
  EXPECT_EQ(address, *SocketAddress(containerd_address_, "vessel-test", "c1"));
  std::ifstream in(b1 + "/address");
  std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, address);

  // A CRI container of pod c1 is served by the same shim.
  std::string b2 = MakeBundle("app", {{"io.kubernetes.cri.container-type", "container"},
                                      {"io.kubernetes.cri.sandbox-id", "c1"}});
  auto [address2, rc2] = Run(b2, flags + " -id app start");
  ASSERT_EQ(rc2, 0);
  EXPECT_EQ(address2, address);

  absl::StatusOr<std::string> path = SocketPath(address);
  ASSERT_TRUE(path.ok());
  ttrpc::IoThread io;
  absl::StatusOr<std::shared_ptr<ttrpc::Client>> client = ttrpc::Client::ConnectUnix(io.io(), *path);
  ASSERT_TRUE(client.ok()) << client.status();
  task::ConnectRequest cr;
  cr.set_id("c1");
  absl::StatusOr<task::ConnectResponse> c =
      ttrpc::CallTyped<task::ConnectResponse>(**client, kTaskService, "Connect", cr);
  ASSERT_TRUE(c.ok()) << c.status();
  pid_t shim_pid = static_cast<pid_t>(c->shim_pid());
  EXPECT_NE(shim_pid, ::getpid());
  EXPECT_EQ(::getsid(shim_pid), shim_pid);  // its own session: detached from containerd
  task::StateRequest sr;
  sr.set_id("c1");
  EXPECT_EQ(ttrpc::CallTyped<task::StateResponse>(**client, kTaskService, "State", sr).status().code(),
            absl::StatusCode::kNotFound);
  task::ShutdownRequest shut;
  shut.set_id("c1");
  (void)ttrpc::CallTyped<google::protobuf::Empty>(**client, kTaskService, "Shutdown", shut);
  for (int i = 0; i < 100 && ::kill(shim_pid, 0) == 0; ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_NE(::kill(shim_pid, 0), 0) << "the shim did not exit after Shutdown";
  EXPECT_FALSE(std::filesystem::exists(*path));

  auto [bytes, rc3] = Run(b1, flags + " -id c1 -bundle " + b1 + " delete");
  ASSERT_EQ(rc3, 0);
  task::DeleteResponse d;
  ASSERT_TRUE(d.ParseFromString(bytes));
  EXPECT_EQ(d.exit_status(), 137u);
  EXPECT_GT(d.exited_at().seconds(), 0);

  auto [version, rc4] = Run(b1, "-v");
  EXPECT_EQ(rc4, 0);
  EXPECT_NE(version.find("Version"), std::string::npos);
}

// kill -9 of a pod's shim: containerd runs `delete` per container, possibly after a racing
// `ctr task delete` removed the bundle. The container's share (a bind mount) must still go, and
// the sandbox directory with the last one.
TEST_F(ShimBinaryTest, DeleteAfterADeadPodShimWithoutTheBundle) {
  std::string state = dir_ + "/state";
  std::ofstream(dir_ + "/runtime.json") << nlohmann::json({{"state_dir", state}}).dump();
  std::string env = "VESSEL_RUNTIME_CONFIG=" + dir_ + "/runtime.json";
  std::string sb = state + "/vessel-test/sandboxes/pod1";
  std::string user = dir_ + "/user-rootfs";
  std::filesystem::create_directories(user);
  std::ofstream(user + "/precious") << "x";
  std::filesystem::create_directories(sb + "/shared/pod1");
  std::filesystem::create_directories(sb + "/shared/app/rootfs");
  ASSERT_EQ(::mount(user.c_str(), (sb + "/shared/app/rootfs").c_str(), nullptr, MS_BIND, nullptr), 0);
  std::string flags = "-namespace vessel-test -address " + containerd_address_ + " -publish-binary /bin/false";

  auto [bytes, rc] = Run(dir_, flags + " -id app -bundle " + dir_ + "/gone delete", env);
  ASSERT_EQ(rc, 0);
  task::DeleteResponse d;
  ASSERT_TRUE(d.ParseFromString(bytes));
  EXPECT_FALSE(std::filesystem::exists(sb + "/shared/app"));
  EXPECT_TRUE(std::filesystem::exists(sb + "/shared/pod1"));
  EXPECT_TRUE(std::filesystem::exists(user + "/precious"));

  std::string b = MakeBundle("pod1", {{"io.kubernetes.cri.container-type", "sandbox"},
                                      {"io.kubernetes.cri.sandbox-id", "pod1"}});
  auto [bytes2, rc2] = Run(b, flags + " -id pod1 -bundle " + b + " delete", env);
  ASSERT_EQ(rc2, 0);
  EXPECT_FALSE(std::filesystem::exists(sb));
}

TEST_F(ShimBinaryTest, StartWithoutConfigJsonFails) {
  std::string b = dir_ + "/empty";
  std::filesystem::create_directories(b);
  auto [out, rc] = Run(b, "-namespace vessel-test -address " + containerd_address_ + " -id x start");
  EXPECT_NE(rc, 0);
}

}  // namespace
}  // namespace vessel::shim
