#include "guest/image/cpio_writer.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cctype>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vessel {
namespace {

using ::testing::ElementsAre;

struct CpioEntry {
  std::string name;
  uint32_t ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
      namesize, check;
  std::string data;
};

// Parses a newc archive; records a test failure on any format error.
std::vector<CpioEntry> ParseNewc(const std::vector<uint8_t>& archive) {
  std::vector<CpioEntry> entries;
  size_t off = 0;
  const std::string s(archive.begin(), archive.end());
  auto hex = [&](size_t field) {
    const std::string h = s.substr(off + 6 + field * 8, 8);
    for (char c : h) EXPECT_TRUE(std::isxdigit(static_cast<unsigned char>(c))) << h;
    return static_cast<uint32_t>(std::stoul(h, nullptr, 16));
  };
  while (true) {
    if (off + 110 > s.size()) {
      ADD_FAILURE() << "archive ends without TRAILER!!! at " << off;
      return entries;
    }
    EXPECT_EQ(off % 4, 0u);
    EXPECT_EQ(s.substr(off, 6), "070701") << "at " << off;
    CpioEntry e;
    e.ino = hex(0);
    e.mode = hex(1);
    e.uid = hex(2);
    e.gid = hex(3);
    e.nlink = hex(4);
    e.mtime = hex(5);
    e.filesize = hex(6);
    e.devmajor = hex(7);
    e.devminor = hex(8);
    e.rdevmajor = hex(9);
    e.rdevminor = hex(10);
    e.namesize = hex(11);
    e.check = hex(12);
    off += 110;
    if (e.namesize == 0 || off + e.namesize > s.size()) {
      ADD_FAILURE() << "bad namesize " << e.namesize;
      return entries;
    }
    e.name = s.substr(off, e.namesize - 1);
    EXPECT_EQ(s[off + e.namesize - 1], '\0') << e.name;
    EXPECT_EQ(e.name.find('\0'), std::string::npos) << e.name;
    off += e.namesize;
    for (; off % 4 != 0; ++off) EXPECT_EQ(s.at(off), '\0') << "name padding of " << e.name;
    if (off + e.filesize > s.size()) {
      ADD_FAILURE() << "bad filesize " << e.filesize;
      return entries;
    }
    e.data = s.substr(off, e.filesize);
    off += e.filesize;
    const bool trailer = e.name == "TRAILER!!!";
    entries.push_back(e);
    if (trailer) break;
    for (; off % 4 != 0; ++off) EXPECT_EQ(s.at(off), '\0') << "data padding of " << e.name;
  }
  EXPECT_EQ(off, s.size()) << "bytes after the trailer";
  return entries;
}

std::vector<std::string> Names(const std::vector<CpioEntry>& entries) {
  std::vector<std::string> names;
  for (const CpioEntry& e : entries) names.push_back(e.name);
  return names;
}

const CpioEntry* FindEntry(const std::vector<CpioEntry>& entries, const std::string& name) {
  for (const CpioEntry& e : entries) {
    if (e.name == name) return &e;
  }
  ADD_FAILURE() << "no entry " << name;
  return nullptr;
}

std::vector<uint8_t> Data(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// A small initramfs like the one the build makes.
void AddTypical(CpioWriter& w) {
  ASSERT_TRUE(w.AddDirectory("/proc").ok());
  ASSERT_TRUE(w.AddFile("/init", Data("#!/bin/sh\necho hi\n"), 0755).ok());
  ASSERT_TRUE(w.AddFile("/bin/busybox", Data("ELF-ish"), 0755).ok());
  ASSERT_TRUE(w.AddSymlink("/bin/sh", "busybox").ok());
  ASSERT_TRUE(w.AddDeviceNode("/dev/console", 'c', 5, 1, 0600).ok());
}

TEST(CpioWriterTest, EmptyArchiveIsJustTheTrailer) {
  const std::vector<CpioEntry> entries = ParseNewc(CpioWriter().Finish());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].name, "TRAILER!!!");
  EXPECT_EQ(entries[0].ino, 0u);
  EXPECT_EQ(entries[0].mode, 0u);
  EXPECT_EQ(entries[0].filesize, 0u);
  EXPECT_EQ(entries[0].namesize, 11u);
}

