// The FUSE passthrough server driven directly with built requests over a scratch share.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "devices/fs/fuse_server.h"
#include "gtest/gtest.h"
#include "tests/devices/fs_test_util.h"

namespace vessel::fs {
namespace {

using testing::Args;
using testing::BuildRequest;
using testing::InitIn;
using testing::ScratchShare;

struct Result {
  uint32_t used = 0;
  fuse_out_header header = {};
  std::vector<uint8_t> payload;

  int error() const { return -header.error; }
  template <typename T>
  T As(size_t offset = 0) const {
    T v = {};
    EXPECT_GE(payload.size(), offset + sizeof(T));
    if (payload.size() >= offset + sizeof(T)) std::memcpy(&v, payload.data() + offset, sizeof(T));
    return v;
  }
  std::string Text() const { return std::string(payload.begin(), payload.end()); }
};

class FsServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(FsConfig{}); }

  void Start(FsConfig config, bool init = true) {
    config.tag = "share";
    config.shared_dir = scratch_.share();
    absl::StatusOr<std::unique_ptr<FuseServer>> server = FuseServer::Create(config, 1 << 20);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    outside_before_ = ScratchShare::Snapshot(scratch_.outside());
    if (init) {
      Result r = Call(FUSE_INIT, 0, Args().Add(InitIn()));
      ASSERT_EQ(r.error(), 0);
    }
  }
  void TearDown() override {
    // Whatever the guest did, nothing outside the share changed.
    EXPECT_EQ(ScratchShare::Snapshot(scratch_.outside()), outside_before_);
  }

  Result Send(const std::vector<uint8_t>& request, uint64_t capacity = 2 << 20) {
    BufferSink sink(capacity);
    Result r;
    r.used = server_->HandleRequest(request, sink);
    EXPECT_EQ(r.used, sink.data().size());
    if (sink.data().size() >= sizeof(fuse_out_header)) {
      std::memcpy(&r.header, sink.data().data(), sizeof(r.header));
      EXPECT_EQ(r.header.len, sink.data().size());
      r.payload.assign(sink.data().begin() + sizeof(fuse_out_header), sink.data().end());
    }
    return r;
  }
  Result Call(uint32_t opcode, uint64_t nodeid, const Args& args, uint64_t capacity = 2 << 20) {
    return Send(BuildRequest(opcode, nodeid, args), capacity);
  }

  // LOOKUP name in parent; the entry (nodeid 0 on error).
  fuse_entry_out Lookup(uint64_t parent, const std::string& name, int* error = nullptr) {
    Result r = Call(FUSE_LOOKUP, parent, Args().Name(name));
    if (error != nullptr) *error = r.error();
    return r.error() == 0 ? r.As<fuse_entry_out>() : fuse_entry_out{};
  }
  uint64_t Open(uint64_t nodeid, uint32_t flags, int* error = nullptr, bool dir = false) {
    fuse_open_in in = {};
    in.flags = flags;
    Result r = Call(dir ? FUSE_OPENDIR : FUSE_OPEN, nodeid, Args().Add(in));
    if (error != nullptr) *error = r.error();
    return r.error() == 0 ? r.As<fuse_open_out>().fh : 0;
  }
  Result Read(uint64_t nodeid, uint64_t fh, uint64_t offset, uint32_t size,
              uint32_t opcode = FUSE_READ) {
    fuse_read_in in = {};
    in.fh = fh;
    in.offset = offset;
    in.size = size;
    return Call(opcode, nodeid, Args().Add(in));
  }
  Result Write(uint64_t nodeid, uint64_t fh, uint64_t offset, const std::string& data) {
    fuse_write_in in = {};
    in.fh = fh;
    in.offset = offset;
    in.size = static_cast<uint32_t>(data.size());
    return Call(FUSE_WRITE, nodeid, Args().Add(in).Raw(data));
  }
  int Release(uint64_t nodeid, uint64_t fh, bool dir = false) {
    fuse_release_in in = {};
    in.fh = fh;
    return Call(dir ? FUSE_RELEASEDIR : FUSE_RELEASE, nodeid, Args().Add(in)).error();
  }
  // CREATE name in parent: {entry, fh}.
  std::pair<fuse_entry_out, uint64_t> Create(uint64_t parent, const std::string& name,
                                             uint32_t flags, int* error = nullptr) {
    fuse_create_in in = {};
    in.flags = flags;
    in.mode = 0644;
    Result r = Call(FUSE_CREATE, parent, Args().Add(in).Name(name));
    if (error != nullptr) *error = r.error();
    if (r.error() != 0) return {{}, 0};
    return {r.As<fuse_entry_out>(), r.As<fuse_open_out>(sizeof(fuse_entry_out)).fh};
  }
  std::set<std::string> ReaddirNames(uint64_t nodeid, bool plus) {
    uint64_t fh = Open(nodeid, O_RDONLY, nullptr, true);
    std::set<std::string> names;
    uint64_t offset = 0;
    for (int rounds = 0; rounds < 100; ++rounds) {
      Result r = Read(nodeid, fh, offset, 4096, plus ? FUSE_READDIRPLUS : FUSE_READDIR);
      EXPECT_EQ(r.error(), 0);
      if (r.payload.empty()) break;
      for (size_t pos = 0; pos < r.payload.size();) {
        fuse_dirent d;
        size_t at = pos;
        if (plus) {
          fuse_entry_out e = r.As<fuse_entry_out>(pos);
          if (e.nodeid != 0) {
            EXPECT_EQ(e.attr.ino, r.As<fuse_dirent>(pos + sizeof(e)).ino);
          }
          at += sizeof(fuse_entry_out);
        }
        std::memcpy(&d, r.payload.data() + at, FUSE_NAME_OFFSET);
        names.insert(std::string(
            reinterpret_cast<const char*>(r.payload.data() + at + FUSE_NAME_OFFSET), d.namelen));
        offset = d.off;
        pos = plus ? pos + FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + d.namelen)
                   : pos + FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + d.namelen);
      }
    }
    EXPECT_EQ(Release(nodeid, fh, true), 0);
    return names;
  }
  std::string S(const std::string& rel) const { return scratch_.share() + "/" + rel; }

  ScratchShare scratch_;
  std::unique_ptr<FuseServer> server_;
  std::string outside_before_;
};

