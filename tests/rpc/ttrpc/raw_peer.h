// RawPeer: the far end of a socketpair, driven byte by byte, for tests that play a misbehaving
// ttrpc client or server. Reads wait at most a few seconds (a hang is a test failure).
#ifndef VESSEL_TESTS_RPC_TTRPC_RAW_PEER_H_
#define VESSEL_TESTS_RPC_TTRPC_RAW_PEER_H_

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "rpc/ttrpc/frame.h"
#include "rpc/ttrpc/ttrpc.pb.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::ttrpc::testing {

// A connected socketpair: `ours` goes to the code under test, `raw` stays with the test.
inline std::pair<ScopedFd, ScopedFd> SocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {ScopedFd(fds[0]), ScopedFd(fds[1])};
}

class RawPeer {
 public:
  explicit RawPeer(ScopedFd fd) : fd_(std::move(fd)) {}

  void WriteBytes(const std::string& bytes) {
    ASSERT_EQ(::write(fd_.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  void WriteFrame(uint32_t stream, uint8_t type, const std::string& payload, uint8_t flags = 0,
                  std::optional<uint32_t> length = std::nullopt) {
    auto h = EncodeFrameHeader(
        FrameHeader{length.value_or(static_cast<uint32_t>(payload.size())), stream, type, flags});
    WriteBytes(std::string(h.begin(), h.end()) + payload);
  }
  void WriteRequest(uint32_t stream, const Request& request) {
    WriteFrame(stream, static_cast<uint8_t>(MessageType::kRequest), request.SerializeAsString());
  }

  // Reads exactly n bytes; nullopt on EOF or after `timeout_ms` without data.
  std::optional<std::string> ReadExactly(size_t n, int timeout_ms = 5000) {
    std::string out;
    while (out.size() < n) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
      char buf[65536];
      ssize_t r = ::read(fd_.get(), buf, std::min(sizeof(buf), n - out.size()));
      if (r <= 0) return std::nullopt;
      out.append(buf, r);
    }
    return out;
  }

  struct Frame {
    FrameHeader header;
    std::string payload;
  };
  std::optional<Frame> ReadFrame(int timeout_ms = 5000) {
    std::optional<std::string> h = ReadExactly(kFrameHeaderSize, timeout_ms);
    if (!h) return std::nullopt;
    auto header = DecodeFrameHeader(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(h->data()), h->size()));
    EXPECT_TRUE(header.ok()) << header.status();
    if (!header.ok()) return std::nullopt;
    std::optional<std::string> payload = ReadExactly(header->length, timeout_ms);
    if (!payload) return std::nullopt;
    return Frame{*header, *payload};
  }
  std::optional<Response> ReadResponse(uint32_t* stream = nullptr) {
    std::optional<Frame> f = ReadFrame();
    if (!f) return std::nullopt;
    EXPECT_EQ(f->header.type, static_cast<uint8_t>(MessageType::kResponse));
    if (stream) *stream = f->header.stream_id;
    Response r;
    EXPECT_TRUE(r.ParseFromString(f->payload));
    return r;
  }

  // True when the other side closed: EOF within `timeout_ms`.
  bool SeesEof(int timeout_ms = 5000) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return false;
    char c;
    return ::read(fd_.get(), &c, 1) == 0;
  }

  void Close() { fd_.reset(); }
  int fd() const { return fd_.get(); }

 private:
  ScopedFd fd_;
};

}  // namespace vessel::ttrpc::testing

#endif  // VESSEL_TESTS_RPC_TTRPC_RAW_PEER_H_
