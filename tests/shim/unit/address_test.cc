#include "shim/address.h"

#include <gtest/gtest.h>

namespace vessel::shim {
namespace {

// Expected values computed by containerd 1.6's own code path: Go's
// sha256.Sum256([]byte(filepath.Join(socketPath, ns, id))) formatted as in shim.SocketAddress.
TEST(SocketAddressTest, MatchesContainerdVectors) {
  EXPECT_EQ(*SocketAddress("/run/containerd/containerd.sock", "default", "c1"),
            "unix:///run/containerd/s/d25aa4ef11a84e954e74a5bcff06557d0b6ea8d0c00243896f29826694bbd888");
  EXPECT_EQ(*SocketAddress("/run/containerd//containerd.sock/", "k8s.io",
                           "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            "unix:///run/containerd/s/428e2faf0a8621e508bdf59b20b756691d7b9e23d6f777125dc830568aeab725");
  EXPECT_EQ(*SocketAddress("/tmp/x/../ctrd/containerd.sock", "ns", "pod.1"),
            "unix:///run/containerd/s/d777acae4243b7d6e8e40f07011e59950b95fe3765e8652a1ed34082eb5e85c1");
  EXPECT_EQ(*SocketAddress("", "default", "c1"),
            "unix:///run/containerd/s/3a4ba0ad328f407b30cccb555302fc1c4c73e1d92d16d2583787f9faddf320ca");
}

TEST(SocketAddressTest, NeedsNamespaceAndId) {
  EXPECT_EQ(SocketAddress("/run/containerd/containerd.sock", "", "c1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SocketAddress("/run/containerd/containerd.sock", "default", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SocketAddressTest, PathFitsTheLimit) {
  std::string address = *SocketAddress("/run/containerd/containerd.sock", "default", "c1");
  absl::StatusOr<std::string> path = SocketPath(address);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, "/run/containerd/s/d25aa4ef11a84e954e74a5bcff06557d0b6ea8d0c00243896f29826694bbd888");
  EXPECT_LE(path->size(), kSocketPathLimit);
  EXPECT_FALSE(SocketPath("/run/x.sock").ok());  // abstract in containerd's terms
  EXPECT_FALSE(SocketPath("unix://").ok());
  EXPECT_FALSE(SocketPath("unix:///" + std::string(200, 'a')).ok());
}

TEST(CleanPathTest, LikeGo) {
  EXPECT_EQ(CleanPath(""), ".");
  EXPECT_EQ(CleanPath("/"), "/");
  EXPECT_EQ(CleanPath("//a//b/"), "/a/b");
  EXPECT_EQ(CleanPath("/a/./b/../c"), "/a/c");
  EXPECT_EQ(CleanPath("/../a"), "/a");
  EXPECT_EQ(CleanPath("../a/.."), "..");
  EXPECT_EQ(CleanPath("a/../.."), "..");
  EXPECT_EQ(CleanPath("./"), ".");
}

TEST(PodMembershipTest, StandaloneContainer) {
  absl::StatusOr<PodMembership> m = PodMembershipFromSpec(nlohmann::json::object(), "c1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sandbox_id, "c1");
  EXPECT_FALSE(m->joins_existing_pod);
  m = PodMembershipFromSpec({{"annotations", nullptr}}, "c1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sandbox_id, "c1");
}

TEST(PodMembershipTest, CriSandboxAndItsContainers) {
  nlohmann::json sandbox = {{"annotations",
                             {{"io.kubernetes.cri.container-type", "sandbox"},
                              {"io.kubernetes.cri.sandbox-id", "pod1"}}}};
  absl::StatusOr<PodMembership> m = PodMembershipFromSpec(sandbox, "pod1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sandbox_id, "pod1");
  EXPECT_FALSE(m->joins_existing_pod);

  nlohmann::json container = {{"annotations",
                               {{"io.kubernetes.cri.container-type", "container"},
                                {"io.kubernetes.cri.sandbox-id", "pod1"}}}};
  m = PodMembershipFromSpec(container, "app");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sandbox_id, "pod1");
  EXPECT_TRUE(m->joins_existing_pod);
  // Same socket as the sandbox's shim.
  EXPECT_EQ(*SocketAddress("/run/containerd/containerd.sock", "k8s.io", m->sandbox_id),
            *SocketAddress("/run/containerd/containerd.sock", "k8s.io", "pod1"));
}

TEST(PodMembershipTest, RejectsBadAnnotations) {
  EXPECT_EQ(PodMembershipFromSpec({{"annotations", "x"}}, "c1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PodMembershipFromSpec({{"annotations", {{"io.kubernetes.cri.sandbox-id", 5}}}}, "c1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PodMembershipFromSpec({{"annotations", {{"io.kubernetes.cri.sandbox-id", "../../etc"}}}}, "c1")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NamespaceTest, LikeContainerd) {
  EXPECT_TRUE(IsValidNamespace("default"));
  EXPECT_TRUE(IsValidNamespace("k8s.io"));
  EXPECT_TRUE(IsValidNamespace("vessel-test"));
  EXPECT_TRUE(IsValidNamespace("a_b.c-d"));
  EXPECT_FALSE(IsValidNamespace(""));
  EXPECT_FALSE(IsValidNamespace(".."));
  EXPECT_FALSE(IsValidNamespace("a/b"));
  EXPECT_FALSE(IsValidNamespace("-a"));
  EXPECT_FALSE(IsValidNamespace("a-"));
  EXPECT_FALSE(IsValidNamespace("a..b"));
  EXPECT_FALSE(IsValidNamespace(std::string(77, 'a')));
}

TEST(IdTest, Valid) {
  EXPECT_TRUE(IsValidId("abc-1.2_3"));
  EXPECT_TRUE(IsValidId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidId(std::string(65, 'a')));
  EXPECT_FALSE(IsValidId(""));
  EXPECT_FALSE(IsValidId("a/b"));
  EXPECT_FALSE(IsValidId("a b"));
}

}  // namespace
}  // namespace vessel::shim
