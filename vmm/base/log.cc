#include "vmm/base/log.h"

#include <unistd.h>

#include <string>

namespace vessel {

void LogLine(LogLevel level, absl::string_view message) {
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