// --- INIT ---

TEST_F(FsServerTest, InitNegotiatesMinorFlagsAndMaxWrite) {
  Start(FsConfig{}, /*init=*/false);
  EXPECT_EQ(Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{})).error(), EIO);
  Result r = Call(FUSE_INIT, 0, Args().Add(InitIn(7, 31)));
  ASSERT_EQ(r.error(), 0);
  fuse_init_out out = r.As<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, 31u);
  EXPECT_EQ(out.max_write, 1u << 20);
  EXPECT_EQ(out.max_pages, 256);
  EXPECT_TRUE(out.flags & FUSE_DO_READDIRPLUS);
  EXPECT_TRUE(out.flags & FUSE_MAX_PAGES);
  EXPECT_FALSE(out.flags & FUSE_EXPORT_SUPPORT);
  EXPECT_FALSE(out.flags & FUSE_POSIX_LOCKS);
  EXPECT_FALSE(out.flags & FUSE_WRITEBACK_CACHE);  // not configured
  // A newer kernel gets our minor.
  r = Call(FUSE_INIT, 0, Args().Add(InitIn(7, 99)));
  EXPECT_EQ(r.As<fuse_init_out>().minor, FuseServer::kOurMinor);
  EXPECT_EQ(Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{})).error(), 0);
}

TEST_F(FsServerTest, InitMajorMismatch) {
  Start(FsConfig{}, false);
  EXPECT_EQ(Call(FUSE_INIT, 0, Args().Add(InitIn(6, 0))).error(), EPROTO);
  Result r = Call(FUSE_INIT, 0, Args().Add(InitIn(8, 0)));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.As<uint32_t>(), 7u);                                         // "speak 7"
  EXPECT_EQ(Call(FUSE_INIT, 0, Args().Add(uint32_t{7})).error(), EINVAL);  // truncated
}

TEST_F(FsServerTest, WritebackOfferedWhenConfigured) {
  FsConfig c;
  c.writeback = true;
  Start(c, false);
  Result r = Call(FUSE_INIT, 0, Args().Add(InitIn()));
  EXPECT_TRUE(r.As<fuse_init_out>().flags & FUSE_WRITEBACK_CACHE);
  // The guest's page cache reads what it writes: a write-only open is read-write on the host.
  ScratchShare::WriteFile(S("f"), "abc");
  fuse_entry_out e = Lookup(FUSE_ROOT_ID, "f");
  uint64_t fh = Open(e.nodeid, O_WRONLY | O_APPEND);
  EXPECT_EQ(Read(e.nodeid, fh, 0, 3).Text(), "abc");
  EXPECT_EQ(Write(e.nodeid, fh, 0, "x").error(), 0);  // placed by the guest, not appended
  EXPECT_EQ(ScratchShare::ReadFile(S("f")), "xbc");
}

TEST_F(FsServerTest, ReaddirSmallBuffers) {
  std::filesystem::create_directory(S("d"));
  ScratchShare::WriteFile(S("d/" + std::string(200, 'n')), "");
  const uint64_t d = Lookup(FUSE_ROOT_ID, "d").nodeid;
  uint64_t fh = Open(d, O_RDONLY, nullptr, true);
  // Too small for the long entry's direntplus: fewer entries, never a partial one.
  Result r = Read(d, fh, 0, 80, FUSE_READDIRPLUS);
  ASSERT_EQ(r.error(), 0);
  EXPECT_LE(r.payload.size(), 80u);
  EXPECT_EQ(r.payload.size() % 8, 0u);
  // A READDIR reply larger than the sink is cut to the sink.
  r = Send(BuildRequest(FUSE_READDIR, d, Args().Add(fuse_read_in{fh, 0, 4096, 0, 0, 0, 0})),
           sizeof(fuse_out_header) + 40);
  EXPECT_EQ(r.error(), 0);
  EXPECT_LE(r.payload.size(), 40u);
  EXPECT_EQ(Read(d, 999, 0, 4096, FUSE_READDIR).error(), EBADF);
  EXPECT_EQ(Release(d, fh, true), 0);
}

// --- LOOKUP / GETATTR / FORGET ---

TEST_F(FsServerTest, LookupGetattrAndForget) {
  ScratchShare::WriteFile(S("a"), "hello");
  fuse_entry_out e = Lookup(FUSE_ROOT_ID, "a");
  ASSERT_GT(e.nodeid, FUSE_ROOT_ID);
  EXPECT_EQ(e.attr.size, 5u);
  EXPECT_TRUE(S_ISREG(e.attr.mode));
  EXPECT_EQ(e.entry_valid, 1u);                           // cache=auto
  EXPECT_EQ(Lookup(FUSE_ROOT_ID, "a").nodeid, e.nodeid);  // same inode, same nodeid
  EXPECT_EQ(server_->lookup_count(e.nodeid), 2u);

  Result r = Call(FUSE_GETATTR, e.nodeid, Args().Add(fuse_getattr_in{}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.As<fuse_attr_out>().attr.ino, e.attr.ino);

  EXPECT_EQ(Call(FUSE_FORGET, e.nodeid, Args().Add(fuse_forget_in{1})).used, 0u);
  EXPECT_EQ(server_->lookup_count(e.nodeid), 1u);
  fuse_batch_forget_in b = {1, 0};
  fuse_forget_one one = {e.nodeid, 1};
  EXPECT_EQ(Call(FUSE_BATCH_FORGET, 0, Args().Add(b).Add(one)).used, 0u);
  EXPECT_EQ(server_->lookup_count(e.nodeid), 0u);
  EXPECT_EQ(server_->inode_count(), 1u);
  EXPECT_EQ(Call(FUSE_GETATTR, e.nodeid, Args().Add(fuse_getattr_in{})).error(), ENOENT);
  // Forgetting the root keeps it.
  Call(FUSE_FORGET, FUSE_ROOT_ID, Args().Add(fuse_forget_in{100}));
  EXPECT_EQ(Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{})).error(), 0);
}

