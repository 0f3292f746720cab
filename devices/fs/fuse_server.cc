#include "devices/fs/fuse_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/base/errors.h"

namespace vessel::fs {
namespace {

constexpr uint32_t kTimeGranNs = 1;
constexpr uint64_t kReaddirBufferBytes = 64 * 1024;

int OpenBeneath(int dirfd, const char* name, int flags, mode_t mode,
                std::atomic<bool>* have_openat2) {
  if (have_openat2->load(std::memory_order_relaxed)) {
    open_how how = {};
    how.flags = static_cast<uint64_t>(flags);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
    long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
    if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    have_openat2->store(false, std::memory_order_relaxed);
  }
  // Single component (checked by the caller) + O_NOFOLLOW: nothing can lead outside `dirfd`.
  return openat(dirfd, name, flags | O_NOFOLLOW, mode);
}

fuse_attr ToAttr(const struct stat& st) {
  fuse_attr a = {};
  a.ino = st.st_ino;
  a.size = static_cast<uint64_t>(st.st_size);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink = static_cast<uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = static_cast<uint32_t>(st.st_rdev);
  a.blksize = static_cast<uint32_t>(st.st_blksize);
  return a;
}

bool IsWriteOpcode(uint32_t opcode) {
  switch (opcode) {
    case FUSE_SETATTR:
    case FUSE_SYMLINK:
    case FUSE_MKNOD:
    case FUSE_MKDIR:
    case FUSE_UNLINK:
    case FUSE_RMDIR:
    case FUSE_RENAME:
    case FUSE_RENAME2:
    case FUSE_LINK:
    case FUSE_CREATE:
    case FUSE_WRITE:
    case FUSE_FALLOCATE:
    case FUSE_SETXATTR:
    case FUSE_REMOVEXATTR:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status BufferSink::Write(const void* data, uint64_t len) {
  if (len > capacity_ - data_.size()) return absl::OutOfRangeError("reply sink full");
  const auto* p = static_cast<const uint8_t*>(data);
  data_.insert(data_.end(), p, p + len);
  return absl::OkStatus();
}

// The arguments of one request: a cursor over the bytes after fuse_in_header.
struct FuseServer::Request {
  fuse_in_header header;
  absl::Span<const uint8_t> args;
  size_t pos = 0;
  bool malformed = false;
  uint64_t reply_room = 0;  // payload bytes the sink can take after fuse_out_header
  ReplySink* sink = nullptr;

  template <typename T>
  bool Get(T* value) {
    if (args.size() - pos < sizeof(T)) {
      malformed = true;
      return false;
    }
    std::memcpy(value, args.data() + pos, sizeof(T));
    pos += sizeof(T);
    return true;
  }
  // A NUL-terminated string of 1..max_len bytes; nullptr when malformed.
  const char* String(size_t max_len) {
    const uint8_t* start = args.data() + pos;
    const size_t left = args.size() - pos;
    const void* nul = std::memchr(start, '\0', std::min(left, max_len + 1));
    if (nul == nullptr || nul == start) {
      malformed = true;
      return nullptr;
    }
    pos += static_cast<size_t>(static_cast<const uint8_t*>(nul) - start) + 1;
    return reinterpret_cast<const char*>(start);
  }
  // A directory entry name: one component, not "." or "..".
  const char* Name() {
    const char* name = String(kMaxNameBytes);
    if (name == nullptr) return nullptr;
    if (std::strchr(name, '/') != nullptr || std::strcmp(name, ".") == 0 ||
        std::strcmp(name, "..") == 0) {
      malformed = true;
      return nullptr;
    }
    return name;
  }
  absl::Span<const uint8_t> Rest() const { return args.subspan(pos); }
};

// A reply's payload (after fuse_out_header).
struct FuseServer::Reply {
  std::vector<uint8_t> data;
  uint64_t in_place = 0;  // payload bytes already in the sink (zero-copy READ); data is empty
  template <typename T>
  void Put(const T& value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    data.insert(data.end(), p, p + sizeof(T));
  }
};

absl::StatusOr<std::unique_ptr<FuseServer>> FuseServer::Create(const FsConfig& config,
                                                               uint32_t max_write) {
  VESSEL_RETURN_IF_ERROR(ValidateFsConfig(config));
  ScopedFd root(open(config.shared_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    return ErrnoStatus(absl::StrCat("virtio-fs ", config.tag, ": open shared directory ",
                                    config.shared_dir, " (it must be an existing directory)"));
  }
  struct stat st;
  if (fstatat(root.get(), "", &st, AT_EMPTY_PATH) != 0) {
    return ErrnoStatus(absl::StrCat("virtio-fs ", config.tag, ": stat ", config.shared_dir));
  }
  ScopedFd proc(open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc.valid()) {
    return ErrnoStatus(absl::StrCat("virtio-fs ", config.tag,
                                    ": open /proc/self/fd (mount /proc in the VMM's namespace)"));
  }
  if (max_write < 4096) max_write = 4096;
  return std::unique_ptr<FuseServer>(
      new FuseServer(config, max_write, std::move(root), std::move(proc), st));
}

FuseServer::FuseServer(FsConfig config, uint32_t max_write, ScopedFd root, ScopedFd proc_fd,
                       const struct stat& root_st)
    : config_(std::move(config)),
      max_write_(max_write),
      proc_fd_(std::move(proc_fd)),
      as_root_(geteuid() == 0) {
  switch (config_.cache) {
    case CachePolicy::kNever:
      entry_timeout_s_ = 0;
      break;
    case CachePolicy::kAuto:
      entry_timeout_s_ = 1;
      break;
    case CachePolicy::kAlways:
      entry_timeout_s_ = 86400;
      break;
  }
  auto inode = std::make_shared<Inode>();
  inode->fd = std::move(root);
  inode->dev = root_st.st_dev;
  inode->ino = root_st.st_ino;
  inode->type = root_st.st_mode & S_IFMT;
  inode->nlookup = 1;
  by_dev_ino_[{inode->dev, inode->ino}] = FUSE_ROOT_ID;
  inodes_[FUSE_ROOT_ID] = std::move(inode);
}

void FuseServer::Reset() {
  std::lock_guard lock(mu_);
  handles_.clear();
  std::shared_ptr<Inode> root = inodes_[FUSE_ROOT_ID];
  inodes_.clear();
  by_dev_ino_.clear();
  root->nlookup = 1;
  by_dev_ino_[{root->dev, root->ino}] = FUSE_ROOT_ID;
  inodes_[FUSE_ROOT_ID] = std::move(root);
  initialized_ = false;
  minor_ = 0;
  init_flags_ = 0;
  stale_below_ = 0;
}

FuseSession FuseServer::session() const {
  std::lock_guard lock(mu_);
  FuseSession session;
  session.initialized = initialized_;
  session.minor = minor_;
  session.max_write = initialized_ ? max_write_ : 0;
  session.flags = init_flags_;
  session.next_nodeid = next_nodeid_;
  session.next_fh = next_fh_;
  return session;
}

absl::Status FuseServer::RestoreSession(const FuseSession& session) {
  const std::string name = absl::StrCat("virtio-fs ", config_.tag);
  if (session.next_nodeid < FUSE_ROOT_ID + 1 || session.next_fh < 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": snapshot FUSE session has next nodeid ",
                                                   session.next_nodeid, ", next handle ",
                                                   session.next_fh));
  }
  if (session.initialized) {
    if (session.minor == 0 || session.minor > kOurMinor) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": snapshot FUSE session negotiated 7.", session.minor, "; this server speaks up to 7.",
          kOurMinor));
    }
    if (session.max_write > max_write_) {
      return absl::FailedPreconditionError(absl::StrCat(
          name, ": snapshot FUSE session allows writes of ", session.max_write,
          " bytes, this server takes at most ", max_write_));
    }
    if (session.flags & ~GrantableInitFlags()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: snapshot FUSE session has init flags %#x this share's configuration does not grant "
          "(%#x; writeback differs?)",
          name, session.flags, GrantableInitFlags()));
    }
  }
  std::lock_guard lock(mu_);
  if (initialized_) {
    return absl::FailedPreconditionError(
        absl::StrCat(name, ": restoring a FUSE session on a server that already answered INIT"));
  }
  initialized_ = session.initialized;
  minor_ = session.initialized ? session.minor : 0;
  init_flags_ = session.initialized ? session.flags : 0;
  next_nodeid_ = std::max(next_nodeid_, session.next_nodeid);
  next_fh_ = std::max(next_fh_, session.next_fh);
  stale_below_ = session.initialized ? next_nodeid_ : 0;
  return absl::OkStatus();
}