TEST(CpioWriterTest, EntriesSortedWithImplicitParents) {
  CpioWriter w;
  AddTypical(w);
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  EXPECT_THAT(Names(entries), ElementsAre("bin", "bin/busybox", "bin/sh", "dev", "dev/console",
                                          "init", "proc", "TRAILER!!!"));
  for (const char* dir : {"bin", "dev"}) {
    const CpioEntry* e = FindEntry(entries, dir);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->mode, static_cast<uint32_t>(S_IFDIR | 0755)) << dir;
    EXPECT_EQ(e->nlink, 2u) << dir;
    EXPECT_EQ(e->filesize, 0u) << dir;
  }
}

TEST(CpioWriterTest, DeepImplicitParents) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("a/b/c/d.txt", Data("x")).ok());
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  EXPECT_THAT(Names(entries), ElementsAre("a", "a/b", "a/b/c", "a/b/c/d.txt", "TRAILER!!!"));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(S_ISDIR(entries[i].mode)) << entries[i].name;
}

TEST(CpioWriterTest, ParentsSortBeforeSiblingsWithLowerBytes) {
  // '-' and '.' sort before '/': "a-b" and "a.c" come between "a" and "a/x" byte-wise.
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("a/x", Data("1")).ok());
  ASSERT_TRUE(w.AddFile("a-b", Data("2")).ok());
  ASSERT_TRUE(w.AddFile("a.c", Data("3")).ok());
  const std::vector<std::string> names = Names(ParseNewc(w.Finish()));
  EXPECT_THAT(names, ElementsAre("a", "a-b", "a.c", "a/x", "TRAILER!!!"));
}

TEST(CpioWriterTest, RegularFileFields) {
  CpioWriter w;
  AddTypical(w);
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  const CpioEntry* init = FindEntry(entries, "init");
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init->mode, static_cast<uint32_t>(S_IFREG | 0755));
  EXPECT_EQ(init->data, "#!/bin/sh\necho hi\n");
  EXPECT_EQ(init->filesize, 18u);
  EXPECT_EQ(init->nlink, 1u);
  EXPECT_EQ(init->namesize, 5u);
}

TEST(CpioWriterTest, OwnerMtimeAndInodes) {
  CpioWriter w;
  AddTypical(w);
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  for (size_t i = 0; i + 1 < entries.size(); ++i) {
    const CpioEntry& e = entries[i];
    EXPECT_EQ(e.ino, i + 1) << e.name;  // assigned in order
    EXPECT_EQ(e.uid, 0u) << e.name;
    EXPECT_EQ(e.gid, 0u) << e.name;
    EXPECT_EQ(e.mtime, 0u) << e.name;
    EXPECT_EQ(e.devmajor, 0u) << e.name;
    EXPECT_EQ(e.devminor, 0u) << e.name;
    EXPECT_EQ(e.check, 0u) << e.name;
  }
}

TEST(CpioWriterTest, SymlinkDataIsTarget) {
  CpioWriter w;
  AddTypical(w);
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  const CpioEntry* sh = FindEntry(entries, "bin/sh");
  ASSERT_NE(sh, nullptr);
  EXPECT_EQ(sh->mode, static_cast<uint32_t>(S_IFLNK | 0777));
  EXPECT_EQ(sh->data, "busybox");
  EXPECT_EQ(sh->filesize, 7u);
}

