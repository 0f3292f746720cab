// virtio-vsock through the real device (its I/O thread, the Unix muxer, real sockets in a temp
// dir), with FakeVsockGuest as the guest driver. Every wait is on a condition with a timeout.
#include "devices/vsock/vsock_device.h"

#include <fcntl.h>
#include <linux/virtio_ids.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/vsock_test_guest.h"

namespace vessel::vsock {
namespace {

using ::testing::HasSubstr;
using testing::AcceptWithTimeout;
using testing::FakeVsockGuest;
using testing::ReadLine;
using testing::ReadN;
using testing::RxPacket;
using testing::UnixConnect;
using testing::UnixListen;
using testing::WaitEof;
using testing::WriteAll;

constexpr uint32_t kGuestPort = 52;
constexpr uint32_t kHostPort = 1024;
constexpr auto kShort = std::chrono::milliseconds(200);

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

class VsockDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.guest_cid = testing::kGuestCid;
    config_.uds_path = dir_.path() + "/v.sock";
  }
  void TearDown() override {
    dev_.reset();
    guest_.reset();
  }

  void Create() {
    absl::StatusOr<std::unique_ptr<VsockDevice>> dev = VsockDevice::Create(config_);
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
  }
  // A fresh guest driver, activated, with `rx` buffers posted.
  void Activate(int rx = 64) {
    guest_ = std::make_unique<FakeVsockGuest>([this](uint16_t q) { dev_->NotifyQueue(q); });
    ASSERT_TRUE(dev_->Activate(guest_->Context()).ok());
    if (rx > 0) guest_->PostRx(rx);
  }
  void Start(int rx = 64) {
    Create();
    Activate(rx);
  }
  static virtio_vsock_hdr Hdr(uint16_t op, uint32_t guest_port, uint32_t host_port,
                              uint32_t len = 0, uint32_t buf_alloc = 256 * 1024,
                              uint32_t fwd_cnt = 0, uint32_t flags = 0) {
    return FakeVsockGuest::Hdr(op, guest_port, host_port, len, buf_alloc, fwd_cnt, flags);
  }
  std::string HostPath(uint32_t port) { return absl::StrCat(config_.uds_path, "_", port); }

  // Guest → host: REQUEST, RESPONSE, then the accepted host socket.
  ScopedFd GuestConnect(int listener, uint32_t guest_port, uint32_t host_port,
                        uint32_t buf_alloc = 256 * 1024) {
    guest_->Send(Hdr(VIRTIO_VSOCK_OP_REQUEST, guest_port, host_port, 0, buf_alloc));
    std::optional<RxPacket> resp = guest_->WaitOp(VIRTIO_VSOCK_OP_RESPONSE, guest_port, host_port);
    EXPECT_TRUE(resp.has_value()) << "no RESPONSE for guest port " << guest_port;
    if (resp.has_value()) {
      EXPECT_EQ(uint32_t{resp->hdr.buf_alloc}, config_.buf_alloc);
    }
    return AcceptWithTimeout(listener);
  }
  // The guest's view of a host-initiated REQUEST to `guest_port`: the host port, or 0.
  uint32_t WaitRequest(uint32_t guest_port) {
    std::optional<RxPacket> req = guest_->WaitPacket([&](const RxPacket& p) {
      return p.op() == VIRTIO_VSOCK_OP_REQUEST && p.dst_port() == guest_port;
    });
    EXPECT_TRUE(req.has_value()) << "no REQUEST for guest port " << guest_port;
    return req.has_value() ? req->src_port() : 0;
  }
  // Host → guest over the Unix listener, accepted by the guest: the client and its host port.
  std::pair<ScopedFd, uint32_t> HostConnect(uint32_t guest_port, uint32_t buf_alloc = 256 * 1024) {
    ScopedFd client = UnixConnect(config_.uds_path);
    WriteAll(client.get(), absl::StrCat("CONNECT ", guest_port, "\n"));
    const uint32_t host_port = WaitRequest(guest_port);
    EXPECT_GE(host_port, kFirstLocalPort);
    guest_->Send(Hdr(VIRTIO_VSOCK_OP_RESPONSE, guest_port, host_port, 0, buf_alloc));
    EXPECT_EQ(ReadLine(client.get()), absl::StrCat("OK ", host_port, "\n"));
    return {std::move(client), host_port};
  }
  // Receives exactly `n` RW bytes for the connection.
  std::string GuestRead(uint32_t guest_port, uint32_t host_port, size_t n) {
    std::string got;
    guest_->WaitFor([&] {
      got += guest_->TakeData(guest_port, host_port);
      return got.size() >= n;
    });
    return got;
  }
  void GuestWrite(uint32_t guest_port, uint32_t host_port, const std::string& data,
                  uint32_t* tx_cnt = nullptr) {
    for (size_t off = 0; off < data.size(); off += FakeVsockGuest::kTxSlotPayload) {
      const std::string chunk = data.substr(off, FakeVsockGuest::kTxSlotPayload);
      guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, guest_port, host_port, static_cast<uint32_t>(chunk.size())),
                   chunk);
      if (tx_cnt != nullptr) *tx_cnt += static_cast<uint32_t>(chunk.size());
    }
  }

  testing::TempDir dir_;
  VsockConfig config_;
  std::unique_ptr<FakeVsockGuest> guest_;  // destroyed after the device
  std::unique_ptr<VsockDevice> dev_;
};