size_t FuseServer::inode_count() const {
  std::lock_guard lock(mu_);
  return inodes_.size();
}

size_t FuseServer::handle_count() const {
  std::lock_guard lock(mu_);
  return handles_.size();
}

uint64_t FuseServer::lookup_count(uint64_t nodeid) const {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(nodeid);
  return it == inodes_.end() ? 0 : it->second->nlookup;
}

std::shared_ptr<FuseServer::Inode> FuseServer::GetInode(uint64_t nodeid) const {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(nodeid);
  if (it == inodes_.end()) {
    ++counters_.malformed;  // never looked up, or forgotten
    return nullptr;
  }
  return it->second;
}

std::shared_ptr<FuseServer::Handle> FuseServer::GetHandle(uint64_t fh) const {
  std::lock_guard lock(mu_);
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second;
}

std::string FuseServer::ProcPath(const Inode& inode) const { return absl::StrCat(inode.fd.get()); }

int FuseServer::Reopen(const Inode& inode, int flags) const {
  if (S_ISLNK(inode.type)) return -ELOOP;
  // The magic link names the inode itself: no path walk, nothing outside the share reachable.
  int fd = openat(proc_fd_.get(), ProcPath(inode).c_str(), (flags & ~O_NOFOLLOW) | O_CLOEXEC);
  return fd >= 0 ? fd : -errno;
}

