// Golden encodings of containerd messages: bytes computed by hand from the protobuf wire format
// (tag = field number << 3 | wire type; 0 varint, 2 length-delimited), so a change in field
// numbers, types or nesting of rpc/proto/containerd shows up here even without the upstream files.
// Each expected string was also confirmed byte for byte against containerd 1.6.20's own Go types
// (gogo Marshal, typeurl.MarshalAny) once, when these tests were written.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "containerd/events/task.pb.h"
#include "containerd/services/events/ttrpc/v1/events.pb.h"
#include "containerd/task/v2/shim.pb.h"
#include "containerd/types/mount.pb.h"
#include "containerd/types/task/task.pb.h"

namespace {

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

std::string Serialize(const google::protobuf::Message& m) {
  std::string out;
  EXPECT_TRUE(m.SerializeToString(&out));
  return out;
}

TEST(ContainerdGolden, CreateTaskRequest) {
  containerd::task::v2::CreateTaskRequest req;
  req.set_id("c1");
  req.set_bundle("/b");
  containerd::types::Mount* m = req.add_rootfs();
  m->set_type("overlay");
  m->set_source("overlay");
  m->add_options("ro");
  req.set_terminal(true);
  req.set_stdin("/i");

  const std::string want = Bytes({0x0a, 0x02}) + "c1" +       // 1 id
                           Bytes({0x12, 0x02}) + "/b" +       // 2 bundle
                           Bytes({0x1a, 0x16}) +              // 3 rootfs, 22 bytes:
                           Bytes({0x0a, 0x07}) + "overlay" +  //   1 type
                           Bytes({0x12, 0x07}) + "overlay" +  //   2 source
                           Bytes({0x22, 0x02}) + "ro" +       //   4 options
                           Bytes({0x20, 0x01}) +              // 4 terminal
                           Bytes({0x2a, 0x02}) + "/i";        // 5 stdin
  EXPECT_EQ(Serialize(req), want);

  containerd::task::v2::CreateTaskRequest back;
  ASSERT_TRUE(back.ParseFromString(want));
  EXPECT_EQ(back.rootfs(0).options(0), "ro");
  EXPECT_TRUE(back.terminal());
}

TEST(ContainerdGolden, WaitResponseWithTimestamp) {
  containerd::task::v2::WaitResponse resp;
  resp.set_exit_status(137);
  resp.mutable_exited_at()->set_seconds(1700000000);
  resp.mutable_exited_at()->set_nanos(5);
  const std::string want = Bytes({0x08, 0x89, 0x01,                            // 1 exit_status 137
                                  0x12, 0x08,                                  // 2 exited_at, 8 bytes:
                                  0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06,          //   1 seconds
                                  0x10, 0x05});                                //   2 nanos
  EXPECT_EQ(Serialize(resp), want);
}

// gogo's non-nullable stdtime always writes exited_at; a zero Go time.Time is 0001-01-01, i.e.
// seconds = -62135596800 (a 10-byte varint). We must decode it.
TEST(ContainerdGolden, DecodesGogoZeroTime) {
  const std::string gogo = Bytes({0x08, 0x01,         // 1 exit_status 1
                                  0x12, 0x0b,         // 2 exited_at, 11 bytes
                                  0x08, 0x80, 0x92, 0xb8, 0xc3, 0x98, 0xfe, 0xff, 0xff, 0xff, 0x01});
  containerd::task::v2::WaitResponse resp;
  ASSERT_TRUE(resp.ParseFromString(gogo));
  EXPECT_EQ(resp.exit_status(), 1u);
  EXPECT_EQ(resp.exited_at().seconds(), INT64_C(-62135596800));
}

TEST(ContainerdGolden, StateResponseEnumAndHighField) {
  containerd::task::v2::StateResponse resp;
  resp.set_status(containerd::v1::types::RUNNING);
  resp.set_exec_id("e");
  EXPECT_EQ(Serialize(resp), Bytes({0x20, 0x02, 0x5a, 0x01, 'e'}));  // 4 status=2, 11 exec_id
}

TEST(ContainerdGolden, UpdateTaskAnnotationsMap) {
  containerd::task::v2::UpdateTaskRequest req;
  (*req.mutable_annotations())["a"] = "b";
  // 3 annotations: one entry message {1 key, 2 value}.
  EXPECT_EQ(Serialize(req), Bytes({0x1a, 0x06, 0x0a, 0x01, 'a', 0x12, 0x01, 'b'}));
}

// What a shim sends to containerd's Events/Forward for an OOM. containerd's typeurl names events by
// their bare full name ("containerd.events.TaskOOM"), not "type.googleapis.com/...".
TEST(ContainerdGolden, ForwardTaskOOMEnvelope) {
  containerd::events::TaskOOM oom;
  oom.set_container_id("c");
  containerd::services::events::ttrpc::v1::ForwardRequest fwd;
  auto* env = fwd.mutable_envelope();
  env->mutable_timestamp()->set_seconds(1);
  env->set_namespace_("k8s.io");
  env->set_topic("/tasks/oom");
  env->mutable_event()->set_type_url(containerd::events::TaskOOM::descriptor()->full_name());
  env->mutable_event()->set_value(oom.SerializeAsString());

  const std::string any = Bytes({0x0a, 0x19}) + "containerd.events.TaskOOM" +  // 1 type_url
                          Bytes({0x12, 0x03, 0x0a, 0x01, 'c'});                 // 2 value
  const std::string envelope = Bytes({0x0a, 0x02, 0x08, 0x01}) +               // 1 timestamp {1}
                               Bytes({0x12, 0x06}) + "k8s.io" +                // 2 namespace
                               Bytes({0x1a, 0x0a}) + "/tasks/oom" +            // 3 topic
                               Bytes({0x22, static_cast<int>(any.size())}) + any;  // 4 event
  ASSERT_EQ(any.size(), 32u);
  ASSERT_EQ(envelope.size(), 58u);
  EXPECT_EQ(Serialize(fwd), Bytes({0x0a, 0x3a}) + envelope);
}

TEST(ContainerdGolden, TaskExitAndPids) {
  containerd::events::TaskExit exit;
  exit.set_container_id("c");
  exit.set_id("c");
  exit.set_pid(300);
  exit.set_exit_status(0);
  // 1 container_id, 2 id, 3 pid 300 = 0xac 0x02; exit_status 0 is not written (proto3).
  EXPECT_EQ(Serialize(exit), Bytes({0x0a, 0x01, 'c', 0x12, 0x01, 'c', 0x18, 0xac, 0x02}));

  containerd::task::v2::PidsResponse pids;
  pids.add_processes()->set_pid(1);
  pids.add_processes()->set_pid(2);
  // 1 processes, repeated message: one length-delimited record each.
  EXPECT_EQ(Serialize(pids), Bytes({0x0a, 0x02, 0x08, 0x01, 0x0a, 0x02, 0x08, 0x02}));
}

}  // namespace
