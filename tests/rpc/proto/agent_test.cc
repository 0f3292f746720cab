// vessel.agent.v1: the service shape the host and the guest agent agree on, round trips, presence.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "vessel/agent/v1/agent.pb.h"

namespace {

namespace agent = vessel::agent::v1;
using google::protobuf::util::MessageDifferencer;

agent::CreateContainerRequest FullRequest() {
  agent::CreateContainerRequest req;
  req.set_container_id("c1");
  agent::Process* p = req.mutable_process();
  p->add_args("/bin/sh");
  p->add_args("-c");
  p->add_args("echo hi");
  p->add_env("PATH=/usr/bin:/bin");
  p->set_cwd("/");
  p->mutable_user()->set_uid(1000);
  p->mutable_user()->set_gid(1000);
  p->mutable_user()->add_additional_gids(27);
  p->set_terminal(false);
  agent::Rlimit* rl = p->add_rlimits();
  rl->set_type("RLIMIT_NOFILE");
  rl->set_hard(1024);
  rl->set_soft(1024);
  p->mutable_capabilities()->add_bounding("CAP_NET_BIND_SERVICE");
  p->set_no_new_privileges(true);

  agent::Storage* s = req.add_storages();
  s->set_driver("virtio-fs");
  s->set_source("vessel-shared");
  s->set_fstype("virtiofs");
  s->set_mount_point("/run/vessel/shared");
  req.set_rootfs("/run/vessel/shared/c1/rootfs");
  agent::Mount* m = req.add_mounts();
  m->set_destination("/proc");
  m->set_type("proc");
  m->set_source("proc");
  m->add_options("nosuid");
  agent::Namespace* ns = req.add_namespaces();
  ns->set_type(agent::NAMESPACE_TYPE_PID);
  req.add_namespaces()->set_type(agent::NAMESPACE_TYPE_MOUNT);
  req.mutable_resources()->set_cpu_quota(50000);
  req.mutable_resources()->set_cpu_period(100000);
  req.mutable_resources()->set_memory_limit(256 << 20);
  req.set_hostname("box");
  req.mutable_stdio()->set_stdout_port(1025);
  req.mutable_stdio()->set_stderr_port(1026);
  return req;
}

TEST(AgentProto, CreateContainerRoundTrip) {
  const agent::CreateContainerRequest req = FullRequest();
  std::string bytes;
  ASSERT_TRUE(req.SerializeToString(&bytes));
  agent::CreateContainerRequest back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(req, back)) << diff;
  EXPECT_EQ(back.process().args(2), "echo hi");
  EXPECT_EQ(back.namespaces(0).type(), agent::NAMESPACE_TYPE_PID);
  EXPECT_EQ(back.stdio().stdin_port(), 0u);
}

// LinuxResources fields have explicit presence: "unset" (no limit given) differs from 0.
TEST(AgentProto, ResourcePresenceSurvivesTheWire) {
  agent::LinuxResources r;
  r.set_pids_limit(0);
  agent::LinuxResources back;
  ASSERT_TRUE(back.ParseFromString(r.SerializeAsString()));
  EXPECT_TRUE(back.has_pids_limit());
  EXPECT_EQ(back.pids_limit(), 0);
  EXPECT_FALSE(back.has_memory_limit());
  EXPECT_FALSE(back.has_cpu_shares());
}

// The ttrpc names the host calls: "vessel.agent.v1.Agent/<Method>".
TEST(AgentProto, ServiceMethods) {
  const google::protobuf::ServiceDescriptor* svc =
      agent::CreateContainerRequest::descriptor()->file()->FindServiceByName("Agent");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->full_name(), "vessel.agent.v1.Agent");
  const std::vector<std::string> want = {
      "CreateSandbox", "DestroySandbox", "CreateContainer", "StartContainer", "ExecProcess",
      "WaitProcess",   "SignalProcess",  "RemoveContainer", "ResizeTty",      "CloseStdin",
      "StatsContainer", "GetOOMEvent",   "Health",          "Version",   "ReseedRandomDev",
      "SetGuestDateTime"};
  std::vector<std::string> got;
  for (int i = 0; i < svc->method_count(); ++i) {
    got.push_back(svc->method(i)->name());
    EXPECT_FALSE(svc->method(i)->client_streaming() || svc->method(i)->server_streaming())
        << "ttrpc unary only: " << svc->method(i)->name();
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(svc->FindMethodByName("WaitProcess")->output_type()->full_name(),
            "vessel.agent.v1.WaitProcessResponse");
  EXPECT_EQ(svc->FindMethodByName("StartContainer")->output_type()->full_name(),
            "google.protobuf.Empty");
}

TEST(AgentProto, VersionAndOOM) {
  agent::VersionResponse v;
  v.set_agent_version("0.1.0");
  v.set_protocol_version(agent::PROTOCOL_VERSION_CURRENT);
  agent::VersionResponse back;
  ASSERT_TRUE(back.ParseFromString(v.SerializeAsString()));
  EXPECT_EQ(back.protocol_version(), 1u);

  agent::OOMEvent oom;
  oom.set_container_id("c1");
  EXPECT_EQ(oom.SerializeAsString(), std::string("\x0a\x02" "c1", 4));
}

}  // namespace
