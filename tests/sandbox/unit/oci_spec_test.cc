// ConvertOciSpec / ConvertOciProcess: a runc-style config.json mapped field by field onto the
// agent's CreateContainerRequest, and malformed specs rejected with the JSON path of the bad field.
#include "sandbox/oci_spec.h"

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "vessel/sandbox/config.h"

namespace vessel::sandbox {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace v1 = agent::v1;

std::vector<std::string> ToVector(const google::protobuf::RepeatedPtrField<std::string>& field) {
  return {field.begin(), field.end()};
}

std::vector<v1::NamespaceType> NamespaceTypes(const v1::CreateContainerRequest& req) {
  std::vector<v1::NamespaceType> out;
  for (const v1::Namespace& ns : req.namespaces()) out.push_back(ns.type());
  return out;
}

// What `runc spec` + containerd produce for a real workload, with every field vessel maps.
json HandWrittenSpec() {
  return json::parse(R"json({
    "ociVersion": "1.0.2",
    "process": {
      "terminal": true,
      "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20, 4294967294]},
      "args": ["/bin/server", "--port", "8080"],
      "env": ["PATH=/usr/bin:/bin", "EMPTY=", "A=b=c"],
      "cwd": "/srv",
      "capabilities": {
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "inheritable": [],
        "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
      },
      "rlimits": [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0}
      ],
      "noNewPrivileges": true,
      "apparmorProfile": "ignored",
      "oomScoreAdj": 100
    },
    "root": {"path": "rootfs", "readonly": true},
    "hostname": "web-1",
    "mounts": [
      {"destination": "/proc", "type": "proc", "source": "proc"},
      {"destination": "/data", "type": "bind", "source": "/var/lib/data", "options": ["rbind", "ro"]},
      {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]},
      {"destination": "/etc/hosts", "source": "/run/pod/hosts", "options": ["bind", "ro"]},
      {"destination": "/cache", "type": "none", "source": "/var/cache/app", "options": ["rbind"]}
    ],
    "linux": {
      "namespaces": [
        {"type": "pid"},
        {"type": "network", "path": "/var/run/netns/cni-1234"},
        {"type": "network"},
        {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "cgroup", "path": ""}
      ],
      "resources": {
        "memory": {"limit": 268435456},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 64},
        "devices": [{"allow": false, "access": "rwm"}]
      },
      "seccomp": {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
          {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
           "args": [{"index": 0, "value": 131072, "op": "SCMP_CMP_EQ"},
                    {"index": 5, "value": 18446744073709551615, "valueTwo": 255,
                     "op": "SCMP_CMP_MASKED_EQ"}]},
          {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
      }
    }
  })json");
}