TEST_F(VsockDeviceTest, DeviceIdQueuesFeaturesAndConfig) {
  config_.guest_cid = 0x1234567;
  Create();
  EXPECT_EQ(dev_->device_type(), uint32_t{VIRTIO_ID_VSOCK});
  EXPECT_EQ(dev_->queue_max_sizes(), (std::vector<uint16_t>{256, 256, 256}));
  EXPECT_EQ(dev_->device_features(), 1ull << VIRTIO_F_VERSION_1);
  uint8_t cfg[12];
  dev_->ReadConfig(0, absl::MakeSpan(cfg));
  uint64_t cid;
  std::memcpy(&cid, cfg, 8);
  EXPECT_EQ(cid, 0x1234567u);
  EXPECT_EQ(cfg[8], 0);  // past the config: zeros
  const uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  dev_->WriteConfig(0, junk);  // read-only
  dev_->ReadConfig(0, absl::MakeSpan(cfg, 8));
  std::memcpy(&cid, cfg, 8);
  EXPECT_EQ(cid, 0x1234567u);
}

TEST_F(VsockDeviceTest, CreateValidatesAndOwnsTheSocketPath) {
  Create();
  struct stat st;
  ASSERT_EQ(stat(config_.uds_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  absl::StatusOr<std::unique_ptr<VsockDevice>> second = VsockDevice::Create(config_);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("remove the stale socket"));
  dev_.reset();
  EXPECT_NE(stat(config_.uds_path.c_str(), &st), 0) << "socket left behind";

  VsockConfig bad = config_;
  bad.guest_cid = 1;
  EXPECT_EQ(VsockDevice::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = config_;
  bad.uds_path = dir_.path() + "/missing-dir/v.sock";
  absl::StatusOr<std::unique_ptr<VsockDevice>> missing = VsockDevice::Create(bad);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("directory exists"));
}

TEST_F(VsockDeviceTest, ActivateNeedsRxAndTxQueues) {
  Create();
  guest_ = std::make_unique<FakeVsockGuest>([](uint16_t) {});
  virtio::ActivateContext ctx = guest_->Context();
  ctx.queues.pop_back();
  EXPECT_FALSE(dev_->Activate(ctx).ok());
  guest_->tx().queue().SetReady(false);
  EXPECT_FALSE(dev_->Activate(guest_->Context()).ok());
}

TEST_F(VsockDeviceTest, GuestConnectsToHostListenerAndExchangesData) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  ASSERT_TRUE(host.valid());

  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 4), std::string("ping"));
  EXPECT_EQ(ReadN(host.get(), 4), "ping");
  WriteAll(host.get(), "pong!");
  EXPECT_EQ(GuestRead(5000, kHostPort, 5), "pong!");

  // The guest closes: SHUTDOWN both ways → the host sees EOF, the guest gets its RST.
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort, 0, 256 * 1024, 0,
                   VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND));
  EXPECT_TRUE(WaitEof(host.get()));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
  const VsockCounters c = dev_->counters();
  EXPECT_EQ(c.connections_opened, 1u);
  EXPECT_EQ(c.connections_closed, 1u);
  EXPECT_EQ(c.tx_bytes, 4u);
  EXPECT_EQ(c.rx_bytes, 5u);
  EXPECT_EQ(c.rsts_sent, 1u);
}

