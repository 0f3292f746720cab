// Minimal leveled logging to stderr, plus a rate limiter for guest-triggerable messages.
#ifndef VESSEL_VMM_BASE_LOG_H_
#define VESSEL_VMM_BASE_LOG_H_

#include <atomic>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace vessel {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Writes one line "vessel[LEVEL] message" to stderr. Thread-safe (one write(2) per line).
void LogLine(LogLevel level, absl::string_view message);
// Lines below `level` are dropped (default: kInfo). For a program's main(), e.g. a quiet CLI.
void SetMinLogLevel(LogLevel level);

template <typename... Args>
void LogInfo(const Args&... args) { LogLine(LogLevel::kInfo, absl::StrCat(args...)); }
template <typename... Args>
void LogWarning(const Args&... args) { LogLine(LogLevel::kWarning, absl::StrCat(args...)); }
template <typename... Args>
void LogError(const Args&... args) { LogLine(LogLevel::kError, absl::StrCat(args...)); }

// Lets through the first `burst` events, then one in every `every`; counts the rest.
// For messages a guest can trigger at will (bad register accesses, unknown ports).
class RateLimiter {
 public:
  explicit RateLimiter(uint64_t burst = 10, uint64_t every = 1000) : burst_(burst), every_(every) {}
  // True when this event should be logged.
  bool Allow() {
    uint64_t n = count_.fetch_add(1, std::memory_order_relaxed);
    return n < burst_ || (n - burst_) % every_ == every_ - 1;
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  const uint64_t burst_;
  const uint64_t every_;
  std::atomic<uint64_t> count_{0};
};

}  // namespace vessel

#endif  // VESSEL_VMM_BASE_LOG_H_
