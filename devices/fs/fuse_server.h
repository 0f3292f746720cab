// FuseServer: an in-process FUSE passthrough server over one host directory (the share), fed one
// request at a time: the bytes of a request (fuse_in_header + arguments, as the guest's virtio-fs
// driver gathered them in a chain's readable buffers) in, the reply (fuse_out_header + data) out
// into a bounded ReplySink (the chain's writable buffers). It knows nothing about virtqueues.
//
// Confinement is structural, not by path checks:
//   - every inode is an O_PATH|O_NOFOLLOW fd; every operation is an *at() call on the parent's fd
//     with a single name component (names with '/', "." or "..", empty or longer than 255 bytes,
//     or not NUL-terminated are refused with EINVAL; the root's ".." is the root);
//   - symlinks are never followed on the host: LOOKUP returns the link itself, opening one is
//     ELOOP, creation uses O_NOFOLLOW|O_EXCL or openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS);
//   - a file is opened by reopening its inode's O_PATH fd through /proc/self/fd (the exact inode,
//     never a path walk) after checking it is not a symlink;
//   - nodeids only come from lookups, so the guest cannot name anything outside the share.
// Every byte of a request is untrusted: bad lengths, names, nodeids and handles get an errno
// reply; a sink that cannot hold a fuse_out_header gets nothing (counted).
//
// Thread-safe: the inode and handle tables are under a mutex, system calls run outside it.
#ifndef VESSEL_DEVICES_FS_FUSE_SERVER_H_
#define VESSEL_DEVICES_FS_FUSE_SERVER_H_

#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "devices/fs/fs_config.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::fs {

// Where a reply goes: at most capacity() bytes, written in order.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual uint64_t capacity() const = 0;
  // Appends `len` bytes; the server never writes more than capacity() in total.
  virtual absl::Status Write(const void* data, uint64_t len) = 0;

  // Zero-copy (READ): host buffers for the reply bytes [offset, offset + len) (counted from the
  // start of the reply, nothing written yet), so file data can be read straight into them before
  // the header is written. False when the sink has none; the server then copies.
  virtual bool PayloadBuffers(uint64_t /*offset*/, uint64_t /*len*/, std::vector<iovec>* /*iov*/) {
    return false;
  }
  // After Write(header): the next `len` bytes were already filled through PayloadBuffers.
  virtual absl::Status Advance(uint64_t /*len*/) {
    return absl::UnimplementedError("this reply sink has no payload buffers");
  }
};

// A ReplySink over a host buffer (tests, the fuzzer, the benchmark).
class BufferSink : public ReplySink {
 public:
  explicit BufferSink(uint64_t capacity) : capacity_(capacity) {}
  uint64_t capacity() const override { return capacity_; }
  absl::Status Write(const void* data, uint64_t len) override;
  const std::vector<uint8_t>& data() const { return data_; }
  void Clear() { data_.clear(); }

 private:
  uint64_t capacity_;
  std::vector<uint8_t> data_;
};

struct FuseCounters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> error_replies{0};  // replies with a non-zero error
  std::atomic<uint64_t> malformed{0};      // bad lengths, names, unknown nodeids / handles
  std::atomic<uint64_t> unanswerable{0};   // sink too small for a fuse_out_header
  std::atomic<uint64_t> unsupported{0};    // ENOSYS
  std::atomic<uint64_t> table_full{0};     // ENFILE from the inode or handle table
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> reads_in_place{0};  // READs read straight into the sink's buffers
  std::atomic<uint64_t> bytes_written{0};
};

// What a FUSE session carries across a snapshot (FsState): whether FUSE_INIT was answered, what
// it negotiated, and where nodeid / handle numbering stands (so that ids handed out after a
// restore never collide with ids the guest still holds from before).
struct FuseSession {
  bool initialized = false;
  uint32_t minor = 0;      // negotiated FUSE 7.x minor
  uint32_t max_write = 0;  // what INIT told the guest
  uint32_t flags = 0;      // init flags granted
  uint64_t next_nodeid = 0;
  uint64_t next_fh = 0;
};

class FuseServer {
 public:
  static constexpr uint32_t kOurMinor = 38;  // highest FUSE 7.x we speak (<linux/fuse.h> >= that)
  static constexpr uint32_t kDefaultMaxWrite = 1 << 20;
  static constexpr uint32_t kMaxNameBytes = 255;
  static constexpr uint32_t kMaxSymlinkBytes = 4095;

  // Opens `config.shared_dir` (a directory) and /proc/self/fd. `max_write` bounds WRITE payloads
  // and READ sizes (the device passes what its queues' buffers can carry).
  static absl::StatusOr<std::unique_ptr<FuseServer>> Create(const FsConfig& config,
                                                            uint32_t max_write = kDefaultMaxWrite);

  // Handles one request. Returns the bytes written into `out` (the used length): 0 for requests
  // that take no reply (FORGET, BATCH_FORGET, INTERRUPT) and when `out` cannot hold a reply.
  uint32_t HandleRequest(absl::Span<const uint8_t> in, ReplySink& out);

  // Back to the state before INIT: closes every handle and forgets every inode but the root.
  void Reset();