TEST_F(VsockDeviceTest, GuestConnectWithoutListenerIsReset) {
  Start();
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_REQUEST, 5000, 4321));
  std::optional<RxPacket> rst = guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, 4321);
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(uint16_t{rst->hdr.type}, VIRTIO_VSOCK_TYPE_STREAM);
  EXPECT_EQ(dev_->counters().connections_opened, 0u);
}

TEST_F(VsockDeviceTest, HostConnectsThroughUnixSocket) {
  Start();
  auto [client, host_port] = HostConnect(kGuestPort);
  ASSERT_TRUE(client.valid());
  EXPECT_EQ(host_port, kFirstLocalPort);
  WriteAll(client.get(), "hello guest");
  EXPECT_EQ(GuestRead(kGuestPort, host_port, 11), "hello guest");
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, kGuestPort, host_port, 10), std::string("hello host"));
  EXPECT_EQ(ReadN(client.get(), 10), "hello host");

  // The client goes away: SHUTDOWN(RCV|SEND) to the guest, whose RST ends it.
  client.reset();
  std::optional<RxPacket> shut = guest_->WaitOp(VIRTIO_VSOCK_OP_SHUTDOWN, kGuestPort, host_port);
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(uint32_t{shut->hdr.flags}, uint32_t{VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND});
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RST, kGuestPort, host_port));
  EXPECT_TRUE(guest_->WaitFor([&] { return dev_->counters().connections_closed == 1; }));
  EXPECT_EQ(dev_->counters().rsts_received, 1u);
}

TEST_F(VsockDeviceTest, SecondHostConnectionGetsTheNextHostPort) {
  Start();
  auto [a, port_a] = HostConnect(kGuestPort);
  auto [b, port_b] = HostConnect(kGuestPort);
  EXPECT_EQ(port_b, port_a + 1);
}

TEST_F(VsockDeviceTest, GuestRefusalClosesTheUnixClient) {
  Start();
  ScopedFd client = UnixConnect(config_.uds_path);
  WriteAll(client.get(), "CONNECT 77\n");
  const uint32_t host_port = WaitRequest(77);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RST, 77, host_port));
  EXPECT_TRUE(WaitEof(client.get()));
  EXPECT_EQ(dev_->counters().connections_closed, 1u);
}

TEST_F(VsockDeviceTest, LowercaseConnectAndBytesAfterTheLineArePreserved) {
  Start();
  ScopedFd client = UnixConnect(config_.uds_path);
  WriteAll(client.get(), "connect 52\nearly bytes");
  const uint32_t host_port = WaitRequest(kGuestPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RESPONSE, kGuestPort, host_port));
  EXPECT_EQ(ReadLine(client.get()), absl::StrCat("OK ", host_port, "\n"));
  EXPECT_EQ(GuestRead(kGuestPort, host_port, 11), "early bytes");
}

TEST_F(VsockDeviceTest, BadConnectLinesCloseOnlyThatClient) {
  Start();
  auto [good, host_port] = HostConnect(kGuestPort);
  const std::vector<std::string> bad = {
      "CONNECT 99999999999\n", "CONNECT 4294967295\n", "HELLO 52\n", "CONNECT\n",
      std::string(40, 'x'),  // no newline within 32 bytes
      "CONNECT 52",          // then EOF
  };
  for (const std::string& line : bad) {
    ScopedFd c = UnixConnect(config_.uds_path);
    WriteAll(c.get(), line);
    if (line == "CONNECT 52") ::shutdown(c.get(), SHUT_WR);
    EXPECT_TRUE(WaitEof(c.get())) << "client sending '" << line << "' was not closed";
  }
  EXPECT_TRUE(guest_->WaitFor([&] { return dev_->counters().host_clients_rejected == bad.size(); }));
  // The established connection is untouched.
  WriteAll(good.get(), "still here");
  EXPECT_EQ(GuestRead(kGuestPort, host_port, 10), "still here");
  EXPECT_EQ(dev_->counters().connections_opened, 1u);
}

