// Tap: opening / creating taps inside a network namespace, and the errors for what goes wrong.
#include "devices/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "devices/net/netns.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/net_test_env.h"

namespace vessel::net {
namespace {

using ::testing::HasSubstr;
using testing::ScratchNetns;

class TapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ScratchNetns>> ns = ScratchNetns::Create();
    if (!ns.ok()) GTEST_SKIP() << "cannot make a scratch network namespace: " << ns.status();
    ns_ = std::move(*ns);
  }
  std::unique_ptr<ScratchNetns> ns_;
};

TEST_F(TapTest, CreatesATapInsideTheNamespaceWithA12ByteVnetHeader) {
  absl::StatusOr<Tap> tap = Tap::Open("vtest0", ns_->path());
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(tap->name(), "vtest0");
  int hdr = 0;
  ASSERT_EQ(::ioctl(tap->fd(), TUNGETVNETHDRSZ, &hdr), 0);
  EXPECT_EQ(hdr, 12);
  ifreq ifr{};
  ASSERT_EQ(::ioctl(tap->fd(), TUNGETIFF, &ifr), 0);
  EXPECT_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
            IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  EXPECT_NE(::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC, 0);
  // It lives in the scratch namespace, not in ours.
  EXPECT_TRUE(ns_->IfIndex("vtest0").ok());
  EXPECT_EQ(::if_nametoindex("vtest0"), 0u);
  // Nothing to read yet.
  uint8_t buf[2048];
  absl::StatusOr<size_t> n = tap->Read(absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
}

TEST_F(TapTest, AttachesToAnExistingPersistentTap) {
  // Made beforehand, as `ip tuntap add vpers0 mode tap vnet_hdr` would.
  ASSERT_TRUE(ns_->Run([] {
                   int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
                   if (fd < 0) return absl::InternalError("open /dev/net/tun");
                   ifreq ifr{};
                   std::strcpy(ifr.ifr_name, "vpers0");
                   ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
                   const bool ok =
                       ::ioctl(fd, TUNSETIFF, &ifr) == 0 && ::ioctl(fd, TUNSETPERSIST, 1) == 0;
                   ::close(fd);
                   return ok ? absl::OkStatus() : absl::InternalError("TUNSETIFF/TUNSETPERSIST");
                 })
                  .ok());
  absl::StatusOr<int> before = ns_->IfIndex("vpers0");
  ASSERT_TRUE(before.ok());
  absl::StatusOr<Tap> tap = Tap::Open("vpers0", ns_->path());
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_EQ(ns_->IfIndex("vpers0").value_or(-1), *before);
}

TEST_F(TapTest, ATapSomeoneHasOpenIsBusy) {
  absl::StatusOr<Tap> first = Tap::Open("vbusy0", ns_->path());
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<Tap> second = Tap::Open("vbusy0", ns_->path());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("vbusy0 in network namespace"));
  EXPECT_THAT(second.status().message(), HasSubstr("busy"));
}

TEST_F(TapTest, ANameTakenByAnotherKindOfInterfaceIsRefused) {
  absl::StatusOr<Tap> tap = Tap::Open("lo", ns_->path());
  ASSERT_FALSE(tap.ok());
  EXPECT_EQ(tap.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tap.status().message(), HasSubstr("not a single-queue tap"));
}

TEST_F(TapTest, BadNamesAreRefusedBeforeAnythingIsOpened) {
  EXPECT_EQ(Tap::Open("", ns_->path()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tap::Open("a-name-far-too-long", ns_->path()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TapTest, OffloadsCanBeSetAndCleared) {
  absl::StatusOr<Tap> tap = Tap::Open("voff0", ns_->path());
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_TRUE(tap->SetOffload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6).ok());
  EXPECT_TRUE(tap->SetOffload(0).ok());
}

TEST(TapNamespaceTest, MissingNamespaceFileIsNotFoundAndNamesThePath) {
  absl::StatusOr<Tap> tap = Tap::Open("vx0", "/var/run/netns/vessel-no-such-namespace");
  ASSERT_FALSE(tap.ok());
  EXPECT_EQ(tap.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tap.status().message(), HasSubstr("/var/run/netns/vessel-no-such-namespace"));
  EXPECT_THAT(tap.status().message(), HasSubstr("ip netns add"));
}

TEST(TapNamespaceTest, AFileThatIsNotANetworkNamespaceIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "setns needs CAP_SYS_ADMIN to report EINVAL";
  for (const char* path : {"/proc/self/ns/uts", "/dev/null"}) {
    absl::Status s = RunInNetns(path, [] { return absl::OkStatus(); });
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << path << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr("is not a network namespace")) << path;
  }
}

TEST(TapNamespaceTest, RunInNetnsLeavesTheCallersNamespaceAlone) {
  auto self_ns = [] {
    struct stat st {};
    ::stat("/proc/thread-self/ns/net", &st);
    return st.st_ino;
  };
  const ino_t before = self_ns();
  absl::StatusOr<std::unique_ptr<ScratchNetns>> ns = ScratchNetns::Create();
  if (!ns.ok()) GTEST_SKIP() << ns.status();
  ino_t inside = 0;
  ASSERT_TRUE(RunInNetns((*ns)->path(), [&] {
                inside = self_ns();
                return absl::OkStatus();
              }).ok());
  EXPECT_NE(inside, before);
  EXPECT_EQ(self_ns(), before);
  // The function's status comes back.
  EXPECT_EQ(RunInNetns((*ns)->path(), [] { return absl::DataLossError("x"); }).code(),
            absl::StatusCode::kDataLoss);
}

TEST(TapOffloadTest, GuestFeaturesMapToTunOffloads) {
  auto f = [](std::initializer_list<unsigned> bits) {
    uint64_t v = 0;
    for (unsigned b : bits) v |= 1ull << b;
    return v;
  };
  EXPECT_EQ(TapOffloadsForGuestFeatures(0), 0u);
  EXPECT_EQ(TapOffloadsForGuestFeatures(f({VIRTIO_NET_F_GUEST_CSUM})), unsigned{TUN_F_CSUM});
  EXPECT_EQ(TapOffloadsForGuestFeatures(
                f({VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6})),
            unsigned{TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6});
  // TSO without checksum offload is not allowed by the spec: nothing offloaded.
  EXPECT_EQ(TapOffloadsForGuestFeatures(f({VIRTIO_NET_F_GUEST_TSO4})), 0u);
  // Host-side features do not matter here.
  EXPECT_EQ(TapOffloadsForGuestFeatures(f({VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4})), 0u);
}

}  // namespace
}  // namespace vessel::net