TEST_F(FsServerTest, LookupErrors) {
  int err = 0;
  Lookup(FUSE_ROOT_ID, "missing", &err);
  EXPECT_EQ(err, ENOENT);
  const uint64_t malformed = server_->counters().malformed.load();
  Lookup(12345, "a", &err);
  EXPECT_EQ(err, ENOENT);  // unknown nodeid, counted
  EXPECT_EQ(server_->counters().malformed.load(), malformed + 1);
  for (const std::string& bad : {std::string("."), std::string("a/b"), std::string("/etc"),
                                 std::string(256, 'x'), std::string("")}) {
    Lookup(FUSE_ROOT_ID, bad, &err);
    EXPECT_EQ(err, EINVAL) << bad;
  }
  // Not NUL-terminated.
  EXPECT_EQ(Call(FUSE_LOOKUP, FUSE_ROOT_ID, Args().Raw("abc")).error(), EINVAL);
  // ".." below the root is refused; the root's ".." is the root.
  std::filesystem::create_directory(S("d"));
  fuse_entry_out d = Lookup(FUSE_ROOT_ID, "d");
  Lookup(d.nodeid, "..", &err);
  EXPECT_EQ(err, EINVAL);
  EXPECT_EQ(Lookup(FUSE_ROOT_ID, "..").nodeid, FUSE_ROOT_ID);
  EXPECT_GT(server_->counters().malformed.load(), 0u);
}

TEST_F(FsServerTest, CacheNeverGivesZeroTimeoutsAndDirectIo) {
  FsConfig c;
  c.cache = CachePolicy::kNever;
  Start(c);
  ScratchShare::WriteFile(S("f"), "x");
  fuse_entry_out e = Lookup(FUSE_ROOT_ID, "f");
  EXPECT_EQ(e.entry_valid, 0u);
  EXPECT_EQ(e.attr_valid, 0u);
  fuse_open_in in = {};
  Result r = Call(FUSE_OPEN, e.nodeid, Args().Add(in));
  EXPECT_TRUE(r.As<fuse_open_out>().open_flags & FOPEN_DIRECT_IO);
}

TEST_F(FsServerTest, CacheAlwaysKeepsCache) {
  FsConfig c;
  c.cache = CachePolicy::kAlways;
  Start(c);
  ScratchShare::WriteFile(S("f"), "x");
  fuse_entry_out e = Lookup(FUSE_ROOT_ID, "f");
  EXPECT_EQ(e.entry_valid, 86400u);
  Result r = Call(FUSE_OPEN, e.nodeid, Args().Add(fuse_open_in{}));
  EXPECT_TRUE(r.As<fuse_open_out>().open_flags & FOPEN_KEEP_CACHE);
}

// --- files ---

TEST_F(FsServerTest, CreateWriteReadFlushFsyncRelease) {
  auto [e, fh] = Create(FUSE_ROOT_ID, "new", O_RDWR);
  ASSERT_NE(fh, 0u);
  Result w = Write(e.nodeid, fh, 0, "hello world");
  ASSERT_EQ(w.error(), 0);
  EXPECT_EQ(w.As<fuse_write_out>().size, 11u);
  Result r = Read(e.nodeid, fh, 6, 100);
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.Text(), "world");
  EXPECT_EQ(Read(e.nodeid, fh, 1000, 100).payload.size(), 0u);  // past EOF
  fuse_flush_in fl = {};
  fl.fh = fh;
  EXPECT_EQ(Call(FUSE_FLUSH, e.nodeid, Args().Add(fl)).error(), 0);
  fuse_fsync_in fs = {};
  fs.fh = fh;
  EXPECT_EQ(Call(FUSE_FSYNC, e.nodeid, Args().Add(fs)).error(), 0);
  fs.fsync_flags = 1;
  EXPECT_EQ(Call(FUSE_FSYNC, e.nodeid, Args().Add(fs)).error(), 0);
  EXPECT_EQ(server_->handle_count(), 1u);
  EXPECT_EQ(Release(e.nodeid, fh), 0);
  EXPECT_EQ(server_->handle_count(), 0u);
  EXPECT_EQ(ScratchShare::ReadFile(S("new")), "hello world");
  // Create of an existing name with O_EXCL fails; handles are gone after release.
  int err = 0;
  Create(FUSE_ROOT_ID, "new", O_RDWR | O_EXCL, &err);
  EXPECT_EQ(err, EEXIST);
  EXPECT_EQ(Read(e.nodeid, fh, 0, 10).error(), EBADF);
  EXPECT_EQ(Release(e.nodeid, fh), EBADF);
  fl.fh = 999;
  EXPECT_EQ(Call(FUSE_FLUSH, e.nodeid, Args().Add(fl)).error(), EBADF);
  fs.fh = 999;
  EXPECT_EQ(Call(FUSE_FSYNC, e.nodeid, Args().Add(fs)).error(), EBADF);
}

TEST_F(FsServerTest, OpenExistingAndErrors) {
  ScratchShare::WriteFile(S("f"), "0123456789");
  std::filesystem::create_directory(S("d"));
  fuse_entry_out f = Lookup(FUSE_ROOT_ID, "f");
  fuse_entry_out d = Lookup(FUSE_ROOT_ID, "d");
  int err = 0;
  uint64_t fh = Open(f.nodeid, O_RDWR | O_TRUNC, &err);
  ASSERT_EQ(err, 0);
  EXPECT_EQ(ScratchShare::ReadFile(S("f")), "");
  Open(d.nodeid, O_WRONLY, &err);
  EXPECT_EQ(err, EISDIR);
  Open(f.nodeid, O_RDONLY, &err, /*dir=*/true);
  EXPECT_EQ(err, ENOTDIR);
  Open(777, O_RDONLY, &err);
  EXPECT_EQ(err, ENOENT);
  // READ on a directory handle / READDIR on a file handle are EBADF.
  uint64_t dh = Open(d.nodeid, O_RDONLY, &err, true);
  EXPECT_EQ(Read(d.nodeid, dh, 0, 10).error(), EBADF);
  EXPECT_EQ(Read(f.nodeid, fh, 0, 10, FUSE_READDIR).error(), EBADF);
  EXPECT_EQ(Release(d.nodeid, dh, true), 0);
  EXPECT_EQ(Release(f.nodeid, fh), 0);
}

