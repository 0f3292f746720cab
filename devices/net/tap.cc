#include "devices/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "devices/net/netns.h"
#include "vmm/base/errors.h"

namespace vessel::net {
namespace {

constexpr char kTunPath[] = "/dev/net/tun";

std::string Where(const std::string& netns_path) {
  return netns_path.empty() ? "" : absl::StrCat(" in network namespace ", netns_path);
}

}  // namespace

absl::StatusOr<Tap> Tap::OpenHere(const std::string& name, const std::string& netns_path) {
  const std::string tap = absl::StrCat("tap ", name, Where(netns_path));
  ScopedFd fd(::open(kTunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT || err == ENODEV || err == ENXIO) {
      return absl::FailedPreconditionError(
          absl::StrCat(tap, ": ", kTunPath, " is missing (", std::strerror(err),
                       "): load the tun module (modprobe tun) or create the node (mknod "
                       "/dev/net/tun c 10 200)"));
    }
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(
          absl::StrCat(tap, ": cannot open ", kTunPath, " (", std::strerror(err),
                       "): run the VMM as root or give it access to the device"));
    }
    return ErrnoStatus(absl::StrCat(tap, ": open ", kTunPath), err);
  }
  unsigned int features = 0;
  if (::ioctl(fd.get(), TUNGETFEATURES, &features) != 0) {
    return ErrnoStatus(absl::StrCat(tap, ": TUNGETFEATURES"));
  }
  if ((features & IFF_VNET_HDR) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        tap, ": this kernel's tun driver has no IFF_VNET_HDR support, which virtio-net needs"));
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());  // size < IFNAMSIZ, checked by the caller
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    switch (err) {
      case EPERM:
      case EACCES:
        return absl::PermissionDeniedError(absl::StrCat(
            tap, ": TUNSETIFF refused (", std::strerror(err),
            "): creating or attaching a tap needs CAP_NET_ADMIN, or a persistent tap owned by "
            "this user (ip tuntap add ", name, " mode tap vnet_hdr user USER)"));
      case EBUSY:
        return absl::FailedPreconditionError(absl::StrCat(
            tap, " is busy: another process (or device) has it open; give each VM its own tap"));
      case EINVAL:
        return absl::InvalidArgumentError(absl::StrCat(
            tap, ": TUNSETIFF refused (", std::strerror(err),
            "): an interface with that name exists and is not a single-queue tap (a tun, a "
            "multi_queue tap or another kind of link); pick another name or recreate it with "
            "ip tuntap add ", name, " mode tap"));
      default:
        return ErrnoStatus(absl::StrCat(tap, ": TUNSETIFF"), err);
    }
  }
  int hdr_size = static_cast<int>(Tap::kVnetHdrSize);
  if (::ioctl(fd.get(), TUNSETVNETHDRSZ, &hdr_size) != 0) {
    return ErrnoStatus(absl::StrCat(tap, ": TUNSETVNETHDRSZ(", hdr_size, ")"));
  }
  // Nothing offloaded towards us until a driver acks the features.
  if (::ioctl(fd.get(), TUNSETOFFLOAD, 0u) != 0) {
    return ErrnoStatus(absl::StrCat(tap, ": TUNSETOFFLOAD(0)"));
  }
  ifreq actual{};
  if (::ioctl(fd.get(), TUNGETIFF, &actual) != 0) {
    return ErrnoStatus(absl::StrCat(tap, ": TUNGETIFF"));
  }
  actual.ifr_name[IFNAMSIZ - 1] = '\0';
  return Tap(std::move(fd), std::string(actual.ifr_name));
}

absl::StatusOr<Tap> Tap::Open(absl::string_view name, const std::string& netns_path) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(
        absl::StrCat("tap name '", name, "' must have 1 to ", IFNAMSIZ - 1, " bytes"));
  }
  const std::string tap_name(name);
  absl::StatusOr<Tap> tap = absl::InternalError("tap not opened");
  absl::Status ns = RunInNetns(netns_path, [&] {
    tap = OpenHere(tap_name, netns_path);
    return tap.status();
  });
  if (!ns.ok()) return ns;
  return tap;
}

absl::Status Tap::SetOffload(unsigned int tun_flags) {
  if (::ioctl(fd_.get(), TUNSETOFFLOAD, tun_flags) != 0) {
    return ErrnoStatus(absl::StrCat("tap ", name_, ": TUNSETOFFLOAD(", tun_flags, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Tap::Read(absl::Span<uint8_t> buffer) {
  for (;;) {
    const ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return ErrnoStatus(absl::StrCat("tap ", name_, ": read"));
  }
}

absl::Status Tap::Write(absl::Span<const uint8_t> frame) {
  for (;;) {
    const ssize_t n = ::write(fd_.get(), frame.data(), frame.size());
    if (n >= 0) {
      if (static_cast<size_t>(n) == frame.size()) return absl::OkStatus();
      return absl::InternalError(
          absl::StrCat("tap ", name_, ": short write of ", n, " of ", frame.size(), " bytes"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      return absl::UnavailableError(absl::StrCat("tap ", name_, ": full (EAGAIN)"));
    }
    return ErrnoStatus(absl::StrCat("tap ", name_, ": write of ", frame.size(), " bytes"));
  }
}

unsigned int TapOffloadsForGuestFeatures(uint64_t acked_features) {
  auto has = [&](unsigned bit) { return (acked_features >> bit) & 1; };
  if (!has(VIRTIO_NET_F_GUEST_CSUM)) return 0;
  unsigned int flags = TUN_F_CSUM;
  if (has(VIRTIO_NET_F_GUEST_TSO4)) flags |= TUN_F_TSO4;
  if (has(VIRTIO_NET_F_GUEST_TSO6)) flags |= TUN_F_TSO6;
  return flags;
}

}  // namespace vessel::net