TEST(CpioWriterTest, DeviceNodeFields) {
  CpioWriter w;
  ASSERT_TRUE(w.AddDeviceNode("/dev/console", 'c', 5, 1, 0600).ok());
  ASSERT_TRUE(w.AddDeviceNode("/dev/vda", 'b', 254, 0x12345, 0660).ok());
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  const CpioEntry* console = FindEntry(entries, "dev/console");
  ASSERT_NE(console, nullptr);
  EXPECT_EQ(console->mode, static_cast<uint32_t>(S_IFCHR | 0600));
  EXPECT_EQ(console->rdevmajor, 5u);
  EXPECT_EQ(console->rdevminor, 1u);
  EXPECT_EQ(console->filesize, 0u);
  const CpioEntry* vda = FindEntry(entries, "dev/vda");
  ASSERT_NE(vda, nullptr);
  EXPECT_EQ(vda->mode, static_cast<uint32_t>(S_IFBLK | 0660));
  EXPECT_EQ(vda->rdevmajor, 254u);
  EXPECT_EQ(vda->rdevminor, 0x12345u);
  EXPECT_EQ(FindEntry(entries, "dev")->rdevmajor, 0u);
}

TEST(CpioWriterTest, BadDeviceTypeRefused) {
  CpioWriter w;
  EXPECT_EQ(w.AddDeviceNode("/dev/x", 'p', 1, 1, 0600).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpioWriterTest, ModeBitsMasked) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("f", Data("x"), 0100755).ok());  // type bits in mode are ignored
  ASSERT_TRUE(w.AddDirectory("tmp", 041777).ok());
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  EXPECT_EQ(FindEntry(entries, "f")->mode, static_cast<uint32_t>(S_IFREG | 0755));
  EXPECT_EQ(FindEntry(entries, "tmp")->mode, static_cast<uint32_t>(S_IFDIR | 01777));
}

TEST(CpioWriterTest, ExplicitDirectoryModeOverridesImplicitParent) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("etc/shadow", Data("root::0:::::")).ok());
  ASSERT_TRUE(w.AddDirectory("/etc/", 0700).ok());
  ASSERT_TRUE(w.AddDirectory("etc", 0750).ok());  // a directory may be given again
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  EXPECT_THAT(Names(entries), ElementsAre("etc", "etc/shadow", "TRAILER!!!"));
  EXPECT_EQ(entries[0].mode, static_cast<uint32_t>(S_IFDIR | 0750));
}

TEST(CpioWriterTest, PathsNormalised) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("///usr/bin/env/", Data("x")).ok());
  EXPECT_THAT(Names(ParseNewc(w.Finish())),
              ElementsAre("usr", "usr/bin", "usr/bin/env", "TRAILER!!!"));
}

TEST(CpioWriterTest, ReproducibleRegardlessOfInsertionOrder) {
  CpioWriter a;
  AddTypical(a);
  CpioWriter b;
  ASSERT_TRUE(b.AddDeviceNode("/dev/console", 'c', 5, 1, 0600).ok());
  ASSERT_TRUE(b.AddSymlink("/bin/sh", "busybox").ok());
  ASSERT_TRUE(b.AddFile("/bin/busybox", Data("ELF-ish"), 0755).ok());
  ASSERT_TRUE(b.AddFile("/init", Data("#!/bin/sh\necho hi\n"), 0755).ok());
  ASSERT_TRUE(b.AddDirectory("/proc").ok());
  EXPECT_EQ(a.Finish(), b.Finish());
  EXPECT_EQ(a.Finish(), a.Finish());
  absl::StatusOr<std::vector<uint8_t>> ga = a.FinishGzip();
  absl::StatusOr<std::vector<uint8_t>> gb = b.FinishGzip();
  ASSERT_TRUE(ga.ok() && gb.ok());
  EXPECT_EQ(*ga, *gb);
}

TEST(CpioWriterTest, PaddingForEveryDataLength) {
  CpioWriter w;
  for (int len = 0; len < 9; ++len) {
    ASSERT_TRUE(w.AddFile("f" + std::to_string(len), std::vector<uint8_t>(len, 'a' + len)).ok());
  }
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  ASSERT_EQ(entries.size(), 10u);
  for (int len = 0; len < 9; ++len) {
    EXPECT_EQ(entries[len].data, std::string(len, static_cast<char>('a' + len)));
  }
}

