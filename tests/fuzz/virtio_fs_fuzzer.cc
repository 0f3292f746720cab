// libFuzzer target: FUSE request parsing and dispatch (every opcode) in the virtio-fs server over a
// scratch share, with a canary directory beside it that must never change.
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_virtio_fs_fuzzer
// Run:           build-fuzz/tests/fuzz/vessel_virtio_fs_fuzzer -max_total_time=60
//
// Input: a sequence of records [u16 length][u16 reply capacity][length bytes of request]; each
// request goes to FuseServer::HandleRequest as is (lengths, names, nodeids, handles all fuzzed).
// A FUSE_INIT is sent first so every opcode is reachable; nodeids (2, 3, ...) and fhs (1, 2, ...)
// are small counters the fuzzer finds quickly. FALLOCATE lengths are clamped to 1 MiB so the
// fuzzer cannot fill the disk. After each input the share is emptied and rebuilt.
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
  size_t pos = 0;
  std::vector<uint8_t> request;
  while (size - pos >= 4) {
    uint16_t len, cap;
    std::memcpy(&len, data + pos, 2);
    std::memcpy(&cap, data + pos + 2, 2);
    pos += 4;
    len = static_cast<uint16_t>(std::min<size_t>(len, size - pos));
    request.assign(data + pos, data + pos + len);
    pos += len;
    if (request.size() >= sizeof(fuse_in_header) + sizeof(fuse_fallocate_in)) {
      fuse_in_header h;
      std::memcpy(&h, request.data(), sizeof(h));
      if (h.opcode == FUSE_FALLOCATE) {
        fuse_fallocate_in fa;
        std::memcpy(&fa, request.data() + sizeof(h), sizeof(fa));
        fa.length &= (1u << 20) - 1;
        fa.offset &= (1u << 20) - 1;
        std::memcpy(request.data() + sizeof(h), &fa, sizeof(fa));
      }
    }
    vessel::fs::BufferSink sink(cap);
    const uint32_t used = server->HandleRequest(request, sink);
    if (used != sink.data().size() || used > cap) abort();
  }
  server->Reset();
  CheckOutside(sc);
  return 0;
}
