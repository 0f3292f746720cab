// Wire contract: every message, enum and service of our containerd .proto files (rpc/proto/containerd)
// against containerd 1.6's own definitions, compiled by protoc from Debian's
// golang-github-containerd-containerd-dev into a descriptor set at build time.
// Compared by full name: field numbers, names, types, labels, referenced type names, packing, map
// entries, presence, oneofs; enum values; service methods and their types. Both directions: a thing
// upstream lacks in ours fails, and so does one we have that upstream lacks.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "containerd/events/task.pb.h"
#include "containerd/services/events/ttrpc/v1/events.pb.h"
#include "containerd/task/v2/shim.pb.h"
#include "containerd/types/mount.pb.h"
#include "containerd/types/task/task.pb.h"

namespace {

namespace pb = google::protobuf;

constexpr std::string_view kPackage = "golang-github-containerd-containerd-dev";
constexpr std::string_view kUpstream = "github.com/containerd/containerd/";

using Diffs = std::vector<std::string>;

std::string Join(const Diffs& diffs) {
  std::string out;
  for (const auto& d : diffs) out += "  " + d + "\n";
  return out;
}

std::string TypeName(const pb::FieldDescriptor* f) {
  if (f->message_type() != nullptr) return f->message_type()->full_name();
  if (f->enum_type() != nullptr) return f->enum_type()->full_name();
  return "";
}

std::string OneofName(const pb::FieldDescriptor* f) {
  const pb::OneofDescriptor* o = f->real_containing_oneof();
  return o == nullptr ? "" : o->name();
}

void CompareField(const pb::FieldDescriptor* up, const pb::FieldDescriptor* ours, Diffs& d) {
  const std::string where = up->full_name() + " (#" + std::to_string(up->number()) + ")";
  auto check = [&](std::string_view what, const std::string& u, const std::string& o) {
    if (u != o) d.push_back(where + ": " + std::string(what) + " upstream '" + u + "', ours '" + o + "'");
  };
  check("name", up->name(), ours->name());
  check("type", up->type_name(), ours->type_name());
  check("label", up->is_repeated() ? "repeated" : up->is_required() ? "required" : "optional",
        ours->is_repeated() ? "repeated" : ours->is_required() ? "required" : "optional");
  check("type name", TypeName(up), TypeName(ours));
  check("packed", up->is_packed() ? "yes" : "no", ours->is_packed() ? "yes" : "no");
  check("map", up->is_map() ? "yes" : "no", ours->is_map() ? "yes" : "no");
  check("presence", up->has_presence() ? "yes" : "no", ours->has_presence() ? "yes" : "no");
  check("oneof", OneofName(up), OneofName(ours));
}

void CompareEnum(const pb::EnumDescriptor* up, const pb::EnumDescriptor* ours, Diffs& d) {
  for (int i = 0; i < up->value_count(); ++i) {
    const pb::EnumValueDescriptor* u = up->value(i);
    const pb::EnumValueDescriptor* o = ours->FindValueByName(u->name());
    if (o == nullptr) {
      d.push_back(up->full_name() + ": value " + u->name() + " missing in ours");
    } else if (o->number() != u->number()) {
      d.push_back(up->full_name() + "." + u->name() + ": upstream = " + std::to_string(u->number()) +
                  ", ours = " + std::to_string(o->number()));
    }
  }
  for (int i = 0; i < ours->value_count(); ++i) {
    if (up->FindValueByName(ours->value(i)->name()) == nullptr)
      d.push_back(up->full_name() + ": value " + ours->value(i)->name() + " not upstream");
  }
}

void CompareMessage(const pb::Descriptor* up, const pb::Descriptor* ours, Diffs& d) {
  if (up->full_name() != ours->full_name())
    d.push_back("message upstream " + up->full_name() + ", ours " + ours->full_name());
  for (int i = 0; i < up->field_count(); ++i) {
    const pb::FieldDescriptor* u = up->field(i);
    const pb::FieldDescriptor* o = ours->FindFieldByNumber(u->number());
    if (o == nullptr) {
      d.push_back(u->full_name() + " (#" + std::to_string(u->number()) + "): missing in ours");
    } else {
      CompareField(u, o, d);
    }
  }
  for (int i = 0; i < ours->field_count(); ++i) {
    const pb::FieldDescriptor* o = ours->field(i);
    if (up->FindFieldByNumber(o->number()) == nullptr)
      d.push_back(o->full_name() + " (#" + std::to_string(o->number()) + "): not upstream");
  }
  for (int i = 0; i < up->nested_type_count(); ++i) {
    const pb::Descriptor* o = ours->FindNestedTypeByName(up->nested_type(i)->name());
    if (o == nullptr) {
      d.push_back(up->nested_type(i)->full_name() + ": missing in ours");
    } else {
      CompareMessage(up->nested_type(i), o, d);
    }
  }
  for (int i = 0; i < ours->nested_type_count(); ++i) {
    if (up->FindNestedTypeByName(ours->nested_type(i)->name()) == nullptr)
      d.push_back(ours->nested_type(i)->full_name() + ": not upstream");
  }
  for (int i = 0; i < up->enum_type_count(); ++i) {
    const pb::EnumDescriptor* o = ours->FindEnumTypeByName(up->enum_type(i)->name());
    if (o == nullptr) {
      d.push_back(up->enum_type(i)->full_name() + ": missing in ours");
    } else {
      CompareEnum(up->enum_type(i), o, d);
    }
  }
  for (int i = 0; i < ours->enum_type_count(); ++i) {
    if (up->FindEnumTypeByName(ours->enum_type(i)->name()) == nullptr)
      d.push_back(ours->enum_type(i)->full_name() + ": not upstream");
  }
}

void CompareService(const pb::ServiceDescriptor* up, const pb::ServiceDescriptor* ours, Diffs& d) {
  for (int i = 0; i < up->method_count(); ++i) {
    const pb::MethodDescriptor* u = up->method(i);
    const pb::MethodDescriptor* o = ours->FindMethodByName(u->name());
    if (o == nullptr) {
      d.push_back(u->full_name() + ": missing in ours");
      continue;
    }
    if (u->input_type()->full_name() != o->input_type()->full_name())
      d.push_back(u->full_name() + ": input upstream " + u->input_type()->full_name() + ", ours " +
                  o->input_type()->full_name());
    if (u->output_type()->full_name() != o->output_type()->full_name())
      d.push_back(u->full_name() + ": output upstream " + u->output_type()->full_name() + ", ours " +
                  o->output_type()->full_name());
    if (u->client_streaming() != o->client_streaming() || u->server_streaming() != o->server_streaming())
      d.push_back(u->full_name() + ": streaming differs");
  }
  for (int i = 0; i < ours->method_count(); ++i) {
    if (up->FindMethodByName(ours->method(i)->name()) == nullptr)
      d.push_back(ours->method(i)->full_name() + ": not upstream");
  }
}

// Everything `up` defines, compared with what `ours` defines.
Diffs CompareFiles(const pb::FileDescriptor* up, const pb::FileDescriptor* ours) {
  Diffs d;
  if (up->package() != ours->package())
    d.push_back("package upstream '" + up->package() + "', ours '" + ours->package() + "'");
  for (int i = 0; i < up->message_type_count(); ++i) {
    const pb::Descriptor* o = ours->FindMessageTypeByName(up->message_type(i)->name());
    if (o == nullptr) {
      d.push_back(up->message_type(i)->full_name() + ": missing in ours");
    } else {
      CompareMessage(up->message_type(i), o, d);
    }
  }
  for (int i = 0; i < ours->message_type_count(); ++i) {
    if (up->FindMessageTypeByName(ours->message_type(i)->name()) == nullptr)
      d.push_back(ours->message_type(i)->full_name() + ": not upstream");
  }
  for (int i = 0; i < up->enum_type_count(); ++i) {
    const pb::EnumDescriptor* o = ours->FindEnumTypeByName(up->enum_type(i)->name());
    if (o == nullptr) {
      d.push_back(up->enum_type(i)->full_name() + ": missing in ours");
    } else {
      CompareEnum(up->enum_type(i), o, d);
    }
  }
  for (int i = 0; i < ours->enum_type_count(); ++i) {
    if (up->FindEnumTypeByName(ours->enum_type(i)->name()) == nullptr)
      d.push_back(ours->enum_type(i)->full_name() + ": not upstream");
  }
  for (int i = 0; i < up->service_count(); ++i) {
    const pb::ServiceDescriptor* o = ours->FindServiceByName(up->service(i)->name());
    if (o == nullptr) {
      d.push_back(up->service(i)->full_name() + ": missing in ours");
    } else {
      CompareService(up->service(i), o, d);
    }
  }
  for (int i = 0; i < ours->service_count(); ++i) {
    if (up->FindServiceByName(ours->service(i)->name()) == nullptr)
      d.push_back(ours->service(i)->full_name() + ": not upstream");
  }
  return d;
}

// Upstream file (path under github.com/containerd/containerd/) and the generated file mirroring it.
struct FilePair {
  const char* test_name;
  const char* upstream;
  const pb::FileDescriptor* (*ours)();
};

void PrintTo(const FilePair& p, std::ostream* os) { *os << p.upstream; }

const FilePair kFiles[] = {
    {"Mount", "api/types/mount.proto", [] { return containerd::types::Mount::descriptor()->file(); }},
    {"TaskTypes", "api/types/task/task.proto",
     [] { return containerd::v1::types::ProcessInfo::descriptor()->file(); }},
    {"Shim", "runtime/v2/task/shim.proto",
     [] { return containerd::task::v2::CreateTaskRequest::descriptor()->file(); }},
    {"Events", "api/events/task.proto", [] { return containerd::events::TaskExit::descriptor()->file(); }},
    {"EventsService", "api/services/ttrpc/events/v1/events.proto",
     [] { return containerd::services::events::ttrpc::v1::Envelope::descriptor()->file(); }},
};

// The upstream descriptor set as written by protoc (--include_imports), or empty with a reason.
bool LoadUpstream(pb::FileDescriptorSet& set, std::string& why) {
  const std::string path = VESSEL_CONTAINERD_DESC;
  if (path.empty()) {
    why = "containerd's .proto files were not found under " VESSEL_GOCODE_DIR
          " when cmake ran: install " + std::string(kPackage) + " (apt) and re-run cmake";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = "cannot read " + path + " (built from " + std::string(kPackage) +
          "'s .proto files; is the package still installed?)";
    return false;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  if (!set.ParseFromString(bytes.str())) {
    why = "cannot parse " + path;
    return false;
  }
  return true;
}

// A pool of the upstream files; descriptor sets from --include_imports are in dependency order.
bool BuildPool(const pb::FileDescriptorSet& set, pb::DescriptorPool& pool, std::string& why) {
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (pool.BuildFile(file) == nullptr) {
      why = "cannot build upstream descriptor " + file.name();
      return false;
    }
  }
  return true;
}

class UpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!LoadUpstream(set_, why)) GTEST_SKIP() << why;
    ASSERT_TRUE(BuildPool(set_, pool_, why)) << why;
  }

  const pb::FileDescriptor* Upstream(std::string_view rel) {
    return pool_.FindFileByName(std::string(kUpstream) + std::string(rel));
  }

  pb::FileDescriptorSet set_;
  pb::DescriptorPool pool_;
};

