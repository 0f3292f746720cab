// Helpers for the virtio-fs tests: a scratch share with an "outside" sibling, and FUSE request
// builders.
#ifndef VESSEL_TESTS_DEVICES_FS_TEST_UTIL_H_
#define VESSEL_TESTS_DEVICES_FS_TEST_UTIL_H_

#include <linux/fuse.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vessel::fs::testing {

// Request argument bytes, appended piece by piece.
class Args {
 public:
  template <typename T>
  Args& Add(const T& value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  // The name and its NUL.
  Args& Name(const std::string& name) {
    bytes_.insert(bytes_.end(), name.begin(), name.end());
    bytes_.push_back(0);
    return *this;
  }
  Args& Raw(const std::string& raw) {
    bytes_.insert(bytes_.end(), raw.begin(), raw.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// fuse_in_header (len = header + args) followed by the arguments.
inline std::vector<uint8_t> BuildRequest(uint32_t opcode, uint64_t nodeid, const Args& args,
                                         uint64_t unique = 7) {
  fuse_in_header h = {};
  h.len = static_cast<uint32_t>(sizeof(h) + args.bytes().size());
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = nodeid;
  h.uid = 0;
  h.gid = 0;
  h.pid = 1;
  std::vector<uint8_t> out(h.len);
  std::memcpy(out.data(), &h, sizeof(h));
  if (!args.bytes().empty()) {
    std::memcpy(out.data() + sizeof(h), args.bytes().data(), args.bytes().size());
  }
  return out;
}

inline fuse_init_in InitIn(uint32_t major = 7, uint32_t minor = 38) {
  fuse_init_in in = {};
  in.major = major;
  in.minor = minor;
  in.max_readahead = 128 * 1024;
  in.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
             FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_WRITEBACK_CACHE | FUSE_EXPORT_SUPPORT |
             FUSE_POSIX_LOCKS;
  return in;
}

// <tmp>/vessel-fs-XXXXXX/{share,outside}; outside/secret holds "secret". Removed on destruction.
class ScratchShare {
 public:
  ScratchShare() {
    std::string t = ::testing::TempDir() + "/vessel-fs-XXXXXX";
    if (mkdtemp(t.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    root_ = t;
    std::filesystem::create_directory(share());
    std::filesystem::create_directory(outside());
    WriteFile(outside() + "/secret", "secret");
  }
  ~ScratchShare() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  std::string share() const { return root_ + "/share"; }
  std::string outside() const { return root_ + "/outside"; }

  static void WriteFile(const std::string& path, const std::string& content);
  static std::string ReadFile(const std::string& path);
  // "name:size:content" of every entry under `dir`, sorted (nothing outside may change).
  static std::string Snapshot(const std::string& dir);

 private:
  std::string root_;
};

}  // namespace vessel::fs::testing

#endif  // VESSEL_TESTS_DEVICES_FS_TEST_UTIL_H_