  // --- Snapshot (FsState) ---
  FuseSession session() const;
  // On a server that has not answered INIT yet: continues `session` as a restarted FUSE daemon
  // would, without a new INIT. Only the root node exists; a nodeid from before the restore that is
  // not known answers ESTALE (the guest's VFS then re-walks the path from the root: new LOOKUPs),
  // a handle from before EBADF. FailedPrecondition when this configuration could not have
  // negotiated `session` (flags it does not grant, e.g. WRITEBACK_CACHE without `writeback`, or a
  // larger max_write), InvalidArgument for impossible values.
  absl::Status RestoreSession(const FuseSession& session);

  size_t inode_count() const;
  size_t handle_count() const;
  uint64_t lookup_count(uint64_t nodeid) const;  // 0 when unknown (root counts from 1)
  const FuseCounters& counters() const { return counters_; }
  const FsConfig& config() const { return config_; }
  uint32_t max_write() const { return max_write_; }

 private:
  struct Inode {
    ScopedFd fd;  // O_PATH|O_NOFOLLOW
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;  // S_IFMT bits
    uint64_t nlookup = 0;
  };
  struct Handle {
    ScopedFd fd;
    bool dir = false;
    std::mutex mu;  // directory reads: lseek + getdents
  };
  struct Request;  // one request being parsed
  struct Reply;

  FuseServer(FsConfig config, uint32_t max_write, ScopedFd root, ScopedFd proc_fd,
             const struct stat& root_st);

  std::shared_ptr<Inode> GetInode(uint64_t nodeid) const;
  std::shared_ptr<Handle> GetHandle(uint64_t fh) const;
  // Looks `name` up in `parent` and takes a lookup reference; fills `out`. errno on failure.
  int DoLookup(const Inode& parent, const char* name, fuse_entry_out* out);
  void Forget(uint64_t nodeid, uint64_t nlookup);
  int AddHandle(ScopedFd fd, bool dir, uint64_t* fh);
  // Reopens the inode's file with `flags` (never a symlink); returns the fd or -errno.
  int Reopen(const Inode& inode, int flags) const;
  std::string ProcPath(const Inode& inode) const;
  void FillEntry(uint64_t nodeid, const struct stat& st, fuse_entry_out* out) const;
  int Stat(const Inode& inode, struct stat* st) const;

  // Operations: each returns 0 (reply payload in `reply`) or an errno.
  int OpInit(Request& rq, Reply& reply);
  // The init flags this configuration grants when the guest offers them.
  uint32_t GrantableInitFlags() const;
  int OpLookup(Request& rq, Reply& reply);
  int OpGetattr(Request& rq, Reply& reply);
  int OpSetattr(Request& rq, Reply& reply);
  int OpReadlink(Request& rq, Reply& reply);
  int OpSymlink(Request& rq, Reply& reply);
  int OpMknod(Request& rq, Reply& reply);
  int OpMkdir(Request& rq, Reply& reply);
  int OpUnlink(Request& rq, bool dir);
  int OpRename(Request& rq, bool v2);
  int OpLink(Request& rq, Reply& reply);
  int OpOpen(Request& rq, Reply& reply, bool dir);
  int OpCreate(Request& rq, Reply& reply);
  int OpRead(Request& rq, Reply& reply);
  int OpWrite(Request& rq, Reply& reply);
  int OpFlush(Request& rq);
  int OpRelease(Request& rq);
  int OpFsync(Request& rq);
  int OpReaddir(Request& rq, Reply& reply, bool plus);
  int OpStatfs(Request& rq, Reply& reply);
  int OpAccess(Request& rq);
  int OpFallocate(Request& rq);
  int OpLseek(Request& rq, Reply& reply);
  void OpForget(Request& rq);
  void OpBatchForget(Request& rq);

  uint32_t Send(uint64_t unique, int error, const Reply* reply, ReplySink& out);
  // Running as root: gives the node just created as `name` in `parent` to the requesting guest
  // uid/gid (the owner the guest kernel expects), as virtiofsd does with setfsuid.
  void OwnByCaller(const Request& rq, const Inode& parent, const char* name);
  // Builds the entry reply of a node just created as `name` in `parent`.
  int EntryAfterCreate(const Inode& parent, const char* name, Reply& reply);

  const FsConfig config_;
  const uint32_t max_write_;
  ScopedFd proc_fd_;  // /proc/self/fd, O_PATH
  uint64_t entry_timeout_s_;
  const bool as_root_;  // euid 0: created nodes are chowned to the requesting uid/gid
  std::atomic<bool> have_openat2_{true};  // cleared when the host kernel lacks openat2

  mutable std::mutex mu_;
  bool initialized_ = false;  // guarded by mu_
  uint32_t minor_ = 0;        // negotiated minor
  uint32_t init_flags_ = 0;   // granted init flags
  uint64_t stale_below_ = 0;  // restored session: unknown nodeids below this are from before
  absl::flat_hash_map<uint64_t, std::shared_ptr<Inode>> inodes_;
  std::map<std::pair<dev_t, ino_t>, uint64_t> by_dev_ino_;
  uint64_t next_nodeid_ = FUSE_ROOT_ID + 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Handle>> handles_;
  uint64_t next_fh_ = 1;

  mutable FuseCounters counters_;
  RateLimiter log_;
};

}  // namespace vessel::fs

#endif  // VESSEL_DEVICES_FS_FUSE_SERVER_H_
