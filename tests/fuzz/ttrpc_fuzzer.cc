// libFuzzer target: the ttrpc server on untrusted bytes (rpc/ttrpc): the fuzzer's input is the
// byte stream a peer sends on a connection, as it arrives at the server: frame headers
// (DecodeFrameHeader: length, stream id, type, flags), frame splitting and buffering in the
// Channel, Request decoding (service, method, payload, timeout_nano, metadata), stream-id rules,
// method lookup and dispatch, deadlines, and the responses written back. Handlers: Echo (answers
// the payload), Fail (answers an error), Drop (drops the call: the server must answer Internal),
// Later (answers from a posted task). Checks: every frame the server sends back decodes as a
// Response frame answering a stream the peer used, the server closes the connection at EOF or on bad framing and forgets it, and
// nothing crashes, leaks or hangs. Single-threaded: the io_context runs on the fuzzer's thread.
// Build (clang): CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DVESSEL_FUZZ=ON
//                ninja -C build-fuzz vessel_ttrpc_fuzzer
// Run:           tests/fuzz/run_fuzzers.sh (all targets) or
//                build-fuzz/tests/fuzz/vessel_ttrpc_fuzzer tests/fuzz/corpus/ttrpc
//
// Input: raw bytes of the stream (frames: 10-byte header, big endian length and stream id, type,
// flags; then a serialized vessel.ttrpc.Request). Services "fuzz.v1.Svc", methods as above.
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "rpc/ttrpc/frame.h"
#include "rpc/ttrpc/server.h"
#include "rpc/ttrpc/ttrpc.pb.h"

namespace {

namespace ttrpc = vessel::ttrpc;

struct World {
  boost::asio::io_context io;
  ttrpc::Server server{io, ttrpc::ServerOptions{.max_in_flight_per_connection = 8, .max_connections = 4}};

  World() {
    auto reg = [&](const char* method, ttrpc::Handler h) {
      if (!server.Register("fuzz.v1.Svc", method, std::move(h)).ok()) abort();
    };
    reg("Echo", [](ttrpc::ServerCall call) { call.Reply(call.payload()); });
    reg("Fail", [](ttrpc::ServerCall call) {
      call.Reply(absl::InvalidArgumentError("fuzz: " + call.context().method));
    });
    reg("Drop", [](ttrpc::ServerCall) {});
    reg("Later", [this](ttrpc::ServerCall call) {
      boost::asio::post(io, [call] {
        (void)call.context().MetadataValues("k");
        call.Reply(std::string(call.context().cancelled() ? "late" : "ok"));
      });
    });
  }
};

// The stream ids of the request and data frames in the input, as far as its framing goes.
std::set<uint32_t> SentStreams(const uint8_t* data, size_t size) {
  std::set<uint32_t> ids;
  size_t off = 0;
  while (size - off >= ttrpc::kFrameHeaderSize) {
    absl::StatusOr<ttrpc::FrameHeader> h =
        ttrpc::DecodeFrameHeader(absl::MakeConstSpan(data + off, ttrpc::kFrameHeaderSize));
    if (!h.ok()) break;
    if (h->type != static_cast<uint8_t>(ttrpc::MessageType::kResponse)) ids.insert(h->stream_id);
    if (size - off - ttrpc::kFrameHeaderSize < h->length) break;
    off += ttrpc::kFrameHeaderSize + h->length;
  }
  return ids;
}

// Checks the server's output: whole Response frames, each answering a stream the peer opened.
void CheckResponses(std::vector<uint8_t>& out, const std::set<uint32_t>& sent) {
  size_t off = 0;
  while (out.size() - off >= ttrpc::kFrameHeaderSize) {
    absl::StatusOr<ttrpc::FrameHeader> h =
        ttrpc::DecodeFrameHeader(absl::MakeConstSpan(out.data() + off, ttrpc::kFrameHeaderSize));
    if (!h.ok() || h->type != static_cast<uint8_t>(ttrpc::MessageType::kResponse)) {
      fprintf(stderr, "ttrpc_fuzzer: the server sent a bad frame\n");
      abort();
    }
    if (!sent.contains(h->stream_id)) {
      fprintf(stderr, "ttrpc_fuzzer: a response for stream %u, which the peer never used\n",
              h->stream_id);
      abort();
    }
    if (out.size() - off - ttrpc::kFrameHeaderSize < h->length) break;
    ttrpc::Response response;
    if (!response.ParseFromArray(out.data() + off + ttrpc::kFrameHeaderSize,
                                 static_cast<int>(h->length))) {
      fprintf(stderr, "ttrpc_fuzzer: the server sent a Response that does not parse\n");
      abort();
    }
    off += ttrpc::kFrameHeaderSize + h->length;
  }
  out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(off));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World;
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) != 0) abort();
  vessel::ScopedFd peer(sp[1]);
  if (!world->server.Serve(vessel::ScopedFd(sp[0]), "fuzz-peer").ok()) abort();

  const std::set<uint32_t> sent_streams = SentStreams(data, size);
  size_t sent = 0;
  bool shut = false;
  std::vector<uint8_t> out;
  for (int round = 0;; ++round) {
    if (round > 100000) {
      fprintf(stderr, "ttrpc_fuzzer: the server did not close the connection after EOF\n");
      abort();
    }
    if (sent < size) {
      ssize_t n = ::send(peer.get(), data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<size_t>(n);
      if (n < 0 && errno == EPIPE) sent = size;  // the server closed on bad framing
    } else if (!shut) {
      ::shutdown(peer.get(), SHUT_WR);
      shut = true;
    }
    world->io.restart();
    world->io.poll();
    uint8_t buf[16384];
    ssize_t n;
    bool eof = false;
    while ((n = ::recv(peer.get(), buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
      out.insert(out.end(), buf, buf + n);
    }
    eof = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    CheckResponses(out, sent_streams);
    if (eof && world->server.connection_count() == 0) break;
  }
  return 0;
}