TEST_F(VsockDeviceTest, SilentClientIsClosedAfterTheTimeout) {
  config_.connect_line_timeout = kShort;
  Start();
  ScopedFd silent = UnixConnect(config_.uds_path);
  ScopedFd slow = UnixConnect(config_.uds_path);
  WriteAll(slow.get(), "CONN");  // a partial line does not extend the deadline
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitEof(silent.get()));
  EXPECT_TRUE(WaitEof(slow.get()));
  EXPECT_GE(std::chrono::steady_clock::now() - start, kShort - std::chrono::milliseconds(20));
  EXPECT_EQ(dev_->counters().host_clients_rejected, 2u);
}

TEST_F(VsockDeviceTest, ClientsWaitInTheBacklogUntilTheDriverIsActive) {
  Create();
  ScopedFd client = UnixConnect(config_.uds_path);
  WriteAll(client.get(), "CONNECT 52\n");
  Activate();
  const uint32_t host_port = WaitRequest(kGuestPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RESPONSE, kGuestPort, host_port));
  EXPECT_EQ(ReadLine(client.get()), absl::StrCat("OK ", host_port, "\n"));
}

TEST_F(VsockDeviceTest, InProcessHandoverWithoutHandshakeLine) {
  Start();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd ours(sv[0]);
  std::promise<absl::StatusOr<uint32_t>> result;
  ASSERT_TRUE(dev_->ConnectToGuest(ScopedFd(sv[1]), kGuestPort, [&](absl::StatusOr<uint32_t> r) {
                    result.set_value(r);
                  }).ok());
  const uint32_t host_port = WaitRequest(kGuestPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RESPONSE, kGuestPort, host_port));
  std::future<absl::StatusOr<uint32_t>> f = result.get_future();
  ASSERT_EQ(f.wait_for(testing::kWait), std::future_status::ready);
  absl::StatusOr<uint32_t> r = f.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, host_port);
  // No "OK" line: the first bytes are the guest's.
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, kGuestPort, host_port, 3), std::string("abc"));
  EXPECT_EQ(ReadN(ours.get(), 3), "abc");
  WriteAll(ours.get(), "xyz");
  EXPECT_EQ(GuestRead(kGuestPort, host_port, 3), "xyz");
}

TEST_F(VsockDeviceTest, InProcessHandoverRefusedOrUnansweredReportsWhy) {
  config_.request_timeout = kShort;
  Start();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd ours(sv[0]);
  std::promise<absl::Status> refused;
  ASSERT_TRUE(dev_->ConnectToGuest(ScopedFd(sv[1]), 99, [&](absl::StatusOr<uint32_t> r) {
                    refused.set_value(r.status());
                  }).ok());
  const uint32_t host_port = WaitRequest(99);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RST, 99, host_port));
  std::future<absl::Status> f = refused.get_future();
  ASSERT_EQ(f.wait_for(testing::kWait), std::future_status::ready);
  const absl::Status s = f.get();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("nothing listens"));
  EXPECT_TRUE(WaitEof(ours.get()));

  // No answer at all: DEADLINE_EXCEEDED after request_timeout, and the guest gets an RST.
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd ours2(sv[0]);
  std::promise<absl::Status> silent;
  ASSERT_TRUE(dev_->ConnectToGuest(ScopedFd(sv[1]), 98, [&](absl::StatusOr<uint32_t> r) {
                    silent.set_value(r.status());
                  }).ok());
  const uint32_t port2 = WaitRequest(98);
  std::future<absl::Status> f2 = silent.get_future();
  ASSERT_EQ(f2.wait_for(testing::kWait), std::future_status::ready);
  EXPECT_EQ(f2.get().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 98, port2).has_value());
  EXPECT_TRUE(WaitEof(ours2.get()));
}