TEST(ConvertOciSpecTest, DefaultSpecMapsOntoTheRequest) {
  json spec = DefaultOciSpec({"sh", "-c", "echo hi"}, {"FOO=bar"}, "/work", /*terminal=*/true);
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  const v1::CreateContainerRequest& req = converted->request;
  EXPECT_TRUE(converted->binds.empty());
  EXPECT_EQ(req.container_id(), "");
  EXPECT_EQ(req.rootfs(), "");
  EXPECT_FALSE(req.has_stdio());

  const v1::Process& p = req.process();
  EXPECT_THAT(ToVector(p.args()), ElementsAre("sh", "-c", "echo hi"));
  EXPECT_THAT(ToVector(p.env()),
              ElementsAre("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "TERM=xterm", "FOO=bar"));
  EXPECT_EQ(p.cwd(), "/work");
  EXPECT_TRUE(p.terminal());
  EXPECT_EQ(p.user().uid(), 0u);
  EXPECT_EQ(p.user().gid(), 0u);
  EXPECT_TRUE(p.no_new_privileges());
  ASSERT_EQ(p.rlimits_size(), 1);
  EXPECT_EQ(p.rlimits(0).type(), "RLIMIT_NOFILE");
  EXPECT_EQ(p.rlimits(0).hard(), 1024u);
  EXPECT_EQ(p.rlimits(0).soft(), 1024u);
  EXPECT_EQ(p.capabilities().bounding_size(), 14);
  EXPECT_EQ(p.capabilities().bounding(0), "CAP_CHOWN");
  EXPECT_EQ(ToVector(p.capabilities().effective()), ToVector(p.capabilities().bounding()));
  EXPECT_EQ(ToVector(p.capabilities().permitted()), ToVector(p.capabilities().bounding()));
  EXPECT_EQ(p.capabilities().inheritable_size(), 0);
  EXPECT_EQ(p.capabilities().ambient_size(), 0);

  EXPECT_FALSE(req.rootfs_readonly());
  ASSERT_EQ(req.mounts_size(), 6);
  std::vector<std::string> destinations;
  for (const v1::Mount& m : req.mounts()) destinations.push_back(m.destination());
  EXPECT_THAT(destinations, ElementsAre("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"));
  EXPECT_EQ(req.mounts(0).type(), "proc");
  EXPECT_EQ(req.mounts(0).source(), "proc");
  EXPECT_EQ(req.mounts(0).options_size(), 0);
  EXPECT_EQ(req.mounts(5).type(), "sysfs");
  EXPECT_THAT(ToVector(req.mounts(5).options()), ElementsAre("nosuid", "noexec", "nodev", "ro"));
  EXPECT_THAT(NamespaceTypes(req), ElementsAre(v1::NAMESPACE_TYPE_PID, v1::NAMESPACE_TYPE_IPC,
                                               v1::NAMESPACE_TYPE_UTS, v1::NAMESPACE_TYPE_MOUNT));
  for (const v1::Namespace& ns : req.namespaces()) EXPECT_EQ(ns.path(), "");
  EXPECT_FALSE(req.has_resources());
  EXPECT_FALSE(req.has_seccomp());
  EXPECT_EQ(req.hostname(), "");
}

TEST(ConvertOciSpecTest, DefaultSpecWithoutTerminalHasNoTerm) {
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(DefaultOciSpec({"true"}));
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_FALSE(converted->request.process().terminal());
  EXPECT_EQ(converted->request.process().cwd(), "/");
  EXPECT_THAT(ToVector(converted->request.process().env()),
              ElementsAre("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
}

TEST(ConvertOciSpecTest, HandWrittenSpecMapsFieldByField) {
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(HandWrittenSpec());
  ASSERT_TRUE(converted.ok()) << converted.status();
  const v1::CreateContainerRequest& req = converted->request;

  const v1::Process& p = req.process();
  EXPECT_THAT(ToVector(p.args()), ElementsAre("/bin/server", "--port", "8080"));
  EXPECT_THAT(ToVector(p.env()), ElementsAre("PATH=/usr/bin:/bin", "EMPTY=", "A=b=c"));
  EXPECT_EQ(p.cwd(), "/srv");
  EXPECT_TRUE(p.terminal());
  EXPECT_EQ(p.user().uid(), 1000u);
  EXPECT_EQ(p.user().gid(), 100u);
  EXPECT_THAT(p.user().additional_gids(), ElementsAre(10u, 20u, 4294967294u));
  EXPECT_THAT(ToVector(p.capabilities().bounding()), ElementsAre("CAP_NET_BIND_SERVICE", "CAP_KILL"));
  EXPECT_THAT(ToVector(p.capabilities().effective()), ElementsAre("CAP_NET_BIND_SERVICE"));
  EXPECT_EQ(p.capabilities().inheritable_size(), 0);
  EXPECT_THAT(ToVector(p.capabilities().permitted()), ElementsAre("CAP_NET_BIND_SERVICE", "CAP_KILL"));
  EXPECT_THAT(ToVector(p.capabilities().ambient()), ElementsAre("CAP_NET_BIND_SERVICE"));
  ASSERT_EQ(p.rlimits_size(), 2);
  EXPECT_EQ(p.rlimits(0).type(), "RLIMIT_NOFILE");
  EXPECT_EQ(p.rlimits(0).hard(), 4096u);
  EXPECT_EQ(p.rlimits(0).soft(), 1024u);
  EXPECT_EQ(p.rlimits(1).type(), "RLIMIT_CORE");
  EXPECT_EQ(p.rlimits(1).hard(), UINT64_MAX);
  EXPECT_EQ(p.rlimits(1).soft(), 0u);
  EXPECT_TRUE(p.no_new_privileges());

  EXPECT_TRUE(req.rootfs_readonly());
  EXPECT_EQ(req.hostname(), "web-1");

  ASSERT_EQ(req.mounts_size(), 5);
  EXPECT_EQ(req.mounts(0).type(), "proc");
  EXPECT_EQ(req.mounts(1).destination(), "/data");
  EXPECT_EQ(req.mounts(1).type(), "bind");
  EXPECT_EQ(req.mounts(1).source(), "/var/lib/data");
  EXPECT_THAT(ToVector(req.mounts(1).options()), ElementsAre("rbind", "ro"));
  EXPECT_EQ(req.mounts(2).type(), "tmpfs");
  EXPECT_THAT(ToVector(req.mounts(2).options()), ElementsAre("nosuid", "size=1m"));
  EXPECT_EQ(req.mounts(3).destination(), "/etc/hosts");
  EXPECT_EQ(req.mounts(3).type(), "bind");  // no type, "bind" option: a bind mount
  EXPECT_THAT(ToVector(req.mounts(3).options()), ElementsAre("bind", "ro"));
  EXPECT_EQ(req.mounts(4).source(), "/var/cache/app");
  // Only the bind mounts are returned, with their index in the request's mounts.
  ASSERT_EQ(converted->binds.size(), 3u);
  EXPECT_EQ(converted->binds[0].mount_index, 1);
  EXPECT_EQ(converted->binds[0].host_source, "/var/lib/data");
  EXPECT_EQ(converted->binds[1].mount_index, 3);
  EXPECT_EQ(converted->binds[1].host_source, "/run/pod/hosts");
  EXPECT_EQ(converted->binds[2].mount_index, 4);
  EXPECT_EQ(converted->binds[2].host_source, "/var/cache/app");
  for (const HostBindMount& b : converted->binds) {
    EXPECT_EQ(req.mounts(b.mount_index).source(), b.host_source);
  }

  // Network namespaces are dropped (the VM is the pod), so is the IPC namespace with a host path;
  // an empty path means a new namespace.
  EXPECT_THAT(NamespaceTypes(req), ElementsAre(v1::NAMESPACE_TYPE_PID, v1::NAMESPACE_TYPE_UTS,
                                               v1::NAMESPACE_TYPE_MOUNT, v1::NAMESPACE_TYPE_CGROUP));
  for (const v1::Namespace& ns : req.namespaces()) EXPECT_EQ(ns.path(), "");

  ASSERT_TRUE(req.has_resources());
  EXPECT_EQ(req.resources().memory_limit(), 268435456);
  EXPECT_EQ(req.resources().cpu_shares(), 512u);
  EXPECT_EQ(req.resources().cpu_quota(), 50000);
  EXPECT_EQ(req.resources().cpu_period(), 100000u);
  EXPECT_EQ(req.resources().pids_limit(), 64);

  ASSERT_TRUE(req.has_seccomp());
  const v1::LinuxSeccomp& sc = req.seccomp();
  EXPECT_EQ(sc.default_action(), "SCMP_ACT_ERRNO");
  ASSERT_TRUE(sc.has_default_errno_ret());
  EXPECT_EQ(sc.default_errno_ret(), 38u);
  EXPECT_THAT(ToVector(sc.architectures()), ElementsAre("SCMP_ARCH_X86_64", "SCMP_ARCH_X86"));
  EXPECT_THAT(ToVector(sc.flags()), ElementsAre("SECCOMP_FILTER_FLAG_LOG"));
  ASSERT_EQ(sc.syscalls_size(), 3);
  EXPECT_THAT(ToVector(sc.syscalls(0).names()), ElementsAre("read", "write"));
  EXPECT_EQ(sc.syscalls(0).action(), "SCMP_ACT_ALLOW");
  EXPECT_FALSE(sc.syscalls(0).has_errno_ret());
  EXPECT_EQ(sc.syscalls(0).args_size(), 0);
  ASSERT_EQ(sc.syscalls(1).args_size(), 2);
  EXPECT_EQ(sc.syscalls(1).args(0).index(), 0u);
  EXPECT_EQ(sc.syscalls(1).args(0).value(), 131072u);
  EXPECT_EQ(sc.syscalls(1).args(0).value_two(), 0u);
  EXPECT_EQ(sc.syscalls(1).args(0).op(), "SCMP_CMP_EQ");
  EXPECT_EQ(sc.syscalls(1).args(1).index(), 5u);
  EXPECT_EQ(sc.syscalls(1).args(1).value(), UINT64_MAX);
  EXPECT_EQ(sc.syscalls(1).args(1).value_two(), 255u);
  EXPECT_EQ(sc.syscalls(1).args(1).op(), "SCMP_CMP_MASKED_EQ");
  EXPECT_EQ(sc.syscalls(2).action(), "SCMP_ACT_ERRNO");
  ASSERT_TRUE(sc.syscalls(2).has_errno_ret());
  EXPECT_EQ(sc.syscalls(2).errno_ret(), 1u);
}

TEST(ConvertOciSpecTest, HostnameIsDroppedWithoutUtsNamespace) {
  json spec = HandWrittenSpec();
  spec["linux"]["namespaces"] = json::array({{{"type", "pid"}}, {{"type", "mount"}}});
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.hostname(), "");

  // A UTS namespace joined by host path is dropped too, and with it the hostname.
  spec["linux"]["namespaces"] = json::array({{{"type", "uts"}, {"path", "/proc/1/ns/uts"}}});
  converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.hostname(), "");
  EXPECT_EQ(converted->request.namespaces_size(), 0);

  spec.erase("linux");
  converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.hostname(), "");
}

TEST(ConvertOciSpecTest, NullMembersAreUnset) {
  json spec = {{"process", {{"args", {"x"}}, {"env", nullptr}, {"cwd", nullptr}, {"user", nullptr}}},
               {"mounts", nullptr},
               {"linux", {{"resources", {{"memory", {{"limit", nullptr}}}}}}}};
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.process().cwd(), "/");
  EXPECT_EQ(converted->request.process().env_size(), 0);
  EXPECT_FALSE(converted->request.resources().has_memory_limit());
}