TEST_F(FsServerTest, MalformedReadAndWrite) {
  auto [e, fh] = Create(FUSE_ROOT_ID, "f", O_RDWR);
  // A read larger than max_write / than the reply buffer.
  EXPECT_EQ(Read(e.nodeid, fh, 0, (1 << 20) + 1).error(), EINVAL);
  fuse_read_in rin = {};
  rin.fh = fh;
  rin.size = 8192;
  ScratchShare::WriteFile(S("f"), std::string(8192, 'z'));
  Result small = Call(FUSE_READ, e.nodeid, Args().Add(rin), sizeof(fuse_out_header) + 100);
  EXPECT_EQ(small.error(), EINVAL);
  EXPECT_EQ(small.used, sizeof(fuse_out_header));
  // WRITE whose size disagrees with the bytes sent.
  fuse_write_in win = {};
  win.fh = fh;
  win.size = 10;
  EXPECT_EQ(Call(FUSE_WRITE, e.nodeid, Args().Add(win).Raw("abc")).error(), EINVAL);
  win.size = 2;
  EXPECT_EQ(Call(FUSE_WRITE, e.nodeid, Args().Add(win).Raw("abc")).error(), EINVAL);
  win.fh = 4242;
  win.size = 3;
  EXPECT_EQ(Call(FUSE_WRITE, e.nodeid, Args().Add(win).Raw("abc")).error(), EBADF);
  // Truncated argument struct.
  EXPECT_EQ(Call(FUSE_READ, e.nodeid, Args().Add(uint32_t{1})).error(), EINVAL);
  EXPECT_EQ(ScratchShare::ReadFile(S("f")), std::string(8192, 'z'));
}

TEST_F(FsServerTest, MalformedHeaders) {
  // Shorter than a header: EINVAL with unique 0.
  Result r = Send(std::vector<uint8_t>(10, 0));
  EXPECT_EQ(r.error(), EINVAL);
  // len disagreeing with the bytes carried.
  std::vector<uint8_t> req =
      BuildRequest(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), 99);
  std::vector<uint8_t> longer = req;
  longer.push_back(0);
  r = Send(longer);
  EXPECT_EQ(r.error(), EINVAL);
  EXPECT_EQ(r.header.unique, 99u);
  req.pop_back();
  EXPECT_EQ(Send(req).error(), EINVAL);
  // A sink that cannot hold fuse_out_header gets nothing, counted.
  const uint64_t before = server_->counters().unanswerable.load();
  r = Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), sizeof(fuse_out_header) - 1);
  EXPECT_EQ(r.used, 0u);
  EXPECT_EQ(server_->counters().unanswerable.load(), before + 1);
  // A reply bigger than the sink: ERANGE header only.
  r = Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{}), sizeof(fuse_out_header) + 8);
  EXPECT_EQ(r.error(), ERANGE);
  // Unknown opcode, xattrs, interrupt; the server keeps serving.
  EXPECT_EQ(Call(9999, FUSE_ROOT_ID, Args()).error(), ENOSYS);
  EXPECT_EQ(
      Call(FUSE_GETXATTR, FUSE_ROOT_ID, Args().Add(fuse_getxattr_in{}).Name("user.x")).error(),
      ENOSYS);
  EXPECT_EQ(Call(FUSE_LISTXATTR, FUSE_ROOT_ID, Args().Add(fuse_getxattr_in{})).error(), ENOSYS);
  EXPECT_EQ(Call(FUSE_INTERRUPT, 0, Args().Add(fuse_interrupt_in{})).used, 0u);
  // BATCH_FORGET whose count exceeds the entries sent.
  fuse_batch_forget_in b = {1000, 0};
  EXPECT_EQ(Call(FUSE_BATCH_FORGET, 0, Args().Add(b)).used, 0u);
  EXPECT_EQ(Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{})).error(), 0);
}

TEST_F(FsServerTest, Setattr) {
  auto [e, fh] = Create(FUSE_ROOT_ID, "f", O_RDWR);
  fuse_setattr_in in = {};
  in.valid = FATTR_MODE | FATTR_SIZE | FATTR_MTIME | FATTR_ATIME;
  in.mode = 0600;
  in.size = 1234;
  in.mtime = 1000000000;
  in.mtimensec = 5;
  in.atime = 1000000001;
  Result r = Call(FUSE_SETATTR, e.nodeid, Args().Add(in));
  ASSERT_EQ(r.error(), 0);
  fuse_attr_out out = r.As<fuse_attr_out>();
  EXPECT_EQ(out.attr.mode & 07777, 0600u);
  EXPECT_EQ(out.attr.size, 1234u);
  EXPECT_EQ(out.attr.mtime, 1000000000u);
  EXPECT_EQ(out.attr.mtimensec, 5u);
  EXPECT_EQ(out.attr.atime, 1000000001u);
  // Through the handle, with NOW.
  in = {};
  in.valid = FATTR_FH | FATTR_SIZE | FATTR_MTIME | FATTR_MTIME_NOW;
  in.fh = fh;
  in.size = 10;
  r = Call(FUSE_SETATTR, e.nodeid, Args().Add(in));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.As<fuse_attr_out>().attr.size, 10u);
  EXPECT_GT(r.As<fuse_attr_out>().attr.mtime, 1000000000u);
  // Owner: to ourselves works.
  in = {};
  in.valid = FATTR_UID | FATTR_GID;
  in.uid = getuid();
  in.gid = getgid();
  EXPECT_EQ(Call(FUSE_SETATTR, e.nodeid, Args().Add(in)).error(), 0);
  // Bad fh, bad nsec, unknown node.
  in = {};
  in.valid = FATTR_FH | FATTR_SIZE;
  in.fh = 999;
  EXPECT_EQ(Call(FUSE_SETATTR, e.nodeid, Args().Add(in)).error(), EBADF);
  in = {};
  in.valid = FATTR_MTIME;
  in.mtimensec = 2000000000;
  EXPECT_EQ(Call(FUSE_SETATTR, e.nodeid, Args().Add(in)).error(), EINVAL);
  EXPECT_EQ(Call(FUSE_SETATTR, 555, Args().Add(fuse_setattr_in{})).error(), ENOENT);
  EXPECT_EQ(Release(e.nodeid, fh), 0);
}

