// libFuzzer target: FUSE request parsing and dispatch (every opcode) in the virtio-fs server over a
// scratch share, with a canary directory beside it that must never change.
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_virtio_fs_fuzzer
// Run:           build-fuzz/tests/fuzz/vessel_virtio_fs_fuzzer -max_total_time=60
//
// Input: a sequence of records [opcode selector][nodeid][flags][u16 reply capacity][arg length]
// [arg bytes]: the selector picks one of the FUSE opcodes (or, >= 0xf0, is the raw opcode), the
// fuse_in_header is built around the fuzzed arguments with the right len (flags bit 0: a wrong
// one), so the fuzzer reaches deep into each operation quickly; names, nodeids, handles, sizes and
// offsets are all fuzzed. A FUSE_INIT is sent first; nodeids (2, 3, ...) and fhs (1, 2, ...) are
// small counters. FALLOCATE lengths are clamped to 1 MiB so the fuzzer cannot fill the disk.
// After each input the share is emptied and rebuilt, and the canary beside it checked.
#include <linux/fuse.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "devices/fs/fuse_server.h"

namespace {

struct Scratch {
  std::string root;
  std::string share;
  std::string outside;
};

Scratch& GetScratch() {
  static Scratch* s = [] {
    auto* sc = new Scratch;
    std::string t = "/tmp/vessel-fs-fuzz-XXXXXX";
    if (mkdtemp(t.data()) == nullptr) abort();
    sc->root = t;
    sc->share = t + "/share";
    sc->outside = t + "/outside";
    std::filesystem::create_directory(sc->share);
    std::filesystem::create_directory(sc->outside);
    std::ofstream(sc->outside + "/canary") << "canary";
    return sc;
  }();
  return *s;
}

void Populate(const Scratch& sc) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sc.share, ec)) {
    std::filesystem::remove_all(e.path(), ec);
  }
  std::ofstream(sc.share + "/f") << "0123456789";
  std::filesystem::create_directory(sc.share + "/d", ec);
  std::ofstream(sc.share + "/d/g") << "inner";
  std::filesystem::create_symlink(sc.outside, sc.share + "/out", ec);
  std::filesystem::create_symlink("/etc", sc.share + "/etc", ec);
}

void CheckOutside(const Scratch& sc) {
  size_t entries = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sc.outside, ec)) {
    (void)e;
    ++entries;
  }
  std::ifstream f(sc.outside + "/canary");
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (entries != 1 || content != "canary") {
    std::fprintf(stderr, "virtio-fs fuzzer: the directory beside the share changed\n");
    abort();
  }
}

std::vector<uint8_t> InitRequest() {
  struct {
    fuse_in_header h;
    fuse_init_in in;
  } r = {};
  r.h.len = sizeof(r);
  r.h.opcode = FUSE_INIT;
  r.h.unique = 1;
  r.in.major = FUSE_KERNEL_VERSION;
  r.in.minor = FUSE_KERNEL_MINOR_VERSION;
  r.in.flags = FUSE_DO_READDIRPLUS | FUSE_BIG_WRITES | FUSE_MAX_PAGES;
  std::vector<uint8_t> out(sizeof(r));
  std::memcpy(out.data(), &r, sizeof(r));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Scratch& sc = GetScratch();
  static vessel::fs::FuseServer* server = [&] {
    vessel::fs::FsConfig config;
    config.tag = "fuzz";
    config.shared_dir = sc.share;
    config.max_inodes = 64;
    config.max_handles = 16;
    return vessel::fs::FuseServer::Create(config, 64 * 1024).value().release();
  }();
  Populate(sc);
  {
    vessel::fs::BufferSink sink(4096);
    server->HandleRequest(InitRequest(), sink);
  }
  static constexpr uint32_t kOpcodes[] = {
      FUSE_LOOKUP,       FUSE_FORGET,    FUSE_GETATTR,     FUSE_SETATTR,   FUSE_READLINK,
      FUSE_SYMLINK,      FUSE_MKNOD,     FUSE_MKDIR,       FUSE_UNLINK,    FUSE_RMDIR,
      FUSE_RENAME,       FUSE_LINK,      FUSE_OPEN,        FUSE_READ,      FUSE_WRITE,
      FUSE_STATFS,       FUSE_RELEASE,   FUSE_FSYNC,       FUSE_SETXATTR,  FUSE_GETXATTR,
      FUSE_FLUSH,        FUSE_INIT,      FUSE_OPENDIR,     FUSE_READDIR,   FUSE_RELEASEDIR,
      FUSE_FSYNCDIR,     FUSE_ACCESS,    FUSE_CREATE,      FUSE_INTERRUPT, FUSE_DESTROY,
      FUSE_BATCH_FORGET, FUSE_FALLOCATE, FUSE_READDIRPLUS, FUSE_RENAME2,   FUSE_LSEEK};
  constexpr size_t kRecordHeader = 6;
  size_t pos = 0;
  uint64_t unique = 2;
  std::vector<uint8_t> request;
  while (size - pos >= kRecordHeader) {
    const uint8_t* r = data + pos;
    const uint32_t opcode =
        r[0] >= 0xf0 ? r[0] : kOpcodes[r[0] % (sizeof(kOpcodes) / sizeof(kOpcodes[0]))];
    uint16_t cap;
    std::memcpy(&cap, r + 3, 2);
    const size_t arg_len = std::min<size_t>(r[5], size - pos - kRecordHeader);
    pos += kRecordHeader;
    fuse_in_header h = {};
    h.len = static_cast<uint32_t>(sizeof(h) + arg_len);
    if (r[2] & 1) h.len ^= r[2];  // a len that disagrees with the bytes
    h.opcode = opcode;
    h.unique = unique++;
    h.nodeid = r[1];
    request.resize(sizeof(h) + arg_len);
    std::memcpy(request.data(), &h, sizeof(h));
    if (arg_len > 0) std::memcpy(request.data() + sizeof(h), data + pos, arg_len);
    pos += arg_len;
    if (opcode == FUSE_FALLOCATE && arg_len >= sizeof(fuse_fallocate_in)) {
      fuse_fallocate_in fa;
      std::memcpy(&fa, request.data() + sizeof(h), sizeof(fa));
      fa.length &= (1u << 20) - 1;
      fa.offset &= (1u << 20) - 1;
      std::memcpy(request.data() + sizeof(h), &fa, sizeof(fa));
    }
    vessel::fs::BufferSink sink(r[2] & 2 ? cap : 64 * 1024 + 16);
    const uint32_t used = server->HandleRequest(request, sink);
    if (used != sink.data().size() || used > sink.capacity()) abort();
  }
  server->Reset();
  CheckOutside(sc);
  return 0;
}