TEST(ConvertOciSpecTest, ResourceSpecialValues) {
  json spec = DefaultOciSpec({"x"});
  spec["linux"]["resources"] = {{"memory", {{"limit", -1}}}, {"cpu", {{"quota", -1}}}, {"pids", {{"limit", 0}}}};
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.resources().memory_limit(), -1);
  EXPECT_EQ(converted->request.resources().cpu_quota(), -1);
  EXPECT_FALSE(converted->request.resources().has_cpu_shares());
  EXPECT_EQ(converted->request.resources().pids_limit(), -1);  // OCI 0 = unlimited
}

TEST(ConvertOciSpecTest, MaxSpecMountsIsAccepted) {
  json spec = DefaultOciSpec({"x"});
  spec["mounts"] = json::array();
  for (size_t i = 0; i < kMaxSpecMounts; ++i) {
    spec["mounts"].push_back({{"destination", "/m"}, {"type", "tmpfs"}, {"source", "tmpfs"}});
  }
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ(converted->request.mounts_size(), static_cast<int>(kMaxSpecMounts));
}

TEST(ConvertOciProcessTest, ExecProcess) {
  json process = {{"args", {"ls", "-l"}},
                  {"env", {"A=1"}},
                  {"cwd", "/tmp"},
                  {"user", {{"uid", 5}, {"gid", 6}}},
                  {"terminal", false}};
  absl::StatusOr<v1::Process> p = ConvertOciProcess(process);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(ToVector(p->args()), ElementsAre("ls", "-l"));
  EXPECT_THAT(ToVector(p->env()), ElementsAre("A=1"));
  EXPECT_EQ(p->cwd(), "/tmp");
  EXPECT_EQ(p->user().uid(), 5u);
  EXPECT_EQ(p->user().gid(), 6u);
  EXPECT_FALSE(p->terminal());
  EXPECT_FALSE(p->has_capabilities());
  EXPECT_FALSE(p->no_new_privileges());
}

