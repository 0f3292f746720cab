// virtio-vsock packet parsing / writing, the CONNECT line grammar and config validation.
#include "devices/vsock/packet.h"

#include <cstring>
#include <string>

#include "devices/vsock/unix_muxer.h"
#include "devices/vsock/vsock_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"

namespace vessel::vsock {
namespace {

using ::testing::HasSubstr;
using virtio::testing::Buf;
using virtio::testing::FakeDriver;

constexpr uint64_t kCid = 3;

virtio_vsock_hdr GuestHdr(uint16_t op, uint32_t len = 0) {
  virtio_vsock_hdr h{};
  h.src_cid = kCid;
  h.dst_cid = 2;
  h.src_port = 1234;
  h.dst_port = 80;
  h.len = len;
  h.type = VIRTIO_VSOCK_TYPE_STREAM;
  h.op = op;
  h.buf_alloc = 4096;
  h.fwd_cnt = 7;
  return h;
}

class PacketTest : public ::testing::Test {
 protected:
  // Lays out `bufs`, writes `bytes` across them from the start, publishes and pops the chain.
  TxPacket Parse(const std::vector<Buf>& bufs, const std::string& bytes) {
    std::vector<virtio::Descriptor> d = driver_.WriteChain(0, bufs);
    size_t off = 0;
    for (const virtio::Descriptor& desc : d) {
      const size_t n = std::min<size_t>(desc.len, bytes.size() - std::min(off, bytes.size()));
      if (n > 0) {
        EXPECT_TRUE(driver_.mem().Write(desc.addr, bytes.data() + off, n).ok());
      }
      off += n;
    }
    driver_.Publish(0);
    std::optional<virtio::DescriptorChain> chain = driver_.PopChain();
    EXPECT_TRUE(chain.has_value());
    return ParseTxPacket(driver_.mem(), *chain, kCid);
  }
  static std::string Bytes(const virtio_vsock_hdr& h, const std::string& payload = "") {
    std::string s(reinterpret_cast<const char*>(&h), sizeof(h));
    return s + payload;
  }