TEST_F(VsockDeviceTest, InProcessHandoverArgumentsAndInactiveDevice) {
  Create();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd ours(sv[0]);
  bool called = false;
  absl::Status s = dev_->ConnectToGuest(ScopedFd(sv[1]), 5, [&](absl::StatusOr<uint32_t>) { called = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not active"));
  EXPECT_TRUE(WaitEof(ours.get()));  // the stream was closed
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  ScopedFd read_end(pipefd[0]);
  EXPECT_EQ(dev_->ConnectToGuest(ScopedFd(pipefd[1]), 5, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dev_->ConnectToGuest(ScopedFd(), 5, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(called);
}

TEST_F(VsockDeviceTest, InvalidPacketsAreResetOrDroppedWithoutHurtingOthers) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  ASSERT_TRUE(host.valid());

  struct Case {
    const char* name;
    virtio_vsock_hdr hdr;
  };
  std::vector<Case> resets;
  virtio_vsock_hdr h = Hdr(VIRTIO_VSOCK_OP_REQUEST, 6001, kHostPort);
  h.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
  resets.push_back({"bad type", h});
  h = Hdr(VIRTIO_VSOCK_OP_REQUEST, 6002, kHostPort);
  h.dst_cid = 7;
  resets.push_back({"foreign destination CID", h});
  resets.push_back({"unknown op", Hdr(42, 6003, kHostPort)});
  resets.push_back({"op 0", Hdr(0, 6004, kHostPort)});
  resets.push_back({"len beyond the chain", Hdr(VIRTIO_VSOCK_OP_RW, 6005, kHostPort, 100)});
  resets.push_back({"RW on no connection", Hdr(VIRTIO_VSOCK_OP_RW, 6006, kHostPort)});
  resets.push_back({"SHUTDOWN on no connection", Hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 6007, kHostPort)});
  for (const Case& c : resets) {
    guest_->Send(c.hdr);
    std::optional<RxPacket> rst = guest_->WaitOp(VIRTIO_VSOCK_OP_RST, c.hdr.src_port, c.hdr.dst_port);
    EXPECT_TRUE(rst.has_value()) << c.name << ": no RST";
  }
  // len over the 64 KiB cap, with the bytes really in the chain.
  virtio_vsock_hdr big = Hdr(VIRTIO_VSOCK_OP_RW, 6008, kHostPort, kMaxPayload + 1);
  guest_->SendRaw({{44, false}, {kMaxPayload + 1, false}},
                  std::string(reinterpret_cast<const char*>(&big), sizeof(big)));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 6008, kHostPort).has_value()) << "len > cap";

  // Dropped without a reply: a short header, a spoofed source, an RST for nothing.
  virtio_vsock_hdr short_hdr = Hdr(VIRTIO_VSOCK_OP_REQUEST, 6100, kHostPort);
  guest_->SendRaw({{20, false}}, std::string(reinterpret_cast<const char*>(&short_hdr), 20));
  virtio_vsock_hdr spoofed = Hdr(VIRTIO_VSOCK_OP_REQUEST, 6101, kHostPort);
  spoofed.src_cid = 9;
  guest_->Send(spoofed);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RST, 6102, kHostPort));
  ASSERT_TRUE(guest_->WaitTxDrained());

  const VsockCounters c = dev_->counters();
  // type, CID, two ops, len beyond the chain, len over the cap (RW/SHUTDOWN for no connection
  // are valid packets, answered with RST all the same).
  EXPECT_EQ(c.tx_invalid, 6u);
  EXPECT_EQ(c.tx_dropped, 2u);
  // The established connection still works both ways, and no stray packets were sent.
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 2), std::string("ok"));
  EXPECT_EQ(ReadN(host.get(), 2), "ok");
  WriteAll(host.get(), "yes");
  EXPECT_EQ(GuestRead(5000, kHostPort, 3), "yes");
  for (const RxPacket& p : guest_->inbox()) {
    ADD_FAILURE() << "unexpected packet op " << p.op() << " to guest port " << p.dst_port();
  }
}

TEST_F(VsockDeviceTest, InvalidPacketOnAConnectionResetsIt) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 500));  // no payload in the chain
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
  EXPECT_TRUE(WaitEof(host.get()));
}

TEST_F(VsockDeviceTest, DuplicateRequestResetsTheConnection) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_REQUEST, 5000, kHostPort));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
  EXPECT_TRUE(WaitEof(host.get()));
}