TEST(CpioWriterTest, DuplicatesRefused) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("/init", Data("a")).ok());
  EXPECT_EQ(w.AddFile("/init", Data("b")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(w.AddFile("init/", Data("b")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(w.AddSymlink("/init", "x").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(w.AddDirectory("/init").code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(w.AddDirectory("/bin").ok());
  EXPECT_EQ(w.AddFile("/bin", Data("b")).code(), absl::StatusCode::kAlreadyExists);
  // The first one stays.
  const std::vector<CpioEntry> entries = ParseNewc(w.Finish());
  const CpioEntry* init = FindEntry(entries, "init");
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init->data, "a");
}

TEST(CpioWriterTest, ChildOfNonDirectoryRefused) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("/init", Data("a")).ok());
  EXPECT_EQ(w.AddFile("/init/x", Data("b")).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(w.AddSymlink("/lib", "usr/lib").ok());
  EXPECT_EQ(w.AddFile("/lib/libc.so", Data("b")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Names(ParseNewc(w.Finish())), ElementsAre("init", "lib", "TRAILER!!!"));
}

TEST(CpioWriterTest, BadPathsRefused) {
  CpioWriter w;
  for (const char* path : {"", "/", "//", "..", "/../etc/passwd", "a/../b", "a/..", "./a", "a/./b",
                           "a//b"}) {
    EXPECT_EQ(w.AddFile(path, Data("x")).code(), absl::StatusCode::kInvalidArgument) << path;
  }
  EXPECT_EQ(w.AddSymlink("/x", "").code(), absl::StatusCode::kInvalidArgument);
  // Nothing was added by the failed calls.
  EXPECT_THAT(Names(ParseNewc(w.Finish())), ElementsAre("TRAILER!!!"));
}

TEST(CpioWriterTest, DotsInsideNamesAreFine) {
  CpioWriter w;
  ASSERT_TRUE(w.AddFile("/etc/..hidden", Data("x")).ok());
  ASSERT_TRUE(w.AddFile("/lib/ld-2.31.so", Data("x")).ok());
  EXPECT_THAT(Names(ParseNewc(w.Finish())),
              ElementsAre("etc", "etc/..hidden", "lib", "lib/ld-2.31.so", "TRAILER!!!"));
}

std::vector<uint8_t> Gunzip(const std::vector<uint8_t>& gz) {
  z_stream zs = {};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  std::vector<uint8_t> out;
  zs.next_in = const_cast<Bytef*>(gz.data());
  zs.avail_in = static_cast<uInt>(gz.size());
  int r = Z_OK;
  while (r == Z_OK) {
    uint8_t buf[4096];
    zs.next_out = buf;
    zs.avail_out = sizeof(buf);
    r = inflate(&zs, Z_NO_FLUSH);
    out.insert(out.end(), buf, buf + (sizeof(buf) - zs.avail_out));
  }
  EXPECT_EQ(r, Z_STREAM_END);
  EXPECT_EQ(zs.avail_in, 0u) << "trailing bytes after the gzip stream";
  inflateEnd(&zs);
  return out;
}

TEST(CpioWriterTest, FinishGzipInflatesToFinish) {
  CpioWriter w;
  AddTypical(w);
  std::vector<uint8_t> big(100000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  ASSERT_TRUE(w.AddFile("/big", big).ok());
  absl::StatusOr<std::vector<uint8_t>> gz = w.FinishGzip();
  ASSERT_TRUE(gz.ok()) << gz.status();
  ASSERT_GE(gz->size(), 18u);
  EXPECT_EQ((*gz)[0], 0x1f);
  EXPECT_EQ((*gz)[1], 0x8b);
  EXPECT_EQ((*gz)[2], 8);  // deflate
  // Header mtime is 0: the output does not depend on when it was made.
  EXPECT_THAT(std::vector<uint8_t>(gz->begin() + 4, gz->begin() + 8), ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(Gunzip(*gz), w.Finish());
}

TEST(CpioWriterTest, FinishGzipOfEmptyArchive) {
  absl::StatusOr<std::vector<uint8_t>> gz = CpioWriter().FinishGzip();
  ASSERT_TRUE(gz.ok());
  EXPECT_EQ(Gunzip(*gz), CpioWriter().Finish());
}

}  // namespace
}  // namespace vessel