int FuseServer::Stat(const Inode& inode, struct stat* st) const {
  return fstatat(inode.fd.get(), "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

void FuseServer::FillEntry(uint64_t nodeid, const struct stat& st, fuse_entry_out* out) const {
  *out = {};
  out->nodeid = nodeid;
  out->generation = 0;
  out->entry_valid = entry_timeout_s_;
  out->attr_valid = entry_timeout_s_;
  out->attr = ToAttr(st);
}

int FuseServer::DoLookup(const Inode& parent, const char* name, fuse_entry_out* out) {
  ScopedFd fd(openat(parent.fd.get(), name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return errno;
  struct stat st;
  if (fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  uint64_t nodeid;
  {
    std::lock_guard lock(mu_);
    auto it = by_dev_ino_.find({st.st_dev, st.st_ino});
    if (it != by_dev_ino_.end()) {
      nodeid = it->second;
      ++inodes_[nodeid]->nlookup;
    } else {
      if (inodes_.size() >= config_.max_inodes) {
        ++counters_.table_full;
        if (log_.Allow()) {
          LogWarning("virtio-fs ", config_.tag, ": inode table full (", config_.max_inodes,
                     " inodes); lookups answer ENFILE until the guest forgets some (raise "
                     "max_inodes or drop the guest's dentry cache)");
        }
        return ENFILE;
      }
      nodeid = next_nodeid_++;
      auto inode = std::make_shared<Inode>();
      inode->fd = std::move(fd);
      inode->dev = st.st_dev;
      inode->ino = st.st_ino;
      inode->type = st.st_mode & S_IFMT;
      inode->nlookup = 1;
      by_dev_ino_[{st.st_dev, st.st_ino}] = nodeid;
      inodes_[nodeid] = std::move(inode);
    }
  }
  FillEntry(nodeid, st, out);
  return 0;
}

void FuseServer::Forget(uint64_t nodeid, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(nodeid);
  if (it == inodes_.end()) {
    if (nodeid >= stale_below_) ++counters_.malformed;  // below: from before a restore
    return;
  }
  Inode& inode = *it->second;
  inode.nlookup -= std::min(inode.nlookup, nlookup);
  if (inode.nlookup == 0 && nodeid != FUSE_ROOT_ID) {
    by_dev_ino_.erase({inode.dev, inode.ino});
    inodes_.erase(it);
  } else if (nodeid == FUSE_ROOT_ID && inode.nlookup == 0) {
    inode.nlookup = 1;  // the root stays
  }
}

int FuseServer::AddHandle(ScopedFd fd, bool dir, uint64_t* fh) {
  std::lock_guard lock(mu_);
  if (handles_.size() >= config_.max_handles) {
    ++counters_.table_full;
    if (log_.Allow()) {
      LogWarning("virtio-fs ", config_.tag, ": handle table full (", config_.max_handles,
                 " open files); opens answer ENFILE until the guest closes some (raise "
                 "max_handles)");
    }
    return ENFILE;
  }
  auto handle = std::make_shared<Handle>();
  handle->fd = std::move(fd);
  handle->dir = dir;
  *fh = next_fh_++;
  handles_[*fh] = std::move(handle);
  return 0;
}

uint32_t FuseServer::Send(uint64_t unique, int error, const Reply* reply, ReplySink& out) {
  const uint64_t cap = out.capacity();
  if (cap < sizeof(fuse_out_header)) {
    ++counters_.unanswerable;
    if (log_.Allow()) {
      LogWarning("virtio-fs ", config_.tag, ": request ", unique, " has ", cap,
                 " bytes of reply buffer, less than a fuse_out_header; returned empty");
    }
    return 0;
  }
  uint64_t payload = (error == 0 && reply != nullptr) ? reply->data.size() + reply->in_place : 0;
  if (payload > cap - sizeof(fuse_out_header)) {
    error = ERANGE;  // the guest's buffers cannot carry the answer
    payload = 0;
  }
  const bool in_place = payload > 0 && reply->in_place > 0;
  if (error != 0) ++counters_.error_replies;
  fuse_out_header oh = {};
  oh.len = static_cast<uint32_t>(sizeof(oh) + payload);
  oh.error = -error;
  oh.unique = unique;
  if (!out.Write(&oh, sizeof(oh)).ok()) return 0;
  if (in_place) {
    if (!out.Advance(payload).ok()) return sizeof(oh);
  } else if (payload > 0 && !out.Write(reply->data.data(), payload).ok()) {
    return sizeof(oh);
  }
  return oh.len;
}

uint32_t FuseServer::HandleRequest(absl::Span<const uint8_t> in, ReplySink& out) {
  ++counters_.requests;
  Request rq;
  if (in.size() < sizeof(fuse_in_header)) {
    ++counters_.malformed;
    return Send(0, EINVAL, nullptr, out);
  }
  std::memcpy(&rq.header, in.data(), sizeof(rq.header));
  const uint64_t unique = rq.header.unique;
  const uint32_t opcode = rq.header.opcode;
  if (rq.header.len != in.size()) {
    ++counters_.malformed;
    if (log_.Allow()) {
      LogWarning("virtio-fs ", config_.tag, ": request ", unique, " (opcode ", opcode,
                 ") says len ", rq.header.len, " but carries ", in.size(), " bytes");
    }
    if (opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET || opcode == FUSE_INTERRUPT) return 0;
    return Send(unique, EINVAL, nullptr, out);
  }
  rq.args = in.subspan(sizeof(fuse_in_header));
  rq.sink = &out;
  rq.reply_room =
      out.capacity() > sizeof(fuse_out_header) ? out.capacity() - sizeof(fuse_out_header) : 0;

  // Requests without a reply.
  switch (opcode) {
    case FUSE_FORGET:
      OpForget(rq);
      return 0;
    case FUSE_BATCH_FORGET:
      OpBatchForget(rq);
      return 0;
    case FUSE_INTERRUPT:
      return 0;  // every request completes synchronously
    default:
      break;
  }

  Reply reply;
  int err = 0;
  bool initialized;
  {
    std::lock_guard lock(mu_);
    initialized = initialized_;
  }
  if (opcode == FUSE_INIT) {
    err = OpInit(rq, reply);
  } else if (!initialized) {
    err = EIO;
  } else if (config_.read_only && IsWriteOpcode(opcode)) {
    err = EROFS;
  } else {
    switch (opcode) {
      case FUSE_DESTROY:
        Reset();
        break;
      case FUSE_LOOKUP:
        err = OpLookup(rq, reply);
        break;
      case FUSE_GETATTR:
        err = OpGetattr(rq, reply);
        break;
      case FUSE_SETATTR:
        err = OpSetattr(rq, reply);
        break;
      case FUSE_READLINK:
        err = OpReadlink(rq, reply);
        break;
      case FUSE_SYMLINK:
        err = OpSymlink(rq, reply);
        break;
      case FUSE_MKNOD:
        err = OpMknod(rq, reply);
        break;
      case FUSE_MKDIR:
        err = OpMkdir(rq, reply);
        break;
      case FUSE_UNLINK:
        err = OpUnlink(rq, false);
        break;
      case FUSE_RMDIR:
        err = OpUnlink(rq, true);
        break;
      case FUSE_RENAME:
        err = OpRename(rq, false);
        break;
      case FUSE_RENAME2:
        err = OpRename(rq, true);
        break;
      case FUSE_LINK:
        err = OpLink(rq, reply);
        break;
      case FUSE_OPEN:
        err = OpOpen(rq, reply, false);
        break;
      case FUSE_OPENDIR:
        err = OpOpen(rq, reply, true);
        break;
      case FUSE_CREATE:
        err = OpCreate(rq, reply);
        break;
      case FUSE_READ:
        err = OpRead(rq, reply);
        break;
      case FUSE_WRITE:
        err = OpWrite(rq, reply);
        break;
      case FUSE_FLUSH:
        err = OpFlush(rq);
        break;
      case FUSE_RELEASE:
      case FUSE_RELEASEDIR:
        err = OpRelease(rq);
        break;
      case FUSE_FSYNC:
      case FUSE_FSYNCDIR:
        err = OpFsync(rq);
        break;
      case FUSE_READDIR:
        err = OpReaddir(rq, reply, false);
        break;
      case FUSE_READDIRPLUS:
        err = OpReaddir(rq, reply, true);
        break;
      case FUSE_STATFS:
        err = OpStatfs(rq, reply);
        break;
      case FUSE_ACCESS:
        err = OpAccess(rq);
        break;
      case FUSE_FALLOCATE:
        err = OpFallocate(rq);
        break;
      case FUSE_LSEEK:
        err = OpLseek(rq, reply);
        break;
      default:
        // Extended attributes, locks, ioctl, poll, DAX mappings...: not offered.
        ++counters_.unsupported;
        err = ENOSYS;
        break;
    }
  }
  if (rq.malformed) {
    ++counters_.malformed;
    if (err == 0) err = EINVAL;
  }
  if (err == ENOENT && rq.header.nodeid != FUSE_ROOT_ID) {
    // A node the guest looked up before a snapshot restore: gone, as after a daemon restart.
    // ESTALE (not ENOENT) makes the guest's VFS retry the path walk with revalidation.
    std::lock_guard lock(mu_);
    if (rq.header.nodeid < stale_below_ && !inodes_.contains(rq.header.nodeid)) err = ESTALE;
  }
  return Send(unique, err, &reply, out);
}

uint32_t FuseServer::GrantableInitFlags() const {
  uint32_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
                  FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES;
  if (config_.writeback) want |= FUSE_WRITEBACK_CACHE;
  return want;
}

int FuseServer::OpInit(Request& rq, Reply& reply) {
  // fuse_init_in grew over time: major, minor, max_readahead, flags first; flags2 since 7.36.
  struct {
    uint32_t major, minor, max_readahead, flags;
  } in;
  if (!rq.Get(&in)) return EINVAL;
  uint32_t flags2 = 0;
  if (in.flags & FUSE_INIT_EXT) {
    rq.Get(&flags2);
    rq.malformed = false;  // an older layout without flags2 is fine
  }
  fuse_init_out out = {};
  out.major = FUSE_KERNEL_VERSION;
  if (in.major < 7) {
    if (log_.Allow()) {
      LogWarning("virtio-fs ", config_.tag, ": guest speaks FUSE ", in.major, ".", in.minor,
                 "; need 7.x");
    }
    return EPROTO;
  }
  if (in.major > 7) {
    // Tell the kernel our major; it retries with 7.x.
    out.minor = kOurMinor;
    reply.data.resize(8);
    std::memcpy(reply.data.data(), &out, 8);
    return 0;
  }
  const uint32_t minor = std::min(kOurMinor, in.minor);
  out.minor = minor;
  out.max_readahead = in.max_readahead;
  out.flags = in.flags & GrantableInitFlags();
  out.max_background = 64;
  out.congestion_threshold = 48;
  out.max_write = max_write_;
  out.time_gran = kTimeGranNs;
  out.max_pages = static_cast<uint16_t>(std::max<uint32_t>(1, max_write_ / 4096));
  {
    std::lock_guard lock(mu_);
    initialized_ = true;
    minor_ = minor;
    init_flags_ = out.flags;
  }
  // Before 7.23 the reply was 24 bytes long.
  const size_t len = minor < 23 ? 24 : sizeof(out);
  reply.data.resize(len);
  std::memcpy(reply.data.data(), &out, len);
  return 0;
}

int FuseServer::OpLookup(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  const char* raw = rq.String(kMaxNameBytes);
  if (parent == nullptr) return ENOENT;
  if (raw == nullptr) return EINVAL;
  fuse_entry_out entry;
  if (std::strcmp(raw, "..") == 0 && rq.header.nodeid == FUSE_ROOT_ID) {
    // The root's parent is the root: nothing above the share exists for the guest.
    struct stat st;
    if (int err = Stat(*parent, &st)) return err;
    {
      std::lock_guard lock(mu_);
      ++parent->nlookup;
    }
    FillEntry(FUSE_ROOT_ID, st, &entry);
    reply.Put(entry);
    return 0;
  }
  if (std::strchr(raw, '/') != nullptr || std::strcmp(raw, ".") == 0 ||
      std::strcmp(raw, "..") == 0) {
    rq.malformed = true;
    return EINVAL;
  }
  if (int err = DoLookup(*parent, raw, &entry)) return err;
  reply.Put(entry);
  return 0;
}

void FuseServer::OpForget(Request& rq) {
  fuse_forget_in in;
  if (!rq.Get(&in)) {
    ++counters_.malformed;
    return;
  }
  Forget(rq.header.nodeid, in.nlookup);
}

void FuseServer::OpBatchForget(Request& rq) {
  fuse_batch_forget_in in;
  if (!rq.Get(&in)) {
    ++counters_.malformed;
    return;
  }
  for (uint32_t i = 0; i < in.count; ++i) {
    fuse_forget_one one;
    if (!rq.Get(&one)) {
      ++counters_.malformed;  // count larger than what was sent: stop at the end
      return;
    }
    Forget(one.nodeid, one.nlookup);
  }
}

int FuseServer::OpGetattr(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  if (inode == nullptr) return ENOENT;
  struct stat st;
  if (int err = Stat(*inode, &st)) return err;
  fuse_attr_out out = {};
  out.attr_valid = entry_timeout_s_;
  out.attr = ToAttr(st);
  reply.Put(out);
  return 0;
}

int FuseServer::OpSetattr(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  fuse_setattr_in in;
  if (!rq.Get(&in)) return EINVAL;
  if (inode == nullptr) return ENOENT;
  std::shared_ptr<Handle> handle;
  if (in.valid & FATTR_FH) {
    handle = GetHandle(in.fh);
    if (handle == nullptr || handle->dir) {
      ++counters_.malformed;
      return EBADF;
    }
  }
  const bool is_link = S_ISLNK(inode->type);
  const std::string proc = ProcPath(*inode);
  if (in.valid & FATTR_MODE) {
    int r = handle    ? fchmod(handle->fd.get(), in.mode & 07777)
            : is_link ? (errno = EOPNOTSUPP, -1)
                      : fchmodat(proc_fd_.get(), proc.c_str(), in.mode & 07777, 0);
    if (r != 0) return errno;
  }
  if (in.valid & (FATTR_UID | FATTR_GID)) {
    uid_t uid = (in.valid & FATTR_UID) ? in.uid : static_cast<uid_t>(-1);
    gid_t gid = (in.valid & FATTR_GID) ? in.gid : static_cast<gid_t>(-1);
    if (fchownat(inode->fd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return errno;
    }
  }
  if (in.valid & FATTR_SIZE) {
    if (handle) {
      if (ftruncate(handle->fd.get(), static_cast<off_t>(in.size)) != 0) return errno;
    } else {
      if (!S_ISREG(inode->type)) return S_ISDIR(inode->type) ? EISDIR : EINVAL;
      int fd = Reopen(*inode, O_WRONLY);
      if (fd < 0) return -fd;
      ScopedFd f(fd);
      if (ftruncate(f.get(), static_cast<off_t>(in.size)) != 0) return errno;
    }
  }
  if (in.valid & (FATTR_ATIME | FATTR_MTIME)) {
    struct timespec ts[2];
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_OMIT;
    if (in.valid & FATTR_ATIME) {
      ts[0].tv_sec = static_cast<time_t>(in.atime);
      ts[0].tv_nsec = (in.valid & FATTR_ATIME_NOW) ? UTIME_NOW : in.atimensec;
    }
    if (in.valid & FATTR_MTIME) {
      ts[1].tv_sec = static_cast<time_t>(in.mtime);
      ts[1].tv_nsec = (in.valid & FATTR_MTIME_NOW) ? UTIME_NOW : in.mtimensec;
    }
    for (const timespec& t : ts) {
      if (t.tv_nsec != UTIME_NOW && t.tv_nsec != UTIME_OMIT &&
          (t.tv_nsec < 0 || t.tv_nsec >= 1000000000)) {
        return EINVAL;
      }
    }
    int r;
    if (handle) {
      r = futimens(handle->fd.get(), ts);
    } else if (is_link) {
      r = utimensat(inode->fd.get(), "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    } else {
      r = utimensat(proc_fd_.get(), proc.c_str(), ts, 0);
    }
    if (r != 0) return errno;
  }
  struct stat st;
  if (int err = Stat(*inode, &st)) return err;
  fuse_attr_out out = {};
  out.attr_valid = entry_timeout_s_;
  out.attr = ToAttr(st);
  reply.Put(out);
  return 0;
}

int FuseServer::OpReadlink(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  if (inode == nullptr) return ENOENT;
  if (!S_ISLNK(inode->type)) return EINVAL;
  char buf[kMaxSymlinkBytes + 1];
  ssize_t n = readlinkat(inode->fd.get(), "", buf, sizeof(buf));
  if (n < 0) return errno;
  reply.data.assign(buf, buf + n);
  return 0;
}

void FuseServer::OwnByCaller(const Request& rq, const Inode& parent, const char* name) {
  if (!as_root_) return;  // not root: new nodes belong to the VMM's user, nothing to change
  // A set-group-ID directory gives new nodes its group (the host kernel already did that).
  gid_t gid = rq.header.gid;
  struct stat pst;
  if (Stat(parent, &pst) == 0 && (pst.st_mode & S_ISGID)) gid = static_cast<gid_t>(-1);
  if (fchownat(parent.fd.get(), name, rq.header.uid, gid, AT_SYMLINK_NOFOLLOW) != 0 &&
      log_.Allow()) {
    LogWarning("virtio-fs ", config_.tag, ": cannot give '", name, "' to uid ", rq.header.uid,
               " gid ", rq.header.gid, ": ", std::strerror(errno));
  }
}

int FuseServer::EntryAfterCreate(const Inode& parent, const char* name, Reply& reply) {
  fuse_entry_out entry;
  if (int err = DoLookup(parent, name, &entry)) return err;
  reply.Put(entry);
  return 0;
}

int FuseServer::OpSymlink(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  const char* name = rq.Name();
  const char* target = name ? rq.String(kMaxSymlinkBytes) : nullptr;
  if (target == nullptr) return EINVAL;
  if (parent == nullptr) return ENOENT;
  // The target is stored as text; the host never follows it.
  if (symlinkat(target, parent->fd.get(), name) != 0) return errno;
  OwnByCaller(rq, *parent, name);
  return EntryAfterCreate(*parent, name, reply);
}

int FuseServer::OpMknod(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  fuse_mknod_in in;
  if (!rq.Get(&in)) return EINVAL;
  const char* name = rq.Name();
  if (name == nullptr) return EINVAL;
  if (parent == nullptr) return ENOENT;
  const mode_t type = in.mode & S_IFMT;
  if (type != S_IFIFO && type != S_IFREG && type != S_IFSOCK) return EPERM;  // no device nodes
  if (mknodat(parent->fd.get(), name, in.mode & (S_IFMT | 07777), 0) != 0) return errno;
  OwnByCaller(rq, *parent, name);
  return EntryAfterCreate(*parent, name, reply);
}

int FuseServer::OpMkdir(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  fuse_mkdir_in in;
  if (!rq.Get(&in)) return EINVAL;
  const char* name = rq.Name();
  if (name == nullptr) return EINVAL;
  if (parent == nullptr) return ENOENT;
  if (mkdirat(parent->fd.get(), name, in.mode & 07777) != 0) return errno;
  OwnByCaller(rq, *parent, name);
  return EntryAfterCreate(*parent, name, reply);
}

int FuseServer::OpUnlink(Request& rq, bool dir) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  const char* name = rq.Name();
  if (name == nullptr) return EINVAL;
  if (parent == nullptr) return ENOENT;
  return unlinkat(parent->fd.get(), name, dir ? AT_REMOVEDIR : 0) == 0 ? 0 : errno;
}

int FuseServer::OpRename(Request& rq, bool v2) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  uint64_t newdir = 0;
  uint32_t flags = 0;
  if (v2) {
    fuse_rename2_in in;
    if (!rq.Get(&in)) return EINVAL;
    newdir = in.newdir;
    flags = in.flags;
  } else {
    fuse_rename_in in;
    if (!rq.Get(&in)) return EINVAL;
    newdir = in.newdir;
  }
  const char* oldname = rq.Name();
  const char* newname = oldname ? rq.Name() : nullptr;
  if (newname == nullptr) return EINVAL;
  std::shared_ptr<Inode> newparent = GetInode(newdir);
  if (parent == nullptr || newparent == nullptr) return ENOENT;
  if (flags & ~static_cast<uint32_t>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
  if (renameat2(parent->fd.get(), oldname, newparent->fd.get(), newname, flags) != 0) return errno;
  return 0;
}

int FuseServer::OpLink(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> newparent = GetInode(rq.header.nodeid);
  fuse_link_in in;
  if (!rq.Get(&in)) return EINVAL;
  const char* name = rq.Name();
  if (name == nullptr) return EINVAL;
  std::shared_ptr<Inode> inode = GetInode(in.oldnodeid);
  if (newparent == nullptr || inode == nullptr) return ENOENT;
  if (S_ISDIR(inode->type)) return EPERM;
  // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc magic link names the same inode.
  if (linkat(inode->fd.get(), "", newparent->fd.get(), name, AT_EMPTY_PATH) != 0) {
    if (errno != ENOENT && errno != EPERM) return errno;
    if (S_ISLNK(inode->type)) return EPERM;
    const std::string path = absl::StrCat("/proc/self/fd/", inode->fd.get());
    if (linkat(AT_FDCWD, path.c_str(), newparent->fd.get(), name, AT_SYMLINK_FOLLOW) != 0) {
      return errno;
    }
  }
  return EntryAfterCreate(*newparent, name, reply);
}

namespace {
// Open flags the guest may pass through; O_CREAT/O_EXCL/O_NOCTTY/O_PATH and friends are dropped.
constexpr int kPassFlags = O_ACCMODE | O_APPEND | O_TRUNC | O_NONBLOCK | O_DIRECT | O_SYNC |
                           O_DSYNC | O_NOATIME | O_LARGEFILE;
}  // namespace

int FuseServer::OpOpen(Request& rq, Reply& reply, bool dir) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  fuse_open_in in;
  if (!rq.Get(&in)) return EINVAL;
  if (inode == nullptr) return ENOENT;
  int flags = static_cast<int>(in.flags) & kPassFlags;
  if (dir) {
    if (!S_ISDIR(inode->type)) return ENOTDIR;
    flags = O_RDONLY | O_DIRECTORY;
  } else {
    if (S_ISLNK(inode->type)) return ELOOP;
    if (S_ISDIR(inode->type) && (flags & O_ACCMODE) != O_RDONLY) return EISDIR;
    // FIFOs, sockets and device nodes are never opened on the host (a FIFO would block the
    // I/O thread, a device node would hand the guest a host device); the guest kernel opens
    // special files itself.
    if (!S_ISREG(inode->type) && !S_ISDIR(inode->type)) return ENXIO;
    if (config_.read_only && ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))) return EROFS;
    if (config_.writeback) {
      // The guest's page cache writes whole pages: it must be able to read what it writes, and
      // appends are placed by the guest.
      if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
      flags &= ~O_APPEND;
    }
  }
  int fd = Reopen(*inode, flags);
  if (fd < 0) return -fd;
  uint64_t fh;
  if (int err = AddHandle(ScopedFd(fd), dir, &fh)) return err;
  fuse_open_out out = {};
  out.fh = fh;
  if (!dir) {
    if (config_.cache == CachePolicy::kNever) out.open_flags |= FOPEN_DIRECT_IO;
    if (config_.cache == CachePolicy::kAlways) out.open_flags |= FOPEN_KEEP_CACHE;
  } else if (config_.cache == CachePolicy::kAlways) {
    out.open_flags |= FOPEN_CACHE_DIR;
  }
  reply.Put(out);
  return 0;
}

int FuseServer::OpCreate(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> parent = GetInode(rq.header.nodeid);
  fuse_create_in in;
  if (!rq.Get(&in)) return EINVAL;
  const char* name = rq.Name();
  if (name == nullptr) return EINVAL;
  if (parent == nullptr) return ENOENT;
  int flags = (static_cast<int>(in.flags) & (kPassFlags | O_EXCL)) | O_CREAT | O_CLOEXEC;
  if (config_.writeback) {
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  // O_EXCL first: only a file this request created changes owner.
  int fd = OpenBeneath(parent->fd.get(), name, flags | O_EXCL, in.mode & 07777, &have_openat2_);
  if (fd >= 0) {
    if (as_root_) OwnByCaller(rq, *parent, name);
  } else if (errno == EEXIST && !(flags & O_EXCL)) {
    fd = OpenBeneath(parent->fd.get(), name, flags & ~O_CREAT, 0, &have_openat2_);
  }
  if (fd < 0) return errno;
  ScopedFd file(fd);
  fuse_entry_out entry;
  if (int err = DoLookup(*parent, name, &entry)) return err;
  uint64_t fh;
  if (int err = AddHandle(std::move(file), false, &fh)) {
    Forget(entry.nodeid, 1);
    return err;
  }
  fuse_open_out out = {};
  out.fh = fh;
  if (config_.cache == CachePolicy::kNever) out.open_flags |= FOPEN_DIRECT_IO;
  if (config_.cache == CachePolicy::kAlways) out.open_flags |= FOPEN_KEEP_CACHE;
  reply.Put(entry);
  reply.Put(out);
  return 0;
}

int FuseServer::OpRead(Request& rq, Reply& reply) {
  fuse_read_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr || handle->dir) {
    ++counters_.malformed;
    return EBADF;
  }
  if (in.size > max_write_ || in.size > rq.reply_room ||
      in.offset > static_cast<uint64_t>(INT64_MAX)) {
    rq.malformed = true;
    return EINVAL;
  }
  std::vector<iovec> iov;
  if (in.size > 0 && rq.sink->PayloadBuffers(sizeof(fuse_out_header), in.size, &iov) &&
      iov.size() <= IOV_MAX) {
    // Straight into the guest's buffers.
    ssize_t n = preadv(handle->fd.get(), iov.data(), static_cast<int>(iov.size()),
                       static_cast<off_t>(in.offset));
    if (n < 0) return errno;
    reply.in_place = static_cast<uint64_t>(n);
    counters_.bytes_read += static_cast<uint64_t>(n);
    ++counters_.reads_in_place;
    return 0;
  }
  reply.data.resize(in.size);
  ssize_t n = pread(handle->fd.get(), reply.data.data(), in.size, static_cast<off_t>(in.offset));
  if (n < 0) return errno;
  reply.data.resize(static_cast<size_t>(n));
  counters_.bytes_read += static_cast<uint64_t>(n);
  return 0;
}

int FuseServer::OpWrite(Request& rq, Reply& reply) {
  fuse_write_in in;
  if (!rq.Get(&in)) return EINVAL;
  absl::Span<const uint8_t> data = rq.Rest();
  // Request extensions (total_extlen, in 8-byte units) follow the data.
  const uint64_t ext = uint64_t{rq.header.total_extlen} * 8;
  if (ext > data.size() || data.size() - ext != in.size || in.size > max_write_) {
    rq.malformed = true;
    return EINVAL;
  }
  if (in.offset > static_cast<uint64_t>(INT64_MAX)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr || handle->dir) {
    ++counters_.malformed;
    return EBADF;
  }
  ssize_t n = pwrite(handle->fd.get(), data.data(), in.size, static_cast<off_t>(in.offset));
  if (n < 0) return errno;
  counters_.bytes_written += static_cast<uint64_t>(n);
  fuse_write_out out = {};
  out.size = static_cast<uint32_t>(n);
  reply.Put(out);
  return 0;
}

int FuseServer::OpFlush(Request& rq) {
  fuse_flush_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr) {
    ++counters_.malformed;
    return EBADF;
  }
  // close() of a duplicate reports deferred write errors (NFS and friends) like the guest's close.
  int dup_fd = dup(handle->fd.get());
  if (dup_fd < 0) return errno;
  return close(dup_fd) == 0 ? 0 : errno;
}

int FuseServer::OpRelease(Request& rq) {
  fuse_release_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(in.fh);
    if (it == handles_.end()) {
      ++counters_.malformed;
      return EBADF;
    }
    handle = std::move(it->second);
    handles_.erase(it);
  }
  return 0;  // the fd closes when the last user drops `handle`
}

int FuseServer::OpFsync(Request& rq) {
  fuse_fsync_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr) {
    ++counters_.malformed;
    return EBADF;
  }
  int r = (in.fsync_flags & 1) ? fdatasync(handle->fd.get()) : fsync(handle->fd.get());
  return r == 0 ? 0 : errno;
}

