#include "vmm/bus/bus.h"

#include <mutex>

#include "absl/strings/str_format.h"

namespace vessel {

absl::Status Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len,
                         std::string label) {
  if (len == 0 || base + len < base) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s bus: bad range %#x+%#x for %s", name_, base, len, label));
  }
  std::unique_lock lock(mu_);
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) {
    return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at %#x+%#x overlaps %s at %#x",
                                                    name_, label, base, len, next->second.label,
                                                    next->first));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base) {
      return absl::AlreadyExistsError(absl::StrFormat("%s bus: %s at %#x+%#x overlaps %s at %#x",
                                                      name_, label, base, len, prev->second.label,
                                                      prev->first));
    }
  }
  ranges_.emplace(base, Entry{len, std::move(device), std::move(label)});
  return absl::OkStatus();
}

const Bus::Entry* Bus::Find(uint64_t addr, uint64_t size, uint64_t* base) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t offset = addr - it->first;
  if (offset >= it->second.len || size > it->second.len - offset) return nullptr;
  *base = it->first;
  return &it->second;
}

bool Bus::Read(uint64_t addr, absl::Span<uint8_t> data) const {
  std::shared_ptr<BusDevice> device;
  uint64_t base = 0;
  {
    std::shared_lock lock(mu_);
    const Entry* e = Find(addr, data.size(), &base);
    if (e == nullptr) return false;
    device = e->device;
  }
  device->Read(addr - base, data);
  return true;
}

bool Bus::Write(uint64_t addr, absl::Span<const uint8_t> data) const {
  std::shared_ptr<BusDevice> device;
  uint64_t base = 0;
  {
    std::shared_lock lock(mu_);
    const Entry* e = Find(addr, data.size(), &base);
    if (e == nullptr) return false;
    device = e->device;
  }
  device->Write(addr - base, data);
  return true;
}

}  // namespace vessel
