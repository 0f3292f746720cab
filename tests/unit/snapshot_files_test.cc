// The snapshot state file (header, checksum, version, caps) and the sparse memory file (holes,
// data at region edges, private mappings of it), without KVM.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "vmm/snapshot/memory_file.h"
#include "vmm/snapshot/state_file.h"

namespace vessel::snapshot {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vessel-snapshot-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A state with every field set, so a round trip shows each survives.
v1::SnapshotState FullState() {
  v1::SnapshotState s;
  s.set_format_version(kFormatVersion);
  s.mutable_host()->set_arch("x86_64");
  s.mutable_host()->set_cpu_vendor("AuthenticAMD");
  s.mutable_host()->set_kvm_flavor("kvm_pvm (software)");
  s.mutable_host()->set_cpu_model("AMD EPYC");
  s.mutable_shape()->set_vcpus(2);
  s.mutable_shape()->set_mem_mib(128);
  s.mutable_shape()->set_cmdline("console=ttyS0");
  s.mutable_shape()->set_kernel_path("/k");
  auto* d = s.mutable_shape()->add_devices();
  d->set_device_type(19);
  d->set_name("virtio-vsock cid 3");
  auto* r = s.add_memory();
  r->set_gpa(0);
  r->set_size(128 << 20);
  r->set_file_offset(0);
  s.set_memory_file_bytes(128 << 20);
  auto* vm = s.mutable_x86_vm();
  vm->set_pic_master(std::string(512, 'a'));
  vm->set_pic_slave(std::string(512, 'b'));
  vm->set_ioapic(std::string(512, 'c'));
  vm->set_pit2("pit");
  vm->set_clock("clock");
  vm->set_entry(0x1000000);
  auto* c = vm->mutable_compat();
  c->set_has_trap(true);
  c->set_trap_gva(0xffffffff81000000);
  c->set_trap_gpa(0x1000000);
  c->set_trap_disabled(true);
  c->set_int3_injected(1);
  c->set_fwait_skipped(2);
  c->set_page_fault_traps(3);
  c->set_syscalls_fixed(4);
  c->set_trap_plants(5);
  for (int i = 0; i < 2; ++i) {
    auto* v = s.add_x86_vcpus();
    v->set_id(i);
    v->set_cpuid("cpuid");
    v->set_regs("regs");
    v->set_sregs("sregs");
    v->set_fpu("fpu");
    v->set_xsave("xsave");
    v->set_xcrs("xcrs");
    auto* m = v->add_msrs();
    m->set_index(0x10);
    m->set_value(12345);
    v->set_lapic("lapic");
    v->set_events("events");
    v->set_mp_state("mp");
    v->set_debugregs("dr");
  }
  auto* ser = s.mutable_serial();
  ser->set_ier(1);
  ser->set_lcr(3);
  ser->set_mcr(8);
  ser->set_scr(0x55);
  ser->set_dll(1);
  ser->set_dlm(0);
  ser->set_rx_fifo("ls\n");
  ser->set_thr_interrupt_pending(true);
  ser->set_fcr(7);
  ser->set_overrun(true);
  auto* t = s.add_virtio();
  t->set_device_type(19);
  t->set_status(15);
  t->set_device_features_sel(1);
  t->set_driver_features_sel(1);
  t->set_driver_features(1ull << 32);
  t->set_queue_sel(2);
  t->set_config_generation(3);
  t->set_active(true);
  t->set_interrupt_status(1);
  t->set_needs_reset(false);
  auto* q = t->add_queues();
  q->set_max_size(256);
  q->set_size(128);
  q->set_desc_table(0x1000);
  q->set_avail_ring(0x2000);
  q->set_used_ring(0x3000);
  q->set_ready(true);
  q->set_event_idx(true);
  q->set_next_avail(7);
  q->set_next_used(6);
  q->set_signalled_used(5);
  t->set_device_state("dev");
  s.set_taken_unix_ns(1234567890);
  return s;
}

TEST(StateFileTest, RoundTripKeepsEveryField) {
  const v1::SnapshotState in = FullState();
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(EncodeStateFile(in), "mem");
  ASSERT_TRUE(out.ok()) << out.status();
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(in, *out)) << diff;
}

TEST(StateFileTest, WriteAndReadThroughAFile) {
  TempDir dir;
  const std::string path = dir.path() + "/state";
  ASSERT_TRUE(WriteStateFile(path, FullState()).ok());
  absl::StatusOr<v1::SnapshotState> out = ReadStateFile(path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->shape().vcpus(), 2u);
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0) << "the temporary file is renamed away";
}

TEST(StateFileTest, TruncatedFilesAreRefused) {
  const std::string bytes = EncodeStateFile(FullState());
  for (size_t len : {size_t{0}, size_t{10}, kStateHeaderBytes - 1, kStateHeaderBytes, bytes.size() - 1}) {
    absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(bytes.substr(0, len), "f");
    ASSERT_FALSE(out.ok()) << len;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("truncated")) << len;
  }
}

TEST(StateFileTest, WrongMagicIsRefused) {
  std::string bytes = EncodeStateFile(FullState());
  bytes[0] = 'X';
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(bytes, "f");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("wrong magic"));
}

TEST(StateFileTest, OtherFormatVersionIsRefused) {
  std::string bytes = EncodeStateFile(FullState());
  bytes[8] = 2;
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(bytes, "f");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("format version 2"));
}

