#include "shim/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace vessel::shim {
namespace {

TEST(ShimLogTest, LogfmtLineWithTheSandbox) {
  ShimLog log(-1, "k8s.io", "c1");
  absl::Time t = absl::FromUnixSeconds(1763950000) + absl::Nanoseconds(42);
  EXPECT_EQ(log.Format("info", "created task c1", t),
            "time=\"2025-11-24T02:06:40.000000042Z\" level=info msg=\"created task c1\" "
            "runtime=io.containerd.vessel.v2 namespace=\"k8s.io\" id=\"c1\"");
  log.set_sandbox("pod1");
  EXPECT_NE(log.Format("info", "x", t).find(" sandbox=\"pod1\""), std::string::npos);
}

TEST(ShimLogTest, QuotesUntrustedText) {
  EXPECT_EQ(QuoteLogValue("a\"b\\c\nd\te\x01"), "\"a\\\"b\\\\c\\nd\\te\\x01\"");
}

TEST(ShimLogTest, OneLinePerCallAndDebugOnlyWhenAsked) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_NONBLOCK), 0);
  {
    ShimLog log(p[1], "default", "c1", /*debug=*/false);
    log.Info("one");
    log.Debug("hidden");
    log.Error("two\nlines");
  }
  char buf[4096];
  ssize_t n = ::read(p[0], buf, sizeof(buf));
  ASSERT_GT(n, 0);
  std::string out(buf, static_cast<size_t>(n));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2);
  EXPECT_EQ(out.find("hidden"), std::string::npos);
  EXPECT_NE(out.find("msg=\"two\\nlines\""), std::string::npos);
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace
}  // namespace vessel::shim