class ContainerdContract : public UpstreamTest, public ::testing::WithParamInterface<FilePair> {};

TEST_P(ContainerdContract, MatchesUpstream) {
  const FilePair& p = GetParam();
  const pb::FileDescriptor* up = Upstream(p.upstream);
  ASSERT_NE(up, nullptr) << p.upstream << " not in the upstream descriptor set";
  const pb::FileDescriptor* ours = p.ours();
  ASSERT_GT(up->message_type_count() + up->enum_type_count(), 0);
  const Diffs d = CompareFiles(up, ours);
  EXPECT_TRUE(d.empty()) << ours->name() << " differs from containerd's " << p.upstream << ":\n"
                         << Join(d);
}

INSTANTIATE_TEST_SUITE_P(Files, ContainerdContract, ::testing::ValuesIn(kFiles),
                         [](const auto& info) { return std::string(info.param.test_name); });

// Every message/enum/service upstream defines is, by full name, in the generated pool (the same
// names containerd uses in Any type URLs and ttrpc service names).
TEST_F(UpstreamTest, EveryUpstreamNameIsGenerated) {
  const pb::DescriptorPool* gen = pb::DescriptorPool::generated_pool();
  for (const FilePair& p : kFiles) {
    p.ours();  // links the generated file in
    const pb::FileDescriptor* up = Upstream(p.upstream);
    ASSERT_NE(up, nullptr) << p.upstream;
    for (int i = 0; i < up->message_type_count(); ++i)
      EXPECT_NE(gen->FindMessageTypeByName(up->message_type(i)->full_name()), nullptr)
          << up->message_type(i)->full_name();
    for (int i = 0; i < up->enum_type_count(); ++i)
      EXPECT_NE(gen->FindEnumTypeByName(up->enum_type(i)->full_name()), nullptr)
          << up->enum_type(i)->full_name();
    for (int i = 0; i < up->service_count(); ++i)
      EXPECT_NE(gen->FindServiceByName(up->service(i)->full_name()), nullptr)
          << up->service(i)->full_name();
  }
  EXPECT_NE(gen->FindMethodByName("containerd.task.v2.Task.Create"), nullptr);
  EXPECT_NE(gen->FindMethodByName("containerd.services.events.ttrpc.v1.Events.Forward"), nullptr);
}