TEST(StateFileTest, ChecksumMismatchIsRefused) {
  std::string bytes = EncodeStateFile(FullState());
  bytes[bytes.size() / 2] ^= 0x40;
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(bytes, "f");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("checksum mismatch"));
}

TEST(StateFileTest, OversizedLengthIsRefusedBeforeReading) {
  std::string bytes = EncodeStateFile(FullState());
  for (int i = 16; i < 24; ++i) bytes[i] = static_cast<char>(0xff);
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(bytes, "f");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("cap"));
}

TEST(StateFileTest, GarbagePayloadWithAValidChecksumIsRefused) {
  // A header whose checksum matches bytes that are not a SnapshotState of this format.
  v1::SnapshotState s = FullState();
  s.set_format_version(7);
  absl::StatusOr<v1::SnapshotState> out = DecodeStateFile(EncodeStateFile(s), "f");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("format version 7"));
}

TEST(StateFileTest, MissingFileNamesThePath) {
  absl::StatusOr<v1::SnapshotState> out = ReadStateFile("/nonexistent/vessel/state");
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("/nonexistent/vessel/state"));
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ~0ull;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(MemoryFileTest, WritesOnlyTouchedNonZeroPagesAndReadsBackAtRegionEdges) {
  TempDir dir;
  // Two regions with a gap, like x86's split around the MMIO hole.
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}, {4 << 20, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  const uint64_t first_end = (1 << 20) - 8;
  ASSERT_TRUE(mem->WriteObj<uint64_t>(0, 0x1111).ok());                 // first byte of region 0
  ASSERT_TRUE(mem->WriteObj<uint64_t>(first_end, 0x2222).ok());         // last bytes of region 0
  ASSERT_TRUE(mem->WriteObj<uint64_t>(4 << 20, 0x3333).ok());           // first of region 1
  ASSERT_TRUE(mem->WriteObj<uint64_t>((5 << 20) - 8, 0x4444).ok());     // last of region 1
  ASSERT_TRUE(mem->Fill(0x40000, 0, 4096).ok());                         // touched, but zeros
  const std::string path = dir.path() + "/memory";
  absl::StatusOr<MemoryFileWritten> w = WriteMemoryFile(path, *mem);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->file_bytes, 2u << 20);
  EXPECT_EQ(w->data_bytes, 4u * 4096) << "four data pages; the zero page is a hole";
  EXPECT_LE(AllocatedBytes(path), 8u * 4096) << "holes are not allocated";
  ASSERT_EQ(w->layout.size(), 2u);
  EXPECT_EQ(w->layout[1].file_offset(), 1u << 20);

  google::protobuf::RepeatedPtrField<v1::MemoryRegion> layout(w->layout.begin(), w->layout.end());
  absl::StatusOr<MemoryFileToMap> file = OpenMemoryFile(path, layout, w->file_bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  GuestMemory::Options options;
  options.backing_fd = file->fd.get();
  options.backing_offsets = file->offsets;
  absl::StatusOr<GuestMemory> restored = GuestMemory::Create(file->ranges, options);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(*restored->ReadObj<uint64_t>(0), 0x1111u);
  EXPECT_EQ(*restored->ReadObj<uint64_t>(first_end), 0x2222u);
  EXPECT_EQ(*restored->ReadObj<uint64_t>(4 << 20), 0x3333u);
  EXPECT_EQ(*restored->ReadObj<uint64_t>((5 << 20) - 8), 0x4444u);
  EXPECT_EQ(*restored->ReadObj<uint64_t>(0x40000), 0u);
  EXPECT_EQ(*restored->ReadObj<uint64_t>(0x80000), 0u) << "a hole reads as zeros";

  // Writes stay private: the file and a second mapping of it do not see them.
  ASSERT_TRUE(restored->WriteObj<uint64_t>(0, 0x9999).ok());
  absl::StatusOr<GuestMemory> second = GuestMemory::Create(file->ranges, options);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second->ReadObj<uint64_t>(0), 0x1111u);
}

TEST(MemoryFileTest, ShortFileAndBadLayoutsAreRefused) {
  TempDir dir;
  absl::StatusOr<GuestMemory> mem = GuestMemory::Create({{0, 1 << 20}});
  ASSERT_TRUE(mem.ok());
  const std::string path = dir.path() + "/memory";
  absl::StatusOr<MemoryFileWritten> w = WriteMemoryFile(path, *mem);
  ASSERT_TRUE(w.ok());
  google::protobuf::RepeatedPtrField<v1::MemoryRegion> layout(w->layout.begin(), w->layout.end());
  ASSERT_EQ(truncate(path.c_str(), 4096), 0);
  absl::StatusOr<MemoryFileToMap> file = OpenMemoryFile(path, layout, w->file_bytes);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("truncated"));

  layout[0].set_file_offset(100);
  file = OpenMemoryFile(path, layout, w->file_bytes);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("aligned"));

  layout[0].set_file_offset(0);
  layout[0].set_size(2 << 20);
  file = OpenMemoryFile(path, layout, w->file_bytes);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("past the"));

  google::protobuf::RepeatedPtrField<v1::MemoryRegion> empty;
  EXPECT_FALSE(OpenMemoryFile(path, empty, w->file_bytes).ok());
}

}  // namespace
}  // namespace vessel::snapshot
