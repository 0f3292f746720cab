// End to end: the Linux guest mounts a vessel virtio-fs share (inline FUSE server in the VMM) and
// works on it — create/write/append/truncate, mkdir/rmdir, rename (also over a file), hard and
// symbolic links, chmod/chown, a 16 MiB file, a 1000-entry directory, and a file the host changes
// mid-test seen under cache=auto — then the host checks every file the guest wrote and that
// nothing beside the share changed. One boot; minutes on kvm_pvm; labelled e2e.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/e2e/host_side.h"

namespace vessel::e2e {
namespace {

namespace fsys = std::filesystem;
constexpr int kTapLines = 14;  // 4 base + 10 fs

std::string Slurp(const fsys::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string HashFile(const fsys::path& p) {
  std::ifstream in(p, std::ios::binary);
  probe::Fnv1a64 hash;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    hash.Update(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(in.gcount()));
  }
  return absl::StrCat("bytes=", hash.bytes(), " hash=", Hex(hash.hash()));
}

TEST(FsE2eTest, GuestWorksOnTheShareAndTheHostSeesIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the guest's chown reaches the host)";
  const fsys::path root = fsys::temp_directory_path() / absl::StrCat("vessel-fs-e2e-", ::getpid());
  const fsys::path share = root / "share";
  const fsys::path outside = root / "outside";
  fsys::remove_all(root);
  fsys::create_directories(share / "many");
  fsys::create_directories(outside);
  std::ofstream(outside / "sentinel") << "untouched\n";
  std::ofstream(share / "host.txt") << "host-v1\n";
  for (int i = 0; i < 1000; ++i) std::ofstream(share / "many" / absl::StrCat("f", i)) << i;

  const std::string guest = VESSEL_GUEST_DIR;
  VmmProcess vmm({VESSEL_VMM_BINARY, "--kernel=" + guest + "/vmlinux",
                  "--initrd=" + guest + "/test-initramfs.cpio", "--mem-mib=256",
                  "--share=share0=" + share.string() + ",cache=auto",
                  "--append=vessel_test_cpus=1 vessel_test_mem_mib=256 vessel.token=fs vessel_test_fs=1"});
  bool changed = false;
  bool ended = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1500);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!vmm.Pump(500, /*echo=*/true)) {
      ended = true;
      break;
    }
    if (!changed && vmm.Saw("vessel-test: fs waiting for the host to change host.txt")) {
      std::ofstream(share / "host.txt", std::ios::trunc) << "host-v2\n";
      EXPECT_TRUE(vmm.WriteLine("changed"));
      changed = true;
    }
  }
  if (!ended) {
    vmm.Kill();
    ADD_FAILURE() << "timed out";
  }
  EXPECT_EQ(vmm.Wait(), 0) << "vessel-vmm exit status";
  const std::string& out = vmm.output();
  EXPECT_NE(out.find(absl::StrCat("1..", kTapLines)), std::string::npos);
  for (int i = 1; i <= kTapLines; ++i) {
    EXPECT_TRUE(std::regex_search(out, std::regex(absl::StrCat("\\nok ", i, " - "))))
        << "TAP " << i << " missing or not ok";
  }
  EXPECT_EQ(out.find("not ok"), std::string::npos);

  // What the guest wrote, as the host sees it.
  EXPECT_EQ(Slurp(share / "a.txt"), "hello\nworld\n");
  EXPECT_EQ(Slurp(share / "trunc.txt"), "0123");
  EXPECT_TRUE(fsys::is_directory(share / "d1renamed"));
  EXPECT_FALSE(fsys::exists(share / "d1"));
  EXPECT_FALSE(fsys::exists(share / "d2"));
  EXPECT_EQ(Slurp(share / "target.txt"), "new\n");
  EXPECT_FALSE(fsys::exists(share / "src.txt"));
  struct stat a{}, hard{}, owned{};
  ASSERT_EQ(::stat((share / "a.txt").c_str(), &a), 0);
  ASSERT_EQ(::stat((share / "a.hard").c_str(), &hard), 0);
  EXPECT_EQ(a.st_ino, hard.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_TRUE(fsys::is_symlink(share / "a.sym"));
  EXPECT_EQ(fsys::read_symlink(share / "a.sym"), "a.txt");
  ASSERT_EQ(::stat((share / "owned.txt").c_str(), &owned), 0);
  EXPECT_EQ(owned.st_mode & 07777, 0640u);
  EXPECT_EQ(owned.st_uid, 1234u);
  EXPECT_EQ(owned.st_gid, 5678u);
  EXPECT_EQ(HashFile(share / "big.bin"), ExpectedStream(3, 16ull << 20));
  EXPECT_NE(out.find("# fs_host_txt before=host-v1 after=host-v2"), std::string::npos);
  // Nothing beside the share changed.
  EXPECT_EQ(Slurp(outside / "sentinel"), "untouched\n");
  EXPECT_EQ(std::distance(fsys::directory_iterator(outside), fsys::directory_iterator()), 1);
  EXPECT_EQ(std::distance(fsys::directory_iterator(root), fsys::directory_iterator()), 2);
  fsys::remove_all(root);
}

}  // namespace
}  // namespace vessel::e2e
