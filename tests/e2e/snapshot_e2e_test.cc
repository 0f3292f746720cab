// Snapshot and restore with the real guest as the peer (in process, one boot): the busybox test
// image runs a shell as PID 1 on the console; the host drives it by console input. The guest
// writes a marker to its virtio-blk disk, the host pauses and snapshots the VM and stops it, then
// restores it: the restored guest's shell, console, user-mode syscalls (kvm_pvm's compat profile)
// and virtio-blk queue carry on, the marker reads back from the device after dropping the guest's
// caches, and a write after the restore reaches the host file. ~1 minute on kvm_pvm.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "vmm/machine.h"

namespace vessel {
namespace {

class Console {
 public:
  std::function<void(absl::string_view)> Sink() {
    return [this](absl::string_view s) {
      std::lock_guard lock(mu_);
      text_.append(s.data(), s.size());
    };
  }
  // Waits until `needle` appears after `from`; returns its end offset or npos.
  size_t WaitFor(const std::string& needle, size_t from, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        size_t at = text_.find(needle, std::min(from, text_.size()));
        if (at != std::string::npos) return at + needle.size();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::string::npos;
  }
  std::string Text() {
    std::lock_guard lock(mu_);
    return text_;
  }
  size_t Size() {
    std::lock_guard lock(mu_);
    return text_.size();
  }

 private:
  std::mutex mu_;
  std::string text_;
};

std::string FileBytes(const std::string& path, size_t offset, size_t len) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(len, '\0');
  in.read(out.data(), static_cast<std::streamsize>(len));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

TEST(SnapshotE2eTest, RestoredGuestKeepsItsShellConsoleAndDisk) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  const std::string guest = VESSEL_GUEST_DIR;
  char tmpl[] = "/tmp/vessel-snapshot-e2e-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string disk = dir + "/disk.img";
  { std::ofstream(disk, std::ios::binary) << std::string(1 << 20, '\0'); }

  auto config = [&](Console& console) {
    MachineConfig c;
    c.mem_mib = 256;
    c.kernel_path = guest + "/vmlinux";
    c.initrd_path = guest + "/test-initramfs.cpio";
    c.extra_cmdline = "rdinit=/bin/sh";
    c.console_sink = console.Sink();
    block::BlockConfig b;
    b.path = disk;
    c.disks.push_back(b);
    return c;
  };
  // Console input echoes back; markers are built by the shell ($((...))) so only its output matches.
  Console before;
  {
    absl::StatusOr<std::unique_ptr<Machine>> m = Machine::Create(config(before));
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_TRUE((*m)->Start().ok());
    // The shell (PID 1) reads commands from the console once it runs; input sent while the
    // kernel still boots is lost, so ask again every few seconds.
    size_t at = std::string::npos;
    for (int attempt = 0; attempt < 60 && at == std::string::npos; ++attempt) {
      (*m)->SendConsoleInput("echo READY$((40+2))\n");
      at = before.WaitFor("READY42", 0, std::chrono::seconds(5));
    }
    ASSERT_NE(at, std::string::npos) << "no shell on the console:\n" << before.Text();
    (*m)->SendConsoleInput(
        "/bin/busybox mount -t devtmpfs dev /dev; /bin/busybox mount -t proc proc /proc; "
        "echo vessel-before-snapshot > /dev/vda && /bin/busybox sync && echo WROTE$((1+1))\n");
    at = before.WaitFor("WROTE2", at, std::chrono::seconds(120));
    ASSERT_NE(at, std::string::npos) << before.Text();
    ASSERT_TRUE((*m)->Pause().ok());
    absl::StatusOr<SnapshotInfo> info = (*m)->SaveSnapshot(dir + "/snap");
    ASSERT_TRUE(info.ok()) << info.status();
    std::printf("# bench: snapshot of a 256 MiB guest: %llu MiB of data, %llu-byte state, %lld ms\n",
                static_cast<unsigned long long>(info->memory_data_bytes >> 20),
                static_cast<unsigned long long>(info->state_bytes),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(info->took).count()));
    (*m)->Stop();
    (*m)->Wait();
  }
  EXPECT_EQ(FileBytes(disk, 0, 22), "vessel-before-snapshot");

  Console after;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Machine>> r = Machine::Restore(config(after), dir + "/snap");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Start().ok());
  (*r)->SendConsoleInput(
      "echo 3 > /proc/sys/vm/drop_caches; /bin/busybox head -c 22 /dev/vda; echo; "
      "echo vessel-after-restore | /bin/busybox dd of=/dev/vda bs=512 seek=8 conv=fsync 2>/dev/null; "
      "echo DONE$((2+3))\n");
  size_t at = after.WaitFor("DONE5", 0, std::chrono::seconds(120));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(at, std::string::npos) << "the restored guest did not answer:\n" << after.Text();
  std::printf("# bench: restore to the first console command done: %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  const std::string out = after.Text();
  // The restored command line does not contain the marker: only the device's bytes can.
  EXPECT_TRUE(absl::StrContains(out, "vessel-before-snapshot"))
      << "the marker written before the snapshot reads back from the device:\n" << out;
  EXPECT_EQ(FileBytes(disk, 4096, 20), "vessel-after-restore") << "a write after the restore reached the disk";
  (*r)->Stop();
  (*r)->Wait();
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace vessel
