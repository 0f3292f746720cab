#include "guest/agent/machine_state.h"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "guest/agent/fs_util.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::agent {
namespace {

constexpr char kRandomDev[] = "/dev/urandom";
constexpr char kEntropyAvail[] = "/proc/sys/kernel/random/entropy_avail";

// The input pool's credited bits; 0 if unreadable (the response says so).
uint32_t ReadEntropyAvail() {
  absl::StatusOr<std::string> text = ReadSmallFile(kEntropyAvail);
  uint32_t bits = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &bits)) return 0;
  return bits;
}

}  // namespace

absl::StatusOr<v1::ReseedRandomDevResponse> ReseedRandomDev(const v1::ReseedRandomDevRequest& req,
                                                            bool host_mode) {
  const std::string& data = req.data();
  if (data.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data is empty: ReseedRandomDev needs 1..", kMaxReseedBytes, " random bytes"));
  }
  if (data.size() > kMaxReseedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("data is ", data.size(), " bytes: at most ",
                                                   kMaxReseedBytes, " (kMaxReseedBytes)"));
  }
  v1::ReseedRandomDevResponse resp;
  resp.set_entropy_avail_before(ReadEntropyAvail());
  ScopedFd fd(::open(kRandomDev, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("open ", kRandomDev));

  // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }, the bytes after the
  // header (the kernel copies buf_size bytes from buf).
  const int credit = host_mode ? 0 : static_cast<int>(data.size() * 8);
  const int size = static_cast<int>(data.size());
  constexpr size_t kHeader = offsetof(rand_pool_info, buf);
  // uint32_t storage: aligned for the struct's ints and __u32 buf.
  std::vector<uint32_t> storage((kHeader + data.size() + sizeof(uint32_t) - 1) / sizeof(uint32_t));
  auto* bytes = reinterpret_cast<unsigned char*>(storage.data());
  std::memcpy(bytes + offsetof(rand_pool_info, entropy_count), &credit, sizeof(credit));
  std::memcpy(bytes + offsetof(rand_pool_info, buf_size), &size, sizeof(size));
  std::memcpy(bytes + kHeader, data.data(), data.size());
  if (::ioctl(fd.get(), RNDADDENTROPY, storage.data()) != 0) {
    return ErrnoStatus(absl::StrCat("ioctl RNDADDENTROPY (", data.size(), " bytes, ", credit,
                                    " bits) on ", kRandomDev));
  }
  resp.set_entropy_bits_credited(static_cast<uint32_t>(credit));
  if (::ioctl(fd.get(), RNDRESEEDCRNG) == 0) {
    resp.set_crng_reseeded(true);
  } else if (errno == ENODATA) {
    // The CRNG is not initialized yet: the bytes are in the pool and the kernel reseeds from it
    // when it gets there.
    LogWarning("agent: ReseedRandomDev: the kernel's CRNG is not initialized yet (entropy_avail ",
               ReadEntropyAvail(), "): mixed in, not reseeded");
  } else {
    return ErrnoStatus(absl::StrCat("ioctl RNDRESEEDCRNG on ", kRandomDev));
  }
  resp.set_entropy_avail_after(ReadEntropyAvail());
  return resp;
}

absl::Status SetGuestDateTime(const v1::SetGuestDateTimeRequest& req, bool host_mode) {
  if (req.sec() < 0 || req.sec() > kMaxSettableSec) {
    return absl::InvalidArgumentError(absl::StrCat("sec is ", req.sec(), ": must be 0..",
                                                   kMaxSettableSec, " (seconds since the epoch)"));
  }
  if (req.usec() < 0 || req.usec() > 999999) {
    return absl::InvalidArgumentError(
        absl::StrCat("usec is ", req.usec(), ": must be 0..999999"));
  }
  if (host_mode) {
    LogInfo("agent: host mode: SetGuestDateTime ", req.sec(), ".", absl::Dec(req.usec(), absl::kZeroPad6),
            " not applied (never the host's clock)");
    return absl::OkStatus();
  }
  struct timespec before {};
  ::clock_gettime(CLOCK_REALTIME, &before);
  struct timespec ts {};
  ts.tv_sec = static_cast<time_t>(req.sec());
  ts.tv_nsec = static_cast<long>(req.usec() * 1000);
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) return ErrnoStatus("clock_settime CLOCK_REALTIME");
  LogInfo("agent: CLOCK_REALTIME set to ", req.sec(), ".", absl::Dec(req.usec(), absl::kZeroPad6),
          " (was ", before.tv_sec, ")");
  return absl::OkStatus();
}

}  // namespace vessel::agent