TEST_F(VsockDeviceTest, ConnectionLimitRefusesWithRst) {
  config_.max_connections = 2;
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd a = GuestConnect(listener.get(), 5000, kHostPort);
  ScopedFd b = GuestConnect(listener.get(), 5001, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_REQUEST, 5002, kHostPort));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5002, kHostPort).has_value());
  // Host clients over the limit are closed too.
  ScopedFd c = UnixConnect(config_.uds_path);
  WriteAll(c.get(), "CONNECT 52\n");
  EXPECT_TRUE(WaitEof(c.get()));
}

TEST_F(VsockDeviceTest, CreditRequestGetsCreditUpdate) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 100), std::string(100, 'q'));
  EXPECT_EQ(ReadN(host.get(), 100).size(), 100u);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_CREDIT_REQUEST, 5000, kHostPort));
  std::optional<RxPacket> up = guest_->WaitOp(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, kHostPort);
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(uint32_t{up->hdr.fwd_cnt}, 100u);
  EXPECT_EQ(uint32_t{up->hdr.buf_alloc}, config_.buf_alloc);
}

TEST_F(VsockDeviceTest, DeviceSendsCreditUpdatesAsTheHostDrains) {
  config_.buf_alloc = 8192;
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  // 64 KiB through an 8 KiB window: only possible if fwd_cnt keeps coming back.
  const std::string data = Pattern(64 * 1024, 1);
  uint32_t sent = 0;
  uint32_t peer_fwd = 0;  // the device's fwd_cnt as last seen by the guest
  std::string got;
  while (sent < data.size()) {
    const uint32_t chunk = std::min<uint32_t>(4096, static_cast<uint32_t>(data.size()) - sent);
    // Send only within credit, like a real driver.
    ASSERT_TRUE(guest_->WaitFor([&] {
      for (const RxPacket& p : guest_->inbox()) peer_fwd = std::max(peer_fwd, uint32_t{p.hdr.fwd_cnt});
      guest_->inbox().clear();
      got += ReadN(host.get(), data.size(), std::chrono::milliseconds(0));
      return sent + chunk - peer_fwd <= config_.buf_alloc;
    })) << "no credit update after " << sent << " bytes";
    guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, chunk), data.substr(sent, chunk));
    sent += chunk;
  }
  got += ReadN(host.get(), data.size() - got.size());
  EXPECT_EQ(got, data);
  EXPECT_EQ(dev_->counters().credit_violations, 0u);
}

TEST_F(VsockDeviceTest, GuestSendingPastCreditIsReset) {
  config_.buf_alloc = 4096;
  Start(/*rx=*/0);
  guest_->set_auto_repost(false);
  guest_->PostRx(1);  // for the RESPONSE only: no credit update can reach the guest after it
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  ASSERT_TRUE(host.valid());
  const std::string data = Pattern(4096, 2);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 4096), data);  // the whole window: fine
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 1), std::string("!"));  // one too many
  ASSERT_TRUE(guest_->WaitTxDrained());
  EXPECT_EQ(dev_->counters().credit_violations, 1u);
  guest_->PostRx(1);
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
  EXPECT_EQ(ReadN(host.get(), 4097), data);  // exactly the window, then EOF
  EXPECT_TRUE(WaitEof(host.get()));
}

TEST_F(VsockDeviceTest, DeviceNeverExceedsGuestCreditAndResumes) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  constexpr uint32_t kGuestBuf = 1000;
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort, kGuestBuf);
  const std::string data = Pattern(5000, 3);
  WriteAll(host.get(), data);
  std::string got;
  uint32_t granted = kGuestBuf;  // peer_buf_alloc - (tx_cnt - fwd_cnt) from the guest's side
  while (got.size() < data.size()) {
    ASSERT_TRUE(guest_->WaitFor([&] {
      got += guest_->TakeData(5000, kHostPort);
      EXPECT_LE(got.size(), granted) << "device sent past the guest's credit";
      return got.size() == granted || got.size() == data.size();
    })) << "stalled at " << got.size() << " of " << granted;
    ASSERT_LE(got.size(), granted);
    // The guest "reads" everything and tells the device.
    granted = static_cast<uint32_t>(got.size()) + kGuestBuf;
    guest_->Send(Hdr(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, kHostPort, 0, kGuestBuf,
                     static_cast<uint32_t>(got.size())));
  }
  EXPECT_EQ(got, data);
}

