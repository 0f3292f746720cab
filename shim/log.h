// The shim's log: logfmt lines (time, level, msg, runtime, namespace, id, sandbox) written to one fd,
// the bundle's `log` FIFO that containerd copies into its own log. Thread-safe (one write(2) per
// line); a full FIFO drops the line rather than stalling the shim.
#ifndef VESSEL_SHIM_LOG_H_
#define VESSEL_SHIM_LOG_H_

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vessel::shim {

class ShimLog {
 public:
  // `fd` is not owned.
  ShimLog(int fd, std::string ns, std::string id, bool debug = false)
      : fd_(fd), ns_(std::move(ns)), id_(std::move(id)), debug_(debug) {}

  void set_sandbox(std::string sandbox_id);

  void Debug(absl::string_view msg) { if (debug_) Write("debug", msg); }
  void Info(absl::string_view msg) { Write("info", msg); }
  void Warn(absl::string_view msg) { Write("warning", msg); }
  void Error(absl::string_view msg) { Write("error", msg); }

  // One line, without the trailing newline (for tests).
  std::string Format(absl::string_view level, absl::string_view msg, absl::Time now) const;

 private:
  void Write(absl::string_view level, absl::string_view msg);

  const int fd_;
  const std::string ns_;
  const std::string id_;
  const bool debug_;
  mutable std::mutex mu_;
  std::string sandbox_;  // mu_
};

// logfmt quoting: "..." with \" \\ \n \t escaped and other control bytes as \xNN.
std::string QuoteLogValue(absl::string_view value);

}  // namespace vessel::shim

#endif  // VESSEL_SHIM_LOG_H_