int FuseServer::OpReaddir(Request& rq, Reply& reply, bool plus) {
  fuse_read_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr || !handle->dir) {
    ++counters_.malformed;
    return EBADF;
  }
  std::shared_ptr<Inode> dir = plus ? GetInode(rq.header.nodeid) : nullptr;
  if (plus && dir == nullptr) return ENOENT;
  const uint64_t size = std::min<uint64_t>({in.size, max_write_, rq.reply_room});
  std::lock_guard lock(handle->mu);
  if (lseek(handle->fd.get(), static_cast<off_t>(in.offset), SEEK_SET) < 0) return errno;
  std::vector<uint8_t> buf(std::min<uint64_t>(std::max<uint64_t>(size, 1024), kReaddirBufferBytes));
  reply.data.reserve(size);
  for (;;) {
    ssize_t n = getdents64(handle->fd.get(), buf.data(), buf.size());
    if (n < 0) return errno;
    if (n == 0) return 0;
    for (ssize_t pos = 0; pos < n;) {
      const auto* d = reinterpret_cast<const struct dirent64*>(buf.data() + pos);
      pos += d->d_reclen;
      const size_t namelen = strnlen(d->d_name, 256);
      const size_t entlen = plus ? FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen)
                                 : FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);
      if (reply.data.size() + entlen > size) return 0;
      const size_t at = reply.data.size();
      reply.data.resize(at + entlen, 0);
      fuse_dirent* dirent;
      if (plus) {
        auto* dp = reinterpret_cast<fuse_direntplus*>(reply.data.data() + at);
        const bool dot = std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0;
        fuse_entry_out entry = {};
        if (!dot && DoLookup(*dir, d->d_name, &entry) != 0) entry = {};  // raced away: no entry
        std::memcpy(&dp->entry_out, &entry, sizeof(entry));
        dirent = &dp->dirent;
      } else {
        dirent = reinterpret_cast<fuse_dirent*>(reply.data.data() + at);
      }
      fuse_dirent de = {};
      de.ino = d->d_ino;
      de.off = static_cast<uint64_t>(d->d_off);
      de.namelen = static_cast<uint32_t>(namelen);
      de.type = d->d_type;
      std::memcpy(dirent, &de, FUSE_NAME_OFFSET);
      std::memcpy(reinterpret_cast<uint8_t*>(dirent) + FUSE_NAME_OFFSET, d->d_name, namelen);
    }
  }
}