TEST(ConvertOciProcessTest, ErrorsNameTheCallersPath) {
  absl::StatusOr<v1::Process> p = ConvertOciProcess(json{{"args", json::array()}}, "exec[e1]");
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("exec[e1].args"));
  p = ConvertOciProcess(json::array(), "exec[e1]");
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p.status().message(), HasSubstr("exec[e1]: must be an object"));
}

// A malformed spec: `mutate` breaks a valid one; the error must be InvalidArgument and name `path`.
struct BadSpecCase {
  const char* name;
  std::function<void(json&)> mutate;
  const char* path;  // substring the message must contain, e.g. "process.args"
};

void PrintTo(const BadSpecCase& c, std::ostream* os) { *os << c.name; }

class BadSpecTest : public ::testing::TestWithParam<BadSpecCase> {};

TEST_P(BadSpecTest, IsInvalidArgumentNamingThePath) {
  json spec = HandWrittenSpec();
  ASSERT_TRUE(ConvertOciSpec(spec).ok());
  GetParam().mutate(spec);
  absl::StatusOr<ConvertedSpec> converted = ConvertOciSpec(spec);
  ASSERT_FALSE(converted.ok()) << "accepted: " << spec.dump();
  EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument) << converted.status();
  EXPECT_THAT(converted.status().message(), HasSubstr(GetParam().path));
}

