// OOM kills: watches each container's memory.events (inotify IN_MODIFY; without inotify in the
// kernel, a read of each file every second) and reports a container whose oom_kill count went up.
// One thread for all containers.
#ifndef VESSEL_GUEST_AGENT_OOM_H_
#define VESSEL_GUEST_AGENT_OOM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {

class OomWatcher {
 public:
  // `on_oom` runs on the watcher's thread, with no lock of the watcher held.
  static absl::StatusOr<std::unique_ptr<OomWatcher>> Create(
      std::function<void(const std::string&)> on_oom);
  ~OomWatcher();  // stops and joins
  OomWatcher(const OomWatcher&) = delete;
  OomWatcher& operator=(const OomWatcher&) = delete;

  // Starts watching <cgroup_dir>/memory.events; a cgroup without the memory controller is skipped.
  void Watch(const std::string& container_id, const std::string& cgroup_dir);
  void Unwatch(const std::string& container_id);

 private:
  struct Watched {
    std::string container_id;
    std::string events_path;
    uint64_t oom_kills = 0;
  };
  OomWatcher(ScopedFd inotify, ScopedFd wake, std::function<void(const std::string&)> on_oom);
  void Run();

  ScopedFd inotify_;
  ScopedFd wake_;
  std::function<void(const std::string&)> on_oom_;
  std::mutex mu_;
  std::map<int, Watched> by_wd_;  // by inotify watch, or by a counter when polling
  int next_poll_id_ = 1;
  std::thread thread_;
};

// The oom_kill count of a memory.events file (0 if unreadable).
uint64_t ReadOomKills(const std::string& events_path);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_OOM_H_