TEST_F(VsockDeviceTest, HostHalfCloseKeepsTheOtherDirection) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  WriteAll(host.get(), "last words");
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  EXPECT_EQ(GuestRead(5000, kHostPort, 10), "last words");
  std::optional<RxPacket> shut = guest_->WaitOp(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort);
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(uint32_t{shut->hdr.flags}, uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND});
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 5), std::string("reply"));
  EXPECT_EQ(ReadN(host.get(), 5), "reply");
  // Now the host closes for good: the guest learns that it will not receive either.
  host.reset();
  shut = guest_->WaitOp(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort);
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(uint32_t{shut->hdr.flags}, uint32_t{VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND});
}

TEST_F(VsockDeviceTest, HostCloseAfterGuestStoppedReceivingIsReported) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort, 0, 256 * 1024, 0,
                   VIRTIO_VSOCK_SHUTDOWN_RCV));
  ASSERT_TRUE(guest_->WaitTxDrained());
  WriteAll(host.get(), "unwanted");  // never read: the guest said it receives no more
  host.reset();
  std::optional<RxPacket> shut = guest_->WaitOp(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort);
  ASSERT_TRUE(shut.has_value());
  EXPECT_EQ(uint32_t{shut->hdr.flags}, uint32_t{VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND});
  EXPECT_EQ(guest_->TakeData(5000, kHostPort), "");
}

TEST_F(VsockDeviceTest, GuestHalfCloseKeepsTheOtherDirection) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 7), std::string("request"));
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort, 0, 256 * 1024, 0,
                   VIRTIO_VSOCK_SHUTDOWN_SEND));
  EXPECT_EQ(ReadN(host.get(), 7), "request");
  EXPECT_TRUE(WaitEof(host.get()));  // SHUT_WR reached the host
  WriteAll(host.get(), "response");
  EXPECT_EQ(GuestRead(5000, kHostPort, 8), "response");
  // Data after SHUTDOWN SEND is a protocol error.
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_RW, 5000, kHostPort, 1), std::string("x"));
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
}

TEST_F(VsockDeviceTest, GuestThatNeverClosesIsResetAfterShutdownTimeout) {
  config_.shutdown_timeout = kShort;
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd host = GuestConnect(listener.get(), 5000, kHostPort);
  host.reset();
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_SHUTDOWN, 5000, kHostPort).has_value());
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, kHostPort).has_value());
  EXPECT_EQ(dev_->counters().connections_closed, 1u);
}