// --- directories and names ---

TEST_F(FsServerTest, MkdirMknodReaddirUnlinkRmdir) {
  fuse_mkdir_in mk = {0755, 0};
  Result r = Call(FUSE_MKDIR, FUSE_ROOT_ID, Args().Add(mk).Name("dir"));
  ASSERT_EQ(r.error(), 0);
  const uint64_t dir = r.As<fuse_entry_out>().nodeid;
  EXPECT_TRUE(std::filesystem::is_directory(S("dir")));
  EXPECT_EQ(Call(FUSE_MKDIR, FUSE_ROOT_ID, Args().Add(mk).Name("dir")).error(), EEXIST);

  fuse_mknod_in mn = {};
  mn.mode = S_IFIFO | 0600;
  r = Call(FUSE_MKNOD, dir, Args().Add(mn).Name("fifo"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_TRUE(S_ISFIFO(r.As<fuse_entry_out>().attr.mode));
  mn.mode = S_IFREG | 0644;
  EXPECT_EQ(Call(FUSE_MKNOD, dir, Args().Add(mn).Name("reg")).error(), 0);
  // A FIFO is never opened on the host (it would block the server).
  int open_err = 0;
  Open(Lookup(dir, "fifo").nodeid, O_RDONLY, &open_err);
  EXPECT_EQ(open_err, ENXIO);
  mn.mode = S_IFCHR | 0600;
  mn.rdev = makedev(1, 3);
  EXPECT_EQ(Call(FUSE_MKNOD, dir, Args().Add(mn).Name("null")).error(), EPERM);
  EXPECT_FALSE(std::filesystem::exists(S("dir/null")));

  for (int i = 0; i < 150; ++i) ScratchShare::WriteFile(S("dir/file" + std::to_string(i)), "");
  std::set<std::string> names = ReaddirNames(dir, false);
  EXPECT_EQ(names.size(), 154u);  // . .. fifo reg file0..149
  EXPECT_TRUE(names.count("fifo"));
  EXPECT_TRUE(names.count("file149"));
  EXPECT_EQ(ReaddirNames(dir, true), names);
  EXPECT_EQ(server_->lookup_count(Lookup(dir, "file7").nodeid), 2u);  // readdirplus + lookup
  // A host device node in the share is never opened.
  if (mknod(S("dir/hostnull").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {  // root only
    Open(Lookup(dir, "hostnull").nodeid, O_RDWR, &open_err);
    EXPECT_EQ(open_err, ENXIO);
    unlink(S("dir/hostnull").c_str());
  }

  EXPECT_EQ(Call(FUSE_RMDIR, FUSE_ROOT_ID, Args().Name("dir")).error(), ENOTEMPTY);
  EXPECT_EQ(Call(FUSE_UNLINK, dir, Args().Name("fifo")).error(), 0);
  EXPECT_EQ(Call(FUSE_UNLINK, dir, Args().Name("fifo")).error(), ENOENT);
  EXPECT_EQ(Call(FUSE_UNLINK, dir, Args().Name("../x")).error(), EINVAL);
  EXPECT_EQ(Call(FUSE_RMDIR, dir, Args().Name("..")).error(), EINVAL);
  std::filesystem::remove_all(S("dir"));
  std::filesystem::create_directory(S("empty"));
  EXPECT_EQ(Call(FUSE_RMDIR, FUSE_ROOT_ID, Args().Name("empty")).error(), 0);
  EXPECT_FALSE(std::filesystem::exists(S("empty")));
  // FSYNCDIR on an open directory.
  uint64_t dh = Open(FUSE_ROOT_ID, O_RDONLY, nullptr, true);
  fuse_fsync_in fs = {};
  fs.fh = dh;
  EXPECT_EQ(Call(FUSE_FSYNCDIR, FUSE_ROOT_ID, Args().Add(fs)).error(), 0);
  EXPECT_EQ(Release(FUSE_ROOT_ID, dh, true), 0);
}

TEST_F(FsServerTest, RenameAndRename2) {
  ScratchShare::WriteFile(S("a"), "A");
  ScratchShare::WriteFile(S("b"), "B");
  std::filesystem::create_directory(S("d"));
  const uint64_t d = Lookup(FUSE_ROOT_ID, "d").nodeid;
  fuse_rename_in rn = {d};
  EXPECT_EQ(Call(FUSE_RENAME, FUSE_ROOT_ID, Args().Add(rn).Name("a").Name("a2")).error(), 0);
  EXPECT_EQ(ScratchShare::ReadFile(S("d/a2")), "A");
  fuse_rename2_in r2 = {};
  r2.newdir = FUSE_ROOT_ID;
  r2.flags = RENAME_NOREPLACE;
  ScratchShare::WriteFile(S("c"), "C");
  EXPECT_EQ(Call(FUSE_RENAME2, FUSE_ROOT_ID, Args().Add(r2).Name("b").Name("c")).error(), EEXIST);
  r2.flags = RENAME_EXCHANGE;
  EXPECT_EQ(Call(FUSE_RENAME2, FUSE_ROOT_ID, Args().Add(r2).Name("b").Name("c")).error(), 0);
  EXPECT_EQ(ScratchShare::ReadFile(S("b")), "C");
  EXPECT_EQ(ScratchShare::ReadFile(S("c")), "B");
  r2.flags = RENAME_WHITEOUT;
  EXPECT_EQ(Call(FUSE_RENAME2, FUSE_ROOT_ID, Args().Add(r2).Name("b").Name("c")).error(), EINVAL);
  // Names with '/' (an attempt to move a file out of the share) and ".." are refused.
  rn.newdir = FUSE_ROOT_ID;
  EXPECT_EQ(Call(FUSE_RENAME, FUSE_ROOT_ID, Args().Add(rn).Name("b").Name("../outside/b")).error(),
            EINVAL);
  EXPECT_EQ(Call(FUSE_RENAME, FUSE_ROOT_ID, Args().Add(rn).Name("b").Name("..")).error(), EINVAL);
  EXPECT_EQ(
      Call(FUSE_RENAME, FUSE_ROOT_ID, Args().Add(rn).Name("../outside/secret").Name("s")).error(),
      EINVAL);
  rn.newdir = 4444;
  EXPECT_EQ(Call(FUSE_RENAME, FUSE_ROOT_ID, Args().Add(rn).Name("b").Name("x")).error(), ENOENT);
  EXPECT_TRUE(std::filesystem::exists(S("b")));
}

TEST_F(FsServerTest, Link) {
  ScratchShare::WriteFile(S("f"), "data");
  std::filesystem::create_directory(S("d"));
  fuse_entry_out f = Lookup(FUSE_ROOT_ID, "f");
  fuse_link_in in = {f.nodeid};
  Result r = Call(FUSE_LINK, FUSE_ROOT_ID, Args().Add(in).Name("g"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.As<fuse_entry_out>().nodeid, f.nodeid);
  EXPECT_EQ(r.As<fuse_entry_out>().attr.nlink, 2u);
  EXPECT_EQ(ScratchShare::ReadFile(S("g")), "data");
  // Directories cannot be linked; nodeids never looked up do not exist (there is no way to name
  // a file outside the share).
  in.oldnodeid = Lookup(FUSE_ROOT_ID, "d").nodeid;
  EXPECT_EQ(Call(FUSE_LINK, FUSE_ROOT_ID, Args().Add(in).Name("dl")).error(), EPERM);
  in.oldnodeid = 1u << 30;
  EXPECT_EQ(Call(FUSE_LINK, FUSE_ROOT_ID, Args().Add(in).Name("h")).error(), ENOENT);
  in.oldnodeid = f.nodeid;
  EXPECT_EQ(Call(FUSE_LINK, FUSE_ROOT_ID, Args().Add(in).Name("../outside/h")).error(), EINVAL);
  EXPECT_FALSE(std::filesystem::exists(scratch_.outside() + "/h"));
}

TEST_F(FsServerTest, NewNodesBelongToTheRequestingUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (the server chowns only when it runs as root)";
  auto as_user = [](std::vector<uint8_t> req) {
    fuse_in_header h;
    std::memcpy(&h, req.data(), sizeof(h));
    h.uid = 1234;
    h.gid = 5678;
    std::memcpy(req.data(), &h, sizeof(h));
    return req;
  };
  ScratchShare::WriteFile(S("existing"), "e");
  fuse_create_in ci = {};
  ci.flags = O_RDWR;
  ci.mode = 0644;
  EXPECT_EQ(
      Send(as_user(BuildRequest(FUSE_CREATE, FUSE_ROOT_ID, Args().Add(ci).Name("c")))).error(), 0);
  EXPECT_EQ(Send(as_user(BuildRequest(FUSE_CREATE, FUSE_ROOT_ID, Args().Add(ci).Name("existing"))))
                .error(),
            0);
  EXPECT_EQ(Send(as_user(BuildRequest(FUSE_MKDIR, FUSE_ROOT_ID,
                                      Args().Add(fuse_mkdir_in{0755, 0}).Name("d"))))
                .error(),
            0);
  EXPECT_EQ(
      Send(as_user(BuildRequest(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("l").Name("c")))).error(),
      0);
  fuse_mknod_in mn = {};
  mn.mode = S_IFIFO | 0600;
  EXPECT_EQ(Send(as_user(BuildRequest(FUSE_MKNOD, FUSE_ROOT_ID, Args().Add(mn).Name("p")))).error(),
            0);
  for (const char* n : {"c", "d", "l", "p"}) {
    struct stat st;
    ASSERT_EQ(lstat(S(n).c_str(), &st), 0) << n;
    EXPECT_EQ(st.st_uid, 1234u) << n;
    EXPECT_EQ(st.st_gid, 5678u) << n;
  }
  struct stat st;
  ASSERT_EQ(stat(S("existing").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);  // an existing file keeps its owner
  // In a set-group-ID directory the group comes from the directory.
  ASSERT_EQ(chown(S("d").c_str(), 1234, 4321), 0);
  ASSERT_EQ(chmod(S("d").c_str(), 02777), 0);
  const uint64_t d = Lookup(FUSE_ROOT_ID, "d").nodeid;
  EXPECT_EQ(
      Send(as_user(BuildRequest(FUSE_MKDIR, d, Args().Add(fuse_mkdir_in{0755, 0}).Name("sub"))))
          .error(),
      0);
  ASSERT_EQ(stat(S("d/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 4321u);
}

// --- symlinks and confinement ---

TEST_F(FsServerTest, SymlinkReadlinkAndNeverFollowed) {
  fuse_entry_out e;
  Result r = Call(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("etc").Name("/etc"));
  ASSERT_EQ(r.error(), 0);
  e = r.As<fuse_entry_out>();
  EXPECT_TRUE(S_ISLNK(e.attr.mode));
  // LOOKUP returns the link itself.
  fuse_entry_out l = Lookup(FUSE_ROOT_ID, "etc");
  EXPECT_EQ(l.nodeid, e.nodeid);
  EXPECT_TRUE(S_ISLNK(l.attr.mode));
  r = Call(FUSE_READLINK, l.nodeid, Args());
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.Text(), "/etc");
  // Nothing resolves through it.
  int err = 0;
  Lookup(l.nodeid, "passwd", &err);
  EXPECT_EQ(err, ENOTDIR);
  Open(l.nodeid, O_RDONLY, &err);
  EXPECT_EQ(err, ELOOP);
  Open(l.nodeid, O_RDONLY, &err, true);
  EXPECT_EQ(err, ENOTDIR);
  fuse_create_in ci = {};
  ci.flags = O_RDWR;
  ci.mode = 0644;
  // CREATE over a symlink pointing outside does not follow it.
  std::filesystem::create_symlink(scratch_.outside() + "/secret", S("out"));
  EXPECT_NE(Call(FUSE_CREATE, FUSE_ROOT_ID, Args().Add(ci).Name("out")).error(), 0);
  ci.flags = O_RDWR | O_TRUNC;
  EXPECT_NE(Call(FUSE_CREATE, FUSE_ROOT_ID, Args().Add(ci).Name("out")).error(), 0);
  // SETATTR on the link does not reach the target.
  fuse_entry_out out = Lookup(FUSE_ROOT_ID, "out");
  fuse_setattr_in sa = {};
  sa.valid = FATTR_SIZE;
  sa.size = 0;
  EXPECT_NE(Call(FUSE_SETATTR, out.nodeid, Args().Add(sa)).error(), 0);
  sa.valid = FATTR_MODE;
  sa.mode = 0777;
  EXPECT_NE(Call(FUSE_SETATTR, out.nodeid, Args().Add(sa)).error(), 0);
  // LINK of the symlink makes another symlink (or fails), never a link to the target.
  fuse_link_in li = {out.nodeid};
  r = Call(FUSE_LINK, FUSE_ROOT_ID, Args().Add(li).Name("out2"));
  if (r.error() == 0) {
    EXPECT_TRUE(std::filesystem::is_symlink(S("out2")));
  }
  EXPECT_EQ(Call(FUSE_READLINK, FUSE_ROOT_ID, Args()).error(), EINVAL);  // not a link
  EXPECT_EQ(Call(FUSE_READLINK, 9999, Args()).error(), ENOENT);
  EXPECT_EQ(Call(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("etc").Name("/x")).error(), EEXIST);
  EXPECT_EQ(
      Call(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("long").Name(std::string(4096, 'a'))).error(),
      EINVAL);
  EXPECT_EQ(Call(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("a/b").Name("/etc")).error(), EINVAL);
  EXPECT_EQ(Call(FUSE_SYMLINK, FUSE_ROOT_ID, Args().Name("nolink")).error(), EINVAL);
  EXPECT_EQ(ScratchShare::ReadFile(scratch_.outside() + "/secret"), "secret");
}

TEST_F(FsServerTest, DirectorySwappedForSymlinkStaysBeneath) {
  std::filesystem::create_directory(S("d"));
  ScratchShare::WriteFile(S("d/inner"), "in");
  const uint64_t d = Lookup(FUSE_ROOT_ID, "d").nodeid;
  // Between LOOKUP and OPEN the host (or another guest) swaps d for a symlink to the outside.
  std::filesystem::rename(S("d"), S("d.moved"));
  std::filesystem::create_directory_symlink(scratch_.outside(), S("d"));
  std::set<std::string> names = ReaddirNames(d, false);
  EXPECT_TRUE(names.count("inner"));
  EXPECT_FALSE(names.count("secret"));
  int err = 0;
  Lookup(d, "secret", &err);
  EXPECT_EQ(err, ENOENT);
  auto [e, fh] = Create(d, "created", O_RDWR);
  ASSERT_NE(fh, 0u);
  EXPECT_TRUE(std::filesystem::exists(S("d.moved/created")));
  EXPECT_FALSE(std::filesystem::exists(scratch_.outside() + "/created"));
  EXPECT_EQ(Release(e.nodeid, fh), 0);
  // A fresh lookup of "d" sees the symlink, which cannot be entered.
  fuse_entry_out l = Lookup(FUSE_ROOT_ID, "d");
  EXPECT_TRUE(S_ISLNK(l.attr.mode));
  Lookup(l.nodeid, "secret", &err);
  EXPECT_EQ(err, ENOTDIR);
}

// --- the rest ---

TEST_F(FsServerTest, StatfsAccessFallocateLseek) {
  Result r = Call(FUSE_STATFS, FUSE_ROOT_ID, Args());
  ASSERT_EQ(r.error(), 0);
  EXPECT_GT(r.As<fuse_statfs_out>().st.bsize, 0u);
  EXPECT_EQ(r.As<fuse_statfs_out>().st.namelen, 255u);
  EXPECT_EQ(Call(FUSE_STATFS, 31337, Args()).error(), ENOENT);
  fuse_access_in a = {R_OK | X_OK, 0};
  EXPECT_EQ(Call(FUSE_ACCESS, FUSE_ROOT_ID, Args().Add(a)).error(), 0);
  a.mask = 0x100;
  EXPECT_EQ(Call(FUSE_ACCESS, FUSE_ROOT_ID, Args().Add(a)).error(), EINVAL);

  auto [e, fh] = Create(FUSE_ROOT_ID, "f", O_RDWR);
  fuse_fallocate_in fa = {};
  fa.fh = fh;
  fa.length = 1 << 20;
  EXPECT_EQ(Call(FUSE_FALLOCATE, e.nodeid, Args().Add(fa)).error(), 0);
  EXPECT_EQ(std::filesystem::file_size(S("f")), 1u << 20);
  fa.fh = 77;
  EXPECT_EQ(Call(FUSE_FALLOCATE, e.nodeid, Args().Add(fa)).error(), EBADF);
  ASSERT_EQ(Write(e.nodeid, fh, 0, "x").error(), 0);
  fuse_lseek_in ls = {};
  ls.fh = fh;
  ls.offset = 0;
  ls.whence = SEEK_END;
  r = Call(FUSE_LSEEK, e.nodeid, Args().Add(ls));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.As<fuse_lseek_out>().offset, 1u << 20);
  ls.whence = SEEK_DATA;
  EXPECT_EQ(Call(FUSE_LSEEK, e.nodeid, Args().Add(ls)).error(), 0);
  ls.whence = 42;
  EXPECT_EQ(Call(FUSE_LSEEK, e.nodeid, Args().Add(ls)).error(), EINVAL);
  EXPECT_EQ(Release(e.nodeid, fh), 0);
}

TEST_F(FsServerTest, ReadOnlyShareRefusesWrites) {
  ScratchShare::WriteFile(S("f"), "keep");
  FsConfig c;
  c.read_only = true;
  Start(c);
  fuse_entry_out f = Lookup(FUSE_ROOT_ID, "f");
  int err = 0;
  Open(f.nodeid, O_WRONLY, &err);
  EXPECT_EQ(err, EROFS);
  Open(f.nodeid, O_RDONLY | O_TRUNC, &err);
  EXPECT_EQ(err, EROFS);
  uint64_t fh = Open(f.nodeid, O_RDONLY, &err);
  ASSERT_EQ(err, 0);
  EXPECT_EQ(Read(f.nodeid, fh, 0, 10).Text(), "keep");
  EXPECT_EQ(Write(f.nodeid, fh, 0, "x").error(), EROFS);
  Create(FUSE_ROOT_ID, "n", O_RDWR, &err);
  EXPECT_EQ(err, EROFS);
  EXPECT_EQ(Call(FUSE_MKDIR, FUSE_ROOT_ID, Args().Add(fuse_mkdir_in{0755, 0}).Name("d")).error(),
            EROFS);
  EXPECT_EQ(Call(FUSE_UNLINK, FUSE_ROOT_ID, Args().Name("f")).error(), EROFS);
  fuse_setattr_in sa = {};
  sa.valid = FATTR_SIZE;
  EXPECT_EQ(Call(FUSE_SETATTR, f.nodeid, Args().Add(sa)).error(), EROFS);
  fuse_access_in a = {W_OK, 0};
  EXPECT_EQ(Call(FUSE_ACCESS, f.nodeid, Args().Add(a)).error(), EROFS);
  EXPECT_EQ(ScratchShare::ReadFile(S("f")), "keep");
}

TEST_F(FsServerTest, TablesAreBounded) {
  FsConfig c;
  c.max_inodes = 3;  // root + 2
  c.max_handles = 1;
  Start(c);
  for (const char* n : {"a", "b", "c"}) ScratchShare::WriteFile(S(n), n);
  int err = 0;
  const uint64_t a = Lookup(FUSE_ROOT_ID, "a").nodeid;
  Lookup(FUSE_ROOT_ID, "b", &err);
  EXPECT_EQ(err, 0);
  Lookup(FUSE_ROOT_ID, "c", &err);
  EXPECT_EQ(err, ENFILE);
  Lookup(FUSE_ROOT_ID, "a", &err);
  EXPECT_EQ(err, 0);  // known inodes still resolve
  uint64_t fh = Open(a, O_RDONLY, &err);
  EXPECT_EQ(err, 0);
  Open(a, O_RDONLY, &err);
  EXPECT_EQ(err, ENFILE);
  EXPECT_EQ(Release(a, fh), 0);
  Open(a, O_RDONLY, &err);
  EXPECT_EQ(err, 0);
  EXPECT_GE(server_->counters().table_full.load(), 2u);
}

TEST_F(FsServerTest, ResetAndDestroyDropEverythingButRoot) {
  ScratchShare::WriteFile(S("a"), "a");
  const uint64_t a = Lookup(FUSE_ROOT_ID, "a").nodeid;
  Open(a, O_RDONLY);
  EXPECT_EQ(server_->inode_count(), 2u);
  EXPECT_EQ(Call(FUSE_DESTROY, 0, Args()).error(), 0);
  EXPECT_EQ(server_->inode_count(), 1u);
  EXPECT_EQ(server_->handle_count(), 0u);
  // Not initialized any more.
  EXPECT_EQ(Call(FUSE_GETATTR, FUSE_ROOT_ID, Args().Add(fuse_getattr_in{})).error(), EIO);
  ASSERT_EQ(Call(FUSE_INIT, 0, Args().Add(InitIn())).error(), 0);
  EXPECT_EQ(Call(FUSE_GETATTR, a, Args().Add(fuse_getattr_in{})).error(), ENOENT);
  Lookup(FUSE_ROOT_ID, "a");
  server_->Reset();
  EXPECT_EQ(server_->inode_count(), 1u);
}

TEST(FsConfigTest, ParseShareSpec) {
  absl::StatusOr<FsConfig> c = ParseShareSpec("myfs=/srv/data,cache=never,ro");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tag, "myfs");
  EXPECT_EQ(c->shared_dir, "/srv/data");
  EXPECT_EQ(c->cache, CachePolicy::kNever);
  EXPECT_TRUE(c->read_only);
  c = ParseShareSpec("t=/d,cache=always,writeback");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->cache, CachePolicy::kAlways);
  EXPECT_TRUE(c->writeback);
  EXPECT_EQ(ParseShareSpec("t=/d")->cache, CachePolicy::kAuto);
  EXPECT_FALSE(ParseShareSpec("/d").ok());
  EXPECT_FALSE(ParseShareSpec("=/d").ok());
  EXPECT_FALSE(ParseShareSpec("t=").ok());
  EXPECT_FALSE(ParseShareSpec(std::string(37, 't') + "=/d").ok());
  EXPECT_TRUE(ParseShareSpec(std::string(36, 't') + "=/d").ok());
  EXPECT_FALSE(ParseShareSpec("t=/d,cache=sometimes").ok());
  EXPECT_FALSE(ParseShareSpec("t=/d,rw").ok());
  FsConfig bad;
  bad.tag = "t";
  bad.shared_dir = "/nonexistent/vessel-fs";
  absl::StatusOr<std::unique_ptr<FuseServer>> s = FuseServer::Create(bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/nonexistent/vessel-fs"), std::string::npos);
}

}  // namespace
}  // namespace vessel::fs