int FuseServer::OpStatfs(Request& rq, Reply& reply) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  if (inode == nullptr) return ENOENT;
  struct statvfs sv;
  if (fstatvfs(inode->fd.get(), &sv) != 0) return errno;
  fuse_statfs_out out = {};
  out.st.blocks = sv.f_blocks;
  out.st.bfree = sv.f_bfree;
  out.st.bavail = sv.f_bavail;
  out.st.files = sv.f_files;
  out.st.ffree = sv.f_ffree;
  out.st.bsize = static_cast<uint32_t>(sv.f_bsize);
  out.st.namelen = static_cast<uint32_t>(sv.f_namemax);
  out.st.frsize = static_cast<uint32_t>(sv.f_frsize);
  reply.Put(out);
  return 0;
}

int FuseServer::OpAccess(Request& rq) {
  std::shared_ptr<Inode> inode = GetInode(rq.header.nodeid);
  fuse_access_in in;
  if (!rq.Get(&in)) return EINVAL;
  if (inode == nullptr) return ENOENT;
  if (in.mask & ~static_cast<uint32_t>(R_OK | W_OK | X_OK)) return EINVAL;
  if (config_.read_only && (in.mask & W_OK)) return EROFS;
  if (S_ISLNK(inode->type)) return 0;  // a symlink's permissions are not checked
  const std::string proc = ProcPath(*inode);
  return faccessat(proc_fd_.get(), proc.c_str(), static_cast<int>(in.mask), 0) == 0 ? 0 : errno;
}