TEST_F(VsockDeviceTest, ResetClosesEverythingAndKeepsTheListener) {
  Start();
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  ScopedFd from_guest = GuestConnect(listener.get(), 5000, kHostPort);
  auto [to_guest, host_port] = HostConnect(kGuestPort);
  ScopedFd pending = UnixConnect(config_.uds_path);  // no CONNECT line yet
  WriteAll(pending.get(), "CONN");
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd ours(sv[0]);
  std::promise<absl::Status> handover;
  ASSERT_TRUE(dev_->ConnectToGuest(ScopedFd(sv[1]), 61, [&](absl::StatusOr<uint32_t> r) {
                    handover.set_value(r.status());
                  }).ok());
  // The I/O thread accepts the pending client in the same pass that sends this REQUEST.
  WaitRequest(61);
  ASSERT_TRUE(guest_->WaitFor([&] { return dev_->counters().connections_opened == 3; }));

  dev_->Reset();
  EXPECT_TRUE(WaitEof(from_guest.get()));
  EXPECT_TRUE(WaitEof(to_guest.get()));
  EXPECT_TRUE(WaitEof(pending.get()));
  EXPECT_TRUE(WaitEof(ours.get()));
  std::future<absl::Status> f = handover.get_future();
  ASSERT_EQ(f.wait_for(testing::kWait), std::future_status::ready);
  EXPECT_EQ(f.get().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(dev_->ConnectToGuest(ScopedFd(::socket(AF_UNIX, SOCK_STREAM, 0)), 5, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);

  // Same listener, fresh driver.
  dev_->NotifyQueue(1);  // a stray kick while inactive is harmless
  Activate();
  auto [again, port2] = HostConnect(kGuestPort);
  ASSERT_TRUE(again.valid());
  WriteAll(again.get(), "after reset");
  EXPECT_EQ(GuestRead(kGuestPort, port2, 11), "after reset");
}

TEST_F(VsockDeviceTest, CorruptRingNeedsResetOthersUnaffectedAfterReset) {
  Start();
  guest_->tx().SetAvailIdx(1000);  // more than a queue size ahead
  dev_->NotifyQueue(1);
  EXPECT_TRUE(guest_->WaitFor([&] { return guest_->irq().needs_reset > 0; }));
  dev_->Reset();
  Activate();
  auto [client, host_port] = HostConnect(kGuestPort);
  EXPECT_TRUE(client.valid());
}

TEST_F(VsockDeviceTest, RxBufferTooSmallIsReturnedUnused) {
  Start(/*rx=*/0);
  // One 44-byte buffer (header only: useless) then normal ones.
  std::vector<virtio::Descriptor> d = guest_->rx().WriteChain(200, {{44, true}});
  guest_->rx().Publish(200);
  guest_->Send(Hdr(VIRTIO_VSOCK_OP_REQUEST, 5000, 4321));  // will be answered with RST
  ASSERT_TRUE(guest_->WaitFor([&] { return dev_->counters().rx_dropped == 1; }));
  std::optional<RxPacket> unused = guest_->WaitPacket([](const RxPacket& p) { return p.used_len == 0; });
  ASSERT_TRUE(unused.has_value());
  guest_->PostRx(4);
  EXPECT_TRUE(guest_->WaitOp(VIRTIO_VSOCK_OP_RST, 5000, 4321).has_value());
  (void)d;
}

TEST_F(VsockDeviceTest, SixtyFourConcurrentConnectionsCarryTheirOwnData) {
  Start(/*rx=*/128);
  constexpr int kConns = 64;
  constexpr size_t kBytes = 24 * 1024;
  ScopedFd listener = UnixListen(HostPath(kHostPort));
  struct Conn {
    ScopedFd host;
    uint32_t guest_port, host_port;
    std::string to_guest, to_host, got_guest, got_host;
  };
  std::vector<Conn> conns(kConns);
  for (int i = 0; i < kConns; ++i) {
    Conn& c = conns[i];
    c.guest_port = 20000 + i;
    if (i % 2 == 0) {  // half guest → host, half host → guest
      c.host_port = kHostPort;
      c.host = GuestConnect(listener.get(), c.guest_port, kHostPort);
    } else {
      auto [fd, port] = HostConnect(c.guest_port);
      c.host = std::move(fd);
      c.host_port = port;
    }
    ASSERT_TRUE(c.host.valid()) << i;
    c.to_guest = Pattern(kBytes, 1000 + i);
    c.to_host = Pattern(kBytes, 2000 + i);
  }
  // Everyone writes at once, both directions.
  for (Conn& c : conns) WriteAll(c.host.get(), c.to_guest);
  for (Conn& c : conns) GuestWrite(c.guest_port, c.host_port, c.to_host);
  ASSERT_TRUE(guest_->WaitFor([&] {
    for (Conn& c : conns) {
      c.got_guest += guest_->TakeData(c.guest_port, c.host_port);
      c.got_host += ReadN(c.host.get(), kBytes - c.got_host.size(), std::chrono::milliseconds(0));
    }
    for (const Conn& c : conns) {
      if (c.got_guest.size() < kBytes || c.got_host.size() < kBytes) return false;
    }
    return true;
  }, std::chrono::seconds(20)));
  for (int i = 0; i < kConns; ++i) {
    EXPECT_EQ(conns[i].got_guest, conns[i].to_guest) << "connection " << i << " host → guest";
    EXPECT_EQ(conns[i].got_host, conns[i].to_host) << "connection " << i << " guest → host";
  }
  const VsockCounters c = dev_->counters();
  EXPECT_EQ(c.connections_opened, uint64_t{kConns});
  EXPECT_EQ(c.rx_bytes, kConns * kBytes);
  EXPECT_EQ(c.tx_bytes, kConns * kBytes);
  EXPECT_EQ(c.rsts_sent, 0u);
  EXPECT_EQ(c.credit_violations, 0u);
}

}  // namespace
}  // namespace vessel::vsock