// The comparator itself: a mutated copy of upstream must be reported as different from ours.
class ComparatorTest : public UpstreamTest {
 protected:
  // Rebuilds the upstream set after `mutate` changed the shim file's proto; compares with ours.
  template <typename F>
  Diffs MutateShim(F mutate) {
    pb::FileDescriptorSet copy = set_;
    for (pb::FileDescriptorProto& f : *copy.mutable_file())
      if (f.name() == std::string(kUpstream) + "runtime/v2/task/shim.proto") mutate(f);
    pb::DescriptorPool pool;
    std::string why;
    EXPECT_TRUE(BuildPool(copy, pool, why)) << why;
    const pb::FileDescriptor* up = pool.FindFileByName(std::string(kUpstream) + "runtime/v2/task/shim.proto");
    if (up == nullptr) return {"mutated file did not build"};
    return CompareFiles(up, containerd::task::v2::CreateTaskRequest::descriptor()->file());
  }

  static pb::DescriptorProto* Message(pb::FileDescriptorProto& f, std::string_view name) {
    for (pb::DescriptorProto& m : *f.mutable_message_type())
      if (m.name() == name) return &m;
    ADD_FAILURE() << name << " not found";
    return nullptr;
  }
};

TEST_F(ComparatorTest, UnchangedCopyMatches) {
  EXPECT_TRUE(MutateShim([](pb::FileDescriptorProto&) {}).empty());
}

