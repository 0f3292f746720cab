// ScopedMmap: sole owner of one mmap'd range; munmaps it on destruction.
#ifndef VESSEL_VMM_BASE_SCOPED_MMAP_H_
#define VESSEL_VMM_BASE_SCOPED_MMAP_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace vessel {

class ScopedMmap {
 public:
  ScopedMmap() = default;
  ScopedMmap(void* addr, size_t size) : addr_(addr), size_(size) {}
  ScopedMmap(ScopedMmap&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  ScopedMmap& operator=(ScopedMmap&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ScopedMmap(const ScopedMmap&) = delete;
  ScopedMmap& operator=(const ScopedMmap&) = delete;
  ~ScopedMmap() { reset(); }

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  bool valid() const { return addr_ != nullptr; }
  void reset() {
    if (addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace vessel

#endif  // VESSEL_VMM_BASE_SCOPED_MMAP_H_
