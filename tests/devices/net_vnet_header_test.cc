// The vnet header rules: what a tx header (from the guest) and an rx header (from the tap) may ask
// for, given the negotiated features.
#include "devices/net/vnet_header.h"

#include "gtest/gtest.h"

namespace vessel::net {
namespace {

constexpr uint64_t F(unsigned bit) { return 1ull << bit; }

virtio_net_hdr_v1 Hdr(uint8_t flags, uint8_t gso_type) {
  virtio_net_hdr_v1 h{};
  h.flags = flags;
  h.gso_type = gso_type;
  return h;
}

TEST(VnetHeaderTest, SizesMatchTheAbi) {
  EXPECT_EQ(kVnetHdrSize, 12u);
  EXPECT_EQ(kMaxFrameBytes, 12u + 65550u);
}

TEST(VnetHeaderTest, TxPlainFrameAlwaysPasses) {
  virtio_net_hdr_v1 h = Hdr(0, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(SanitizeTxHeader(h, 0), "");
}

TEST(VnetHeaderTest, TxPartialChecksumNeedsCsum) {
  virtio_net_hdr_v1 h = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_NE(SanitizeTxHeader(h, 0), "");
  EXPECT_NE(SanitizeTxHeader(h, F(VIRTIO_NET_F_GUEST_CSUM)), "");  // the other direction's bit
  EXPECT_EQ(SanitizeTxHeader(h, F(VIRTIO_NET_F_CSUM)), "");
}

TEST(VnetHeaderTest, TxGsoNeedsItsHostFeatureAndNeedsCsum) {
  const uint64_t csum = F(VIRTIO_NET_F_CSUM);
  virtio_net_hdr_v1 tso4 = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_NE(SanitizeTxHeader(tso4, csum), "");
  EXPECT_NE(SanitizeTxHeader(tso4, csum | F(VIRTIO_NET_F_HOST_TSO6)), "");
  EXPECT_EQ(SanitizeTxHeader(tso4, csum | F(VIRTIO_NET_F_HOST_TSO4)), "");
  virtio_net_hdr_v1 tso6 = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6);
  EXPECT_EQ(SanitizeTxHeader(tso6, csum | F(VIRTIO_NET_F_HOST_TSO6)), "");
  virtio_net_hdr_v1 no_csum = Hdr(0, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_NE(SanitizeTxHeader(no_csum, csum | F(VIRTIO_NET_F_HOST_TSO4)), "");
  const uint64_t all = csum | F(VIRTIO_NET_F_HOST_TSO4) | F(VIRTIO_NET_F_HOST_TSO6) |
                       F(VIRTIO_NET_F_HOST_UFO) | F(VIRTIO_NET_F_HOST_ECN);
  for (uint8_t type : {uint8_t{VIRTIO_NET_HDR_GSO_UDP}, uint8_t{5},
                       uint8_t{VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN}, uint8_t{0x42}}) {
    virtio_net_hdr_v1 h = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, type);
    EXPECT_NE(SanitizeTxHeader(h, all), "") << "gso_type " << int{type};
  }
}

TEST(VnetHeaderTest, TxFlagsADriverMustNotSetAreCleared) {
  virtio_net_hdr_v1 h =
      Hdr(VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO | 0x80, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(SanitizeTxHeader(h, 0), "");
  EXPECT_EQ(h.flags, 0);
}

TEST(VnetHeaderTest, RxWithoutGuestCsumHasNoFlags) {
  virtio_net_hdr_v1 valid = Hdr(VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(SanitizeRxHeader(valid, 0), "");
  EXPECT_EQ(valid.flags, 0);
  virtio_net_hdr_v1 partial = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_NE(SanitizeRxHeader(partial, 0), "");
  virtio_net_hdr_v1 both = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID, 0);
  EXPECT_EQ(SanitizeRxHeader(both, F(VIRTIO_NET_F_GUEST_CSUM)), "");
  EXPECT_EQ(both.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
}

TEST(VnetHeaderTest, RxGsoNeedsItsGuestFeature) {
  const uint64_t csum = F(VIRTIO_NET_F_GUEST_CSUM);
  virtio_net_hdr_v1 tso4 = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_NE(SanitizeRxHeader(tso4, csum), "");
  EXPECT_EQ(SanitizeRxHeader(tso4, csum | F(VIRTIO_NET_F_GUEST_TSO4)), "");
  virtio_net_hdr_v1 tso6 = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6);
  EXPECT_NE(SanitizeRxHeader(tso6, csum | F(VIRTIO_NET_F_GUEST_TSO4)), "");
  EXPECT_EQ(SanitizeRxHeader(tso6, csum | F(VIRTIO_NET_F_GUEST_TSO6)), "");
  virtio_net_hdr_v1 udp = Hdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP);
  EXPECT_NE(SanitizeRxHeader(udp, csum | F(VIRTIO_NET_F_GUEST_UFO)), "");
}

}  // namespace
}  // namespace vessel::net