int FuseServer::OpFallocate(Request& rq) {
  fuse_fallocate_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr || handle->dir) {
    ++counters_.malformed;
    return EBADF;
  }
  if (in.offset > static_cast<uint64_t>(INT64_MAX) ||
      in.length > static_cast<uint64_t>(INT64_MAX)) {
    return EINVAL;
  }
  return fallocate(handle->fd.get(), static_cast<int>(in.mode), static_cast<off_t>(in.offset),
                   static_cast<off_t>(in.length)) == 0
             ? 0
             : errno;
}

int FuseServer::OpLseek(Request& rq, Reply& reply) {
  fuse_lseek_in in;
  if (!rq.Get(&in)) return EINVAL;
  std::shared_ptr<Handle> handle = GetHandle(in.fh);
  if (handle == nullptr || handle->dir) {
    ++counters_.malformed;
    return EBADF;
  }
  if (in.whence != SEEK_SET && in.whence != SEEK_CUR && in.whence != SEEK_END &&
      in.whence != SEEK_DATA && in.whence != SEEK_HOLE) {
    return EINVAL;
  }
  off_t r = lseek(handle->fd.get(), static_cast<off_t>(in.offset), static_cast<int>(in.whence));
  if (r < 0) return errno;
  fuse_lseek_out out = {};
  out.offset = static_cast<uint64_t>(r);
  reply.Put(out);
  return 0;
}

}  // namespace vessel::fs