TEST_F(ComparatorTest, CatchesRenumberedField) {
  const Diffs d = MutateShim([](pb::FileDescriptorProto& f) {
    Message(f, "CreateTaskRequest")->mutable_field(1)->set_number(12);  // bundle 2 -> 12
  });
  EXPECT_THAT(d, ::testing::IsSupersetOf(
                     {"containerd.task.v2.CreateTaskRequest.bundle (#12): missing in ours",
                      "containerd.task.v2.CreateTaskRequest.bundle (#2): not upstream"}))
      << Join(d);
}

TEST_F(ComparatorTest, CatchesChangedTypeLabelAndName) {
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 Message(f, "KillRequest")->mutable_field(2)->set_type(pb::FieldDescriptorProto::TYPE_INT32);
               }).empty());
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 Message(f, "CreateTaskRequest")
                     ->mutable_field(2)
                     ->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);  // rootfs no longer repeated
               }).empty());
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 Message(f, "ConnectResponse")->mutable_field(0)->set_name("shim");
               }).empty());
}

TEST_F(ComparatorTest, CatchesChangedMessageTypeAndMethods) {
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 // StateResponse.exited_at: Timestamp -> Any.
                 Message(f, "StateResponse")->mutable_field(9)->set_type_name(".google.protobuf.Any");
               }).empty());
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 f.mutable_service(0)->mutable_method(0)->set_output_type(".google.protobuf.Empty");
               }).empty());
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 f.mutable_service(0)->mutable_method(0)->set_name("Status");
               }).empty());
}

TEST_F(ComparatorTest, CatchesMissingAndExtraMessages) {
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 f.add_message_type()->set_name("NewUpstreamMessage");
               }).empty());
  EXPECT_FALSE(MutateShim([](pb::FileDescriptorProto& f) {
                 Message(f, "ExecProcessResponse")->set_name("ExecProcessReply");
               }).empty());
}

}  // namespace
