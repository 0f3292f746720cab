#include "vmm/base/log.h"

#include <unistd.h>

#include <string>

namespace vessel {
namespace {
// The process's logging threshold: the one piece of process-wide state, set by main().
std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};
}  // namespace

void SetMinLogLevel(LogLevel level) { min_level.store(static_cast<int>(level), std::memory_order_relaxed); }

void LogLine(LogLevel level, absl::string_view message) {
  if (static_cast<int>(level) < min_level.load(std::memory_order_relaxed)) return;
  const char* tag = "info";
  switch (level) {
    case LogLevel::kDebug: tag = "debug"; break;
    case LogLevel::kInfo: tag = "info"; break;
    case LogLevel::kWarning: tag = "warning"; break;
    case LogLevel::kError: tag = "error"; break;
  }
  std::string line = absl::StrCat("vessel[", tag, "] ", message, "\n");
  // One write so concurrent lines from vCPU threads don't interleave.
  ssize_t unused = ::write(STDERR_FILENO, line.data(), line.size());
  (void)unused;
}

}  // namespace vessel
