// ScopedFd: sole owner of a file descriptor; closes it on destruction.
#ifndef VESSEL_VMM_BASE_SCOPED_FD_H_
#define VESSEL_VMM_BASE_SCOPED_FD_H_

#include <unistd.h>

#include <utility>

namespace vessel {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace vessel

#endif  // VESSEL_VMM_BASE_SCOPED_FD_H_
