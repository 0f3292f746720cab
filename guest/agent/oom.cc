#include "guest/agent/oom.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::agent {

uint64_t ReadOomKills(const std::string& events_path) {
  absl::StatusOr<std::string> text = ReadSmallFile(events_path);
  if (!text.ok()) return 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t v = 0;
    if (f.size() == 2 && f[0] == "oom_kill" && absl::SimpleAtoi(f[1], &v)) return v;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<OomWatcher>> OomWatcher::Create(
    std::function<void(const std::string&)> on_oom) {
  ScopedFd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!inotify.valid()) {
    // A kernel without CONFIG_INOTIFY_USER: read every watched file once a second instead.
    LogWarning("agent: inotify_init1: ", strerror(errno), ": polling memory.events every second");
  }
  ScopedFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return ErrnoStatus("eventfd");
  return std::unique_ptr<OomWatcher>(
      new OomWatcher(std::move(inotify), std::move(wake), std::move(on_oom)));
}

OomWatcher::OomWatcher(ScopedFd inotify, ScopedFd wake,
                       std::function<void(const std::string&)> on_oom)
    : inotify_(std::move(inotify)), wake_(std::move(wake)), on_oom_(std::move(on_oom)) {
  thread_ = std::thread([this] { Run(); });
}

OomWatcher::~OomWatcher() {
  uint64_t one = 1;
  ssize_t unused = ::write(wake_.get(), &one, sizeof(one));
  (void)unused;
  thread_.join();
}

void OomWatcher::Watch(const std::string& container_id, const std::string& cgroup_dir) {
  std::string path = cgroup_dir + "/memory.events";
  if (::access(path.c_str(), R_OK) != 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  int wd = inotify_.valid() ? ::inotify_add_watch(inotify_.get(), path.c_str(), IN_MODIFY)
                            : next_poll_id_++;
  if (wd < 0) {
    LogWarning("agent: inotify_add_watch ", path, ": ", strerror(errno), ": no OOM events for ",
               container_id);
    return;
  }
  by_wd_[wd] = Watched{container_id, path, ReadOomKills(path)};
}

void OomWatcher::Unwatch(const std::string& container_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = by_wd_.begin(); it != by_wd_.end(); ++it) {
    if (it->second.container_id == container_id) {
      if (inotify_.valid()) ::inotify_rm_watch(inotify_.get(), it->first);
      by_wd_.erase(it);
      return;
    }
  }
}

void OomWatcher::Run() {
  alignas(inotify_event) char buf[4096];
  for (;;) {
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {inotify_.get(), POLLIN, 0}};
    int ready = ::poll(fds, inotify_.valid() ? 2 : 1, inotify_.valid() ? -1 : 1000);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents & POLLIN) return;
    std::vector<std::string> oomed;
    if (!inotify_.valid()) {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [wd, w] : by_wd_) {
        uint64_t kills = ReadOomKills(w.events_path);
        if (kills > w.oom_kills) oomed.push_back(w.container_id);
        w.oom_kills = kills;
      }
    }
    ssize_t n = inotify_.valid() ? ::read(inotify_.get(), buf, sizeof(buf)) : 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (ssize_t off = 0; n > 0 && off < n;) {
        const inotify_event* ev = reinterpret_cast<const inotify_event*>(buf + off);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        auto it = by_wd_.find(ev->wd);
        if (it == by_wd_.end()) continue;
        uint64_t kills = ReadOomKills(it->second.events_path);
        if (kills > it->second.oom_kills) oomed.push_back(it->second.container_id);
        it->second.oom_kills = kills;
      }
    }
    for (const std::string& id : oomed) on_oom_(id);
  }
}

}  // namespace vessel::agent