  FakeDriver driver_{16};
};

TEST_F(PacketTest, ValidRwAcrossDescriptors) {
  // Header split over two buffers, payload over two more.
  TxPacket p = Parse({{20, false}, {24, false}, {3, false}, {10, false}},
                     Bytes(GuestHdr(VIRTIO_VSOCK_OP_RW, 13), "hello, world!"));
  ASSERT_EQ(p.verdict, TxVerdict::kOk) << p.problem;
  EXPECT_EQ(uint32_t{p.hdr.len}, 13u);
  EXPECT_EQ(uint32_t{p.hdr.src_port}, 1234u);
  EXPECT_EQ(uint32_t{p.hdr.fwd_cnt}, 7u);
  ASSERT_TRUE(p.payload.has_value());
  char got[13];
  ASSERT_TRUE(p.payload->Read(got, 13).ok());
  EXPECT_EQ(std::string(got, 13), "hello, world!");
}

TEST_F(PacketTest, ShortHeaderIsDropped) {
  TxPacket p = Parse({{43, false}}, Bytes(GuestHdr(VIRTIO_VSOCK_OP_RW)).substr(0, 43));
  EXPECT_EQ(p.verdict, TxVerdict::kDrop);
  EXPECT_THAT(p.problem, HasSubstr("shorter than the 44-byte header"));
}

TEST_F(PacketTest, WritableOnlyChainIsDropped) {
  TxPacket p = Parse({{64, true}}, "");
  EXPECT_EQ(p.verdict, TxVerdict::kDrop);
}

TEST_F(PacketTest, MalformedChainIsDropped) {
  driver_.WriteDesc(0, 0x7fff00000000, 64, 0);  // outside RAM
  driver_.Publish(0);
  std::optional<virtio::DescriptorChain> chain = driver_.PopChain();
  TxPacket p = ParseTxPacket(driver_.mem(), *chain, kCid);
  EXPECT_EQ(p.verdict, TxVerdict::kDrop);
  EXPECT_THAT(p.problem, HasSubstr("malformed chain"));
}

TEST_F(PacketTest, WrongSourceCidIsDropped) {
  virtio_vsock_hdr h = GuestHdr(VIRTIO_VSOCK_OP_REQUEST);
  h.src_cid = 4;
  TxPacket p = Parse({{44, false}}, Bytes(h));
  EXPECT_EQ(p.verdict, TxVerdict::kDrop);
  EXPECT_THAT(p.problem, HasSubstr("source CID 4"));
}

TEST_F(PacketTest, BadTypeIsReset) {
  virtio_vsock_hdr h = GuestHdr(VIRTIO_VSOCK_OP_REQUEST);
  h.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
  TxPacket p = Parse({{44, false}}, Bytes(h));
  EXPECT_EQ(p.verdict, TxVerdict::kReset);
  EXPECT_THAT(p.problem, HasSubstr("not STREAM"));
  const virtio_vsock_hdr rst = ResetReply(p.hdr);
  EXPECT_EQ(uint16_t{rst.op}, VIRTIO_VSOCK_OP_RST);
  EXPECT_EQ(uint16_t{rst.type}, VIRTIO_VSOCK_TYPE_SEQPACKET);
  EXPECT_EQ(uint64_t{rst.dst_cid}, kCid);
  EXPECT_EQ(uint32_t{rst.dst_port}, 1234u);
  EXPECT_EQ(uint32_t{rst.src_port}, 80u);
}

TEST_F(PacketTest, WrongDestinationCidIsReset) {
  virtio_vsock_hdr h = GuestHdr(VIRTIO_VSOCK_OP_REQUEST);
  h.dst_cid = 5;
  TxPacket p = Parse({{44, false}}, Bytes(h));
  EXPECT_EQ(p.verdict, TxVerdict::kReset);
  EXPECT_THAT(p.problem, HasSubstr("destination CID 5"));
}

TEST_F(PacketTest, UnknownOpsAreReset) {
  for (uint16_t op : {uint16_t{0}, uint16_t{8}, uint16_t{0xffff}}) {
    TxPacket p = Parse({{44, false}}, Bytes(GuestHdr(op)));
    EXPECT_EQ(p.verdict, TxVerdict::kReset) << op;
    EXPECT_THAT(p.problem, HasSubstr("unknown op"));
  }
}

TEST_F(PacketTest, LengthBeyondTheChainIsReset) {
  TxPacket p = Parse({{44, false}, {10, false}}, Bytes(GuestHdr(VIRTIO_VSOCK_OP_RW, 11), "0123456789"));
  EXPECT_EQ(p.verdict, TxVerdict::kReset);
  EXPECT_THAT(p.problem, HasSubstr("chain holds 10"));
}

TEST_F(PacketTest, LengthOverTheCapIsReset) {
  // The chain really holds the bytes: the cap alone refuses it.
  TxPacket p = Parse({{44, false}, {kMaxPayload + 1, false}},
                     Bytes(GuestHdr(VIRTIO_VSOCK_OP_RW, kMaxPayload + 1)));
  EXPECT_EQ(p.verdict, TxVerdict::kReset);
  EXPECT_THAT(p.problem, HasSubstr("exceeds the 65536-byte cap"));
}

TEST_F(PacketTest, WriteRxPacketSpansBuffersAndRefusesTooSmallOnes) {
  std::vector<virtio::Descriptor> d = driver_.WriteChain(0, {{30, true}, {30, true}});
  virtio::ChainWriter w(driver_.mem(), d);
  virtio_vsock_hdr h = HostHeader(kCid, 1u << 30, 1234, VIRTIO_VSOCK_OP_RW, 5);
  const uint8_t payload[5] = {'a', 'b', 'c', 'd', 'e'};
  ASSERT_TRUE(WriteRxPacket(w, h, payload).ok());
  EXPECT_EQ(w.bytes_written(), 49u);
  virtio_vsock_hdr got{};
  ASSERT_TRUE(driver_.mem().Read(d[0].addr, &got, 30).ok());
  ASSERT_TRUE(driver_.mem().Read(d[1].addr, reinterpret_cast<uint8_t*>(&got) + 30, 14).ok());
  EXPECT_EQ(std::memcmp(&got, &h, sizeof(h)), 0);
  EXPECT_EQ(uint64_t{got.src_cid}, 2u);
  char p[5];
  ASSERT_TRUE(driver_.mem().Read(d[1].addr + 14, p, 5).ok());
  EXPECT_EQ(std::string(p, 5), "abcde");

  std::vector<virtio::Descriptor> small = driver_.WriteChain(4, {{40, true}});
  virtio::ChainWriter w2(driver_.mem(), small);
  EXPECT_EQ(WriteRxPacket(w2, HostHeader(kCid, 1, 2, VIRTIO_VSOCK_OP_RST)).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(w2.bytes_written(), 0u);
}

TEST(ConnectLineTest, Grammar) {
  EXPECT_EQ(ParseConnectLine("CONNECT 1234").value(), 1234u);
  EXPECT_EQ(ParseConnectLine("connect 52").value(), 52u);
  EXPECT_EQ(ParseConnectLine("CoNnEcT 0").value(), 0u);
  EXPECT_EQ(ParseConnectLine("CONNECT 4294967294\r").value(), 4294967294u);
  EXPECT_EQ(ParseConnectLine("  CONNECT\t7 ").value(), 7u);
  EXPECT_FALSE(ParseConnectLine("CONNECT 4294967295").ok());  // VMADDR_PORT_ANY
  EXPECT_FALSE(ParseConnectLine("CONNECT 99999999999").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECT -1").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECT 0x10").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECT +5").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECT").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECT 5 6").ok());
  EXPECT_FALSE(ParseConnectLine("CONNECTX 5").ok());
  EXPECT_FALSE(ParseConnectLine("GET / HTTP/1.1").ok());
  EXPECT_FALSE(ParseConnectLine("").ok());
  EXPECT_FALSE(ParseConnectLine(std::string("CONNECT 5\0", 10)).ok());
}

TEST(VsockConfigTest, Validation) {
  VsockConfig c;
  c.guest_cid = 3;
  c.uds_path = "/tmp/v.sock";
  EXPECT_TRUE(ValidateVsockConfig(c).ok());
  c.guest_cid = 2;
  EXPECT_THAT(std::string(ValidateVsockConfig(c).message()), HasSubstr("out of range"));
  c.guest_cid = 0xffffffff;
  EXPECT_FALSE(ValidateVsockConfig(c).ok());
  c.guest_cid = 0xfffffffe;
  EXPECT_TRUE(ValidateVsockConfig(c).ok());
  c.uds_path = "";
  EXPECT_FALSE(ValidateVsockConfig(c).ok());
  c.uds_path = "/" + std::string(96, 'a');  // 97 bytes: "_4294967294" would not fit
  EXPECT_THAT(std::string(ValidateVsockConfig(c).message()), HasSubstr("use a shorter path"));
  c.uds_path = "/" + std::string(95, 'a');
  EXPECT_TRUE(ValidateVsockConfig(c).ok());
  c.buf_alloc = 100;
  EXPECT_FALSE(ValidateVsockConfig(c).ok());
}

}  // namespace
}  // namespace vessel::vsock