std::string WithNul(const std::string& a, const std::string& b) { return a + std::string(1, '\0') + b; }

INSTANTIATE_TEST_SUITE_P(
    ConvertOciSpec, BadSpecTest,
    ::testing::Values(
        BadSpecCase{"NotAnObject", [](json& s) { s = json::array({1, 2}); }, "(top level): must be a JSON object"},
        BadSpecCase{"StringTopLevel", [](json& s) { s = "spec"; }, "(top level)"},
        BadSpecCase{"MissingProcess", [](json& s) { s.erase("process"); }, "process: is required"},
        BadSpecCase{"ProcessNotObject", [](json& s) { s["process"] = "sh"; }, "process: must be an object"},
        BadSpecCase{"MissingArgs", [](json& s) { s["process"].erase("args"); }, "process.args: is required"},
        BadSpecCase{"EmptyArgs", [](json& s) { s["process"]["args"] = json::array(); }, "process.args: must name a program"},
        BadSpecCase{"EmptyArgv0", [](json& s) { s["process"]["args"] = {""}; }, "process.args"},
        BadSpecCase{"ArgsString", [](json& s) { s["process"]["args"] = "sh -c x"; }, "process.args: must be an array"},
        BadSpecCase{"ArgNumber", [](json& s) { s["process"]["args"][1] = 7; }, "process.args[1]: must be a string"},
        BadSpecCase{"TooManyArgs", [](json& s) { s["process"]["args"] = std::vector<std::string>(kMaxSpecArgs + 1, "a"); }, "process.args: has more than 4096"},
        BadSpecCase{"ArgNul", [](json& s) { s["process"]["args"][2] = WithNul("80", "80"); }, "process.args[2]: contains a NUL byte"},
        BadSpecCase{"RelativeCwd", [](json& s) { s["process"]["cwd"] = "srv"; }, "process.cwd: must be an absolute path"},
        BadSpecCase{"EmptyCwd", [](json& s) { s["process"]["cwd"] = ""; }, "process.cwd"},
        BadSpecCase{"CwdNumber", [](json& s) { s["process"]["cwd"] = 1; }, "process.cwd: must be a string"},
        BadSpecCase{"CwdNul", [](json& s) { s["process"]["cwd"] = WithNul("/srv", "x"); }, "process.cwd: contains a NUL byte"},
        BadSpecCase{"EnvWithoutEquals", [](json& s) { s["process"]["env"][1] = "NOVALUE"; }, "process.env[1]: must be KEY=VALUE"},
        BadSpecCase{"EnvEmptyKey", [](json& s) { s["process"]["env"][0] = "=x"; }, "process.env[0]: must be KEY=VALUE"},
        BadSpecCase{"EnvObject", [](json& s) { s["process"]["env"] = {{"A", "b"}}; }, "process.env: must be an array"},
        BadSpecCase{"EnvNul", [](json& s) { s["process"]["env"][2] = WithNul("A=b", "c"); }, "process.env[2]: contains a NUL byte"},
        BadSpecCase{"TerminalString", [](json& s) { s["process"]["terminal"] = "true"; }, "process.terminal: must be true or false"},
        BadSpecCase{"UserNotObject", [](json& s) { s["process"]["user"] = 0; }, "process.user: must be an object"},
        BadSpecCase{"NegativeUid", [](json& s) { s["process"]["user"]["uid"] = -1; }, "process.user.uid: must be a non-negative integer"},
        BadSpecCase{"UidString", [](json& s) { s["process"]["user"]["uid"] = "1000"; }, "process.user.uid: must be a non-negative integer"},
        BadSpecCase{"UidFloat", [](json& s) { s["process"]["user"]["uid"] = 1000.5; }, "process.user.uid"},
        BadSpecCase{"UidTooLarge", [](json& s) { s["process"]["user"]["uid"] = 4294967295u; }, "process.user.uid: must be at most"},
        BadSpecCase{"NegativeGid", [](json& s) { s["process"]["user"]["gid"] = -5; }, "process.user.gid"},
        BadSpecCase{"AdditionalGidsNotArray", [](json& s) { s["process"]["user"]["additionalGids"] = 10; }, "process.user.additionalGids"},
        BadSpecCase{"AdditionalGidNegative", [](json& s) { s["process"]["user"]["additionalGids"][2] = -2; }, "process.user.additionalGids[2]"},
        BadSpecCase{"Username", [](json& s) { s["process"]["user"]["username"] = "root"; }, "process.user.username"},
        BadSpecCase{"CapabilitiesArray", [](json& s) { s["process"]["capabilities"] = {"CAP_KILL"}; }, "process.capabilities: must be an object"},
        BadSpecCase{"CapabilityWithoutPrefix", [](json& s) { s["process"]["capabilities"]["effective"] = {"NET_ADMIN"}; }, "process.capabilities.effective: \"NET_ADMIN\" is not a CAP_ name"},
        BadSpecCase{"CapabilityNumber", [](json& s) { s["process"]["capabilities"]["ambient"] = {12}; }, "process.capabilities.ambient[0]: must be a string"},
        BadSpecCase{"NoNewPrivilegesNumber", [](json& s) { s["process"]["noNewPrivileges"] = 1; }, "process.noNewPrivileges: must be true or false"},
        BadSpecCase{"RlimitsObject", [](json& s) { s["process"]["rlimits"] = json::object(); }, "process.rlimits: must be an array"},
        BadSpecCase{"RlimitSoftAboveHard", [](json& s) { s["process"]["rlimits"][0]["soft"] = 8192; }, "process.rlimits[0]: soft is above hard"},
        BadSpecCase{"RlimitMissingHard", [](json& s) { s["process"]["rlimits"][1].erase("hard"); }, "process.rlimits[1]: needs type, hard and soft"},
        BadSpecCase{"RlimitBadType", [](json& s) { s["process"]["rlimits"][0]["type"] = "NOFILE"; }, "process.rlimits[0].type: must be an RLIMIT_ name"},
        BadSpecCase{"RlimitHardString", [](json& s) { s["process"]["rlimits"][0]["hard"] = "4096"; }, "process.rlimits[0].hard: must be a non-negative integer"},
        BadSpecCase{"RlimitSoftNegative", [](json& s) { s["process"]["rlimits"][0]["soft"] = -1; }, "process.rlimits[0].soft"},
        BadSpecCase{"RootNotObject", [](json& s) { s["root"] = "rootfs"; }, "root: must be an object"},
        BadSpecCase{"RootReadonlyString", [](json& s) { s["root"]["readonly"] = "yes"; }, "root.readonly: must be true or false"},
        BadSpecCase{"HostnameNumber", [](json& s) { s["hostname"] = 5; }, "hostname: must be a string"},
        BadSpecCase{"HostnameTooLong", [](json& s) { s["hostname"] = std::string(65, 'h'); }, "hostname: is longer than 64 bytes"},
        BadSpecCase{"HostnameNul", [](json& s) { s["hostname"] = WithNul("web", "1"); }, "hostname: contains a NUL byte"},
        BadSpecCase{"MountsObject", [](json& s) { s["mounts"] = json::object(); }, "mounts: must be an array"},
        BadSpecCase{"TooManyMounts", [](json& s) { s["mounts"] = json::array(); for (size_t i = 0; i <= kMaxSpecMounts; ++i) s["mounts"].push_back({{"destination", "/m"}, {"type", "tmpfs"}}); }, "mounts: has more than 512 entries"},
        BadSpecCase{"MountNotObject", [](json& s) { s["mounts"][2] = "/tmp"; }, "mounts[2]: must be an object"},
        BadSpecCase{"MountMissingDestination", [](json& s) { s["mounts"][0].erase("destination"); }, "mounts[0].destination: is required"},
        BadSpecCase{"MountRelativeDestination", [](json& s) { s["mounts"][2]["destination"] = "tmp"; }, "mounts[2].destination: must be an absolute path"},
        BadSpecCase{"MountDestinationNul", [](json& s) { s["mounts"][2]["destination"] = WithNul("/tmp", "x"); }, "mounts[2].destination: contains a NUL byte"},
        BadSpecCase{"MountWithoutType", [](json& s) { s["mounts"][2].erase("type"); }, "mounts[2].type: is required"},
        BadSpecCase{"MountTypeNumber", [](json& s) { s["mounts"][2]["type"] = 1; }, "mounts[2].type: must be a string"},
        BadSpecCase{"MountOptionsString", [](json& s) { s["mounts"][2]["options"] = "nosuid"; }, "mounts[2].options: must be an array"},
        BadSpecCase{"MountOptionNumber", [](json& s) { s["mounts"][2]["options"][1] = 1; }, "mounts[2].options[1]: must be a string"},
        BadSpecCase{"BindRelativeSource", [](json& s) { s["mounts"][1]["source"] = "data"; }, "mounts[1].source: a bind mount needs an absolute host path"},
        BadSpecCase{"BindWithoutSource", [](json& s) { s["mounts"][3].erase("source"); }, "mounts[3].source: a bind mount needs an absolute host path"},
        BadSpecCase{"BindByOptionRelativeSource", [](json& s) { s["mounts"][4]["source"] = "cache"; }, "mounts[4].source"},
        BadSpecCase{"BindSourceNul", [](json& s) { s["mounts"][1]["source"] = WithNul("/var/lib/data", "/../x"); }, "mounts[1].source: contains a NUL byte"},
        BadSpecCase{"LinuxNotObject", [](json& s) { s["linux"] = json::array(); }, "linux: must be an object"},
        BadSpecCase{"NamespacesObject", [](json& s) { s["linux"]["namespaces"] = json::object(); }, "linux.namespaces: must be an array"},
        BadSpecCase{"NamespaceNotObject", [](json& s) { s["linux"]["namespaces"][1] = "network"; }, "linux.namespaces[1]: must be an object"},
        BadSpecCase{"NamespaceWithoutType", [](json& s) { s["linux"]["namespaces"][0].erase("type"); }, "linux.namespaces[0].type: is required"},
        BadSpecCase{"UserNamespace", [](json& s) { s["linux"]["namespaces"].push_back({{"type", "user"}}); }, "linux.namespaces[7].type: user namespaces are not supported"},
        BadSpecCase{"UnknownNamespace", [](json& s) { s["linux"]["namespaces"][4]["type"] = "time"; }, "linux.namespaces[4].type: unknown namespace type \"time\""},
        BadSpecCase{"NamespaceTypeNumber", [](json& s) { s["linux"]["namespaces"][4]["type"] = 5; }, "linux.namespaces[4].type: must be a string"},
        BadSpecCase{"NamespacePathNumber", [](json& s) { s["linux"]["namespaces"][0]["path"] = 1; }, "linux.namespaces[0].path: must be a string"},
        BadSpecCase{"ResourcesArray", [](json& s) { s["linux"]["resources"] = json::array(); }, "linux.resources: must be an object"},
        BadSpecCase{"MemoryLimitString", [](json& s) { s["linux"]["resources"]["memory"]["limit"] = "256M"; }, "linux.resources.memory.limit: must be an integer"},
        BadSpecCase{"MemoryLimitBelowMinusOne", [](json& s) { s["linux"]["resources"]["memory"]["limit"] = -2; }, "linux.resources.memory.limit: must be -1"},
        BadSpecCase{"MemoryLimitOverflow", [](json& s) { s["linux"]["resources"]["memory"]["limit"] = UINT64_MAX; }, "linux.resources.memory.limit: is out of range"},
        BadSpecCase{"CpuSharesTooLarge", [](json& s) { s["linux"]["resources"]["cpu"]["shares"] = 262145; }, "linux.resources.cpu.shares: must be at most 262144"},
        BadSpecCase{"CpuSharesNegative", [](json& s) { s["linux"]["resources"]["cpu"]["shares"] = -1; }, "linux.resources.cpu.shares"},
        BadSpecCase{"CpuQuotaFloat", [](json& s) { s["linux"]["resources"]["cpu"]["quota"] = 0.5; }, "linux.resources.cpu.quota: must be an integer"},
        BadSpecCase{"CpuPeriodTooLarge", [](json& s) { s["linux"]["resources"]["cpu"]["period"] = 1000001; }, "linux.resources.cpu.period"},
        BadSpecCase{"PidsNotObject", [](json& s) { s["linux"]["resources"]["pids"] = 64; }, "linux.resources.pids: must be an object"},
        BadSpecCase{"PidsLimitBool", [](json& s) { s["linux"]["resources"]["pids"]["limit"] = true; }, "linux.resources.pids.limit: must be an integer"},
        BadSpecCase{"SeccompWithoutDefault", [](json& s) { s["linux"]["seccomp"].erase("defaultAction"); }, "linux.seccomp.defaultAction: is required"},
        BadSpecCase{"SeccompErrnoTooLarge", [](json& s) { s["linux"]["seccomp"]["defaultErrnoRet"] = 4096; }, "linux.seccomp.defaultErrnoRet: must be at most 4095"},
        BadSpecCase{"SeccompArchNumber", [](json& s) { s["linux"]["seccomp"]["architectures"][1] = 3; }, "linux.seccomp.architectures[1]: must be a string"},
        BadSpecCase{"SeccompSyscallsObject", [](json& s) { s["linux"]["seccomp"]["syscalls"] = json::object(); }, "linux.seccomp.syscalls: must be an array"},
        BadSpecCase{"SeccompRuleWithoutNames", [](json& s) { s["linux"]["seccomp"]["syscalls"][0].erase("names"); }, "linux.seccomp.syscalls[0].names: is required"},
        BadSpecCase{"SeccompRuleWithoutAction", [](json& s) { s["linux"]["seccomp"]["syscalls"][2].erase("action"); }, "linux.seccomp.syscalls[2].action: is required"},
        BadSpecCase{"SeccompNameNul", [](json& s) { s["linux"]["seccomp"]["syscalls"][0]["names"][1] = WithNul("write", ""); }, "linux.seccomp.syscalls[0].names[1]: contains a NUL byte"},
        BadSpecCase{"SeccompArgIndexTooLarge", [](json& s) { s["linux"]["seccomp"]["syscalls"][1]["args"][0]["index"] = 6; }, "linux.seccomp.syscalls[1].args[0].index: must be at most 5"},
        BadSpecCase{"SeccompArgValueNegative", [](json& s) { s["linux"]["seccomp"]["syscalls"][1]["args"][1]["value"] = -1; }, "linux.seccomp.syscalls[1].args[1].value"},
        BadSpecCase{"SeccompArgValueString", [](json& s) { s["linux"]["seccomp"]["syscalls"][1]["args"][0]["value"] = "0x20000"; }, "linux.seccomp.syscalls[1].args[0].value: must be a non-negative integer"},
        BadSpecCase{"SeccompArgWithoutOp", [](json& s) { s["linux"]["seccomp"]["syscalls"][1]["args"][0].erase("op"); }, "linux.seccomp.syscalls[1].args[0].op: is required"},
        BadSpecCase{"SeccompTooManyArgs", [](json& s) { auto& a = s["linux"]["seccomp"]["syscalls"][1]["args"]; while (a.size() < 7) a.push_back(a[0]); }, "linux.seccomp.syscalls[1].args: must be an array of at most 6"}),
    [](const ::testing::TestParamInfo<BadSpecCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace vessel::sandbox
