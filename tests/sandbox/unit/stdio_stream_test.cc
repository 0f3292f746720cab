// StdioStream with the test playing the agent: the guest side of a stream is a Unix socket
// connected to "<uds_base>_<port>", exactly what hybrid vsock hands the host for a guest
// connection to host port <port>. The caller's side is pipes.
#include "sandbox/stdio_stream.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <string>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::sandbox {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr auto kTimeout = 10s;

struct Pipe {
  ScopedFd read;
  ScopedFd write;
};

Pipe MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  return {ScopedFd(fds[0]), ScopedFd(fds[1])};
}

bool IsSocket(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// The agent's end: connect to the stream's listener.
ScopedFd ConnectGuest(const std::string& path) {
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect " << path << ": " << std::strerror(errno);
    return ScopedFd();
  }
  return fd;
}

// Reads until `size` bytes, EOF or kTimeout without progress; returns what was read.
std::string ReadUpTo(int fd, size_t size) {
  std::string out;
  char buf[65536];
  while (out.size() < size) {
    pollfd p = {fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kTimeout).count()));
    if (n == 0) {
      ADD_FAILURE() << "no data for " << kTimeout.count() << " s after " << out.size() << " bytes";
      break;
    }
    ssize_t r = ::read(fd, buf, std::min(sizeof(buf), size - out.size()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

// True when `fd` reads EOF within kTimeout (data before it is a failure).
bool ReadsEof(int fd) {
  pollfd p = {fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kTimeout).count())) != 1) return false;
  char c;
  return ::read(fd, &c, 1) == 0;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Runs `fn` on a thread; false when it did not return within `timeout`. A hung `fn` cannot be
// recovered from (it holds the test's objects): the test binary aborts with a message instead of
// hanging until ctest's timeout.
bool ReturnsWithin(std::chrono::milliseconds timeout, std::function<void()> fn) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> future = done->get_future();
  std::thread([fn = std::move(fn), done] {
    fn();
    done->set_value();
  }).detach();
  if (future.wait_for(timeout) == std::future_status::ready) return true;
  std::fprintf(stderr, "did not return within %lld ms: aborting\n",
               static_cast<long long>(timeout.count()));
  std::abort();
}

class StdioStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short: sun_path holds 107 bytes.
    std::string tmpl = "/tmp/vss_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    base_ = dir_ + "/vm.sock";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<StdioStream> Listen(uint32_t port, ScopedFd input, ScopedFd output) {
    absl::StatusOr<std::unique_ptr<StdioStream>> stream =
        StdioStream::Listen(base_, port, std::move(input), std::move(output), absl::StrCat("port ", port));
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? *std::move(stream) : nullptr;
  }
  std::string PathOf(uint32_t port) const { return absl::StrCat(base_, "_", port); }

  std::string dir_;
  std::string base_;
};

TEST_F(StdioStreamTest, OutputReachesThePipeAndEofCompletesIt) {
  Pipe out = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1025, ScopedFd(), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(stream->port(), 1025u);
  EXPECT_TRUE(stream->carries_output());
  ASSERT_TRUE(IsSocket(PathOf(1025)));

  ScopedFd guest = ConnectGuest(PathOf(1025));
  ASSERT_TRUE(guest.valid());
  ASSERT_TRUE(WriteAll(guest.get(), "hello "));
  EXPECT_EQ(ReadUpTo(out.read.get(), 6), "hello ");
  // Accepted: the socket path is gone, and with no input the guest reads EOF at once.
  EXPECT_TRUE(stream->connected());
  EXPECT_FALSE(PathExists(PathOf(1025)));
  EXPECT_TRUE(ReadsEof(guest.get()));
  EXPECT_FALSE(stream->WaitOutputDone(0ms));

  ASSERT_TRUE(WriteAll(guest.get(), "world\n"));
  guest.reset();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
  EXPECT_EQ(ReadUpTo(out.read.get(), 6), "world\n");
  stream.reset();
  EXPECT_TRUE(ReadsEof(out.read.get()));  // the stream's copy of the write end is closed
}

TEST_F(StdioStreamTest, InputReachesTheGuestAndPipeEofShutsItDown) {
  Pipe in = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1026, std::move(in.read), ScopedFd());
  ASSERT_NE(stream, nullptr);
  EXPECT_FALSE(stream->carries_output());
  ScopedFd guest = ConnectGuest(PathOf(1026));
  ASSERT_TRUE(guest.valid());

  ASSERT_TRUE(WriteAll(in.write.get(), "line 1\n"));
  EXPECT_EQ(ReadUpTo(guest.get(), 7), "line 1\n");
  ASSERT_TRUE(WriteAll(in.write.get(), "line 2\n"));
  in.write.reset();  // the caller's EOF
  EXPECT_EQ(ReadUpTo(guest.get(), 7), "line 2\n");
  EXPECT_TRUE(ReadsEof(guest.get()));
  // Only the sending side is shut down: the guest may still write (and it is dropped).
  EXPECT_TRUE(WriteAll(guest.get(), "ignored"));
  guest.reset();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
}

TEST_F(StdioStreamTest, CloseInputSendsEofWhileThePipeStaysOpen) {
  Pipe in = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1027, std::move(in.read), ScopedFd());
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = ConnectGuest(PathOf(1027));
  ASSERT_TRUE(guest.valid());
  ASSERT_TRUE(WriteAll(in.write.get(), "before"));
  EXPECT_EQ(ReadUpTo(guest.get(), 6), "before");
  stream->CloseInput();
  EXPECT_TRUE(ReadsEof(guest.get()));
  ASSERT_TRUE(in.write.valid());
}

TEST_F(StdioStreamTest, CloseInputBeforeTheGuestConnects) {
  Pipe in = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1028, std::move(in.read), ScopedFd());
  ASSERT_NE(stream, nullptr);
  stream->CloseInput();
  ScopedFd guest = ConnectGuest(PathOf(1028));
  ASSERT_TRUE(guest.valid());
  EXPECT_TRUE(ReadsEof(guest.get()));
}

TEST_F(StdioStreamTest, OutputWithoutASinkIsDrained) {
  std::unique_ptr<StdioStream> stream = Listen(1029, ScopedFd(), ScopedFd());
  ASSERT_NE(stream, nullptr);
  EXPECT_FALSE(stream->carries_output());
  ScopedFd guest = ConnectGuest(PathOf(1029));
  ASSERT_TRUE(guest.valid());
  // Far more than the socket buffers hold: only a reader that keeps reading lets this finish.
  std::string data(4 << 20, 'x');
  EXPECT_TRUE(ReturnsWithin(kTimeout, [&] { EXPECT_TRUE(WriteAll(guest.get(), data)); }));
  guest.reset();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
}

TEST_F(StdioStreamTest, OutputReaderGoneKeepsDraining) {
  Pipe out = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1030, ScopedFd(), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = ConnectGuest(PathOf(1030));
  ASSERT_TRUE(guest.valid());
  ASSERT_TRUE(WriteAll(guest.get(), "seen"));
  EXPECT_EQ(ReadUpTo(out.read.get(), 4), "seen");
  out.read.reset();  // the caller's reader goes away (e.g. `vessel run ... | head -1`)

  // The guest process must never block on us: 4 MiB (far beyond the socket buffers) go through.
  std::string data(4 << 20, 'y');
  EXPECT_TRUE(ReturnsWithin(kTimeout, [&] { EXPECT_TRUE(WriteAll(guest.get(), data)); }));
  // The stream is still up (and this process was not killed by SIGPIPE).
  EXPECT_TRUE(stream->connected());
  EXPECT_FALSE(stream->WaitOutputDone(0ms));
  ASSERT_TRUE(WriteAll(guest.get(), "more"));
  guest.reset();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
}

// Fills the caller's output pipe (shrunk to one page) and the guest's socket so that both pump
// threads are blocked: the output one on the full pipe, the input one on the guest that does not
// read. Returns the guest socket.
ScopedFd Jam(const std::string& path, int out_read, int in_write) {
  ScopedFd guest = ConnectGuest(path);
  if (!guest.valid()) return guest;
  // Guest -> pipe: keep sending until the socket refuses more (the stream's pump sits on the
  // full pipe, the socket buffers fill behind it).
  std::string chunk(65536, 'o');
  for (auto deadline = std::chrono::steady_clock::now() + kTimeout;;) {
    ssize_t n = ::send(guest.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) continue;
    if (n < 0 && errno != EAGAIN) ADD_FAILURE() << std::strerror(errno);
    int queued = 0;
    ::ioctl(out_read, FIONREAD, &queued);
    if (queued > 0) break;  // the pump wrote into the pipe and is now blocked on it
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "the output pipe never filled";
      break;
    }
    pollfd p = {guest.get(), POLLOUT, 0};
    ::poll(&p, 1, 10);
  }
  // Caller -> guest: the guest never reads, so the input pump blocks once the socket is full.
  if (in_write >= 0) {
    ::fcntl(in_write, F_SETFL, O_NONBLOCK);
    while (::write(in_write, chunk.data(), chunk.size()) > 0) {
    }
  }
  return guest;
}

// A write to a pipe whose reader just left raises SIGPIPE (poll's POLLERR only covers a reader
// that left before the poll): the pump threads must have it blocked, or the race kills an
// embedding program that did not ignore SIGPIPE. Read from /proc: the race itself is too narrow
// to hit on demand.
TEST_F(StdioStreamTest, PumpThreadsBlockSigpipe) {
  auto threads_blocking_sigpipe = [] {
    int count = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream status(task.path() / "status");
      std::string line;
      while (std::getline(status, line)) {
        if (line.rfind("SigBlk:", 0) != 0) continue;
        uint64_t mask = std::strtoull(line.c_str() + 7, nullptr, 16);
        if (mask & (uint64_t{1} << (SIGPIPE - 1))) ++count;
      }
    }
    return count;
  };
  int before = threads_blocking_sigpipe();
  Pipe in = MakePipe();
  Pipe out = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1036, std::move(in.read), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = ConnectGuest(PathOf(1036));
  ASSERT_TRUE(guest.valid());
  // Data both ways: both pump threads are running.
  ASSERT_TRUE(WriteAll(guest.get(), "o"));
  EXPECT_EQ(ReadUpTo(out.read.get(), 1), "o");
  ASSERT_TRUE(WriteAll(in.write.get(), "i"));
  EXPECT_EQ(ReadUpTo(guest.get(), 1), "i");
  EXPECT_EQ(threads_blocking_sigpipe(), before + 2);
}

TEST_F(StdioStreamTest, AbortWhileBlockedOnAFullPipeReturnsPromptly) {
  Pipe out = MakePipe();
  Pipe in = MakePipe();
  ASSERT_GT(::fcntl(out.write.get(), F_SETPIPE_SZ, 4096), 0);
  std::unique_ptr<StdioStream> stream = Listen(1031, std::move(in.read), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = Jam(PathOf(1031), out.read.get(), in.write.get());
  ASSERT_TRUE(guest.valid());
  EXPECT_FALSE(stream->WaitOutputDone(0ms));

  auto start = std::chrono::steady_clock::now();
  stream->Abort();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
  EXPECT_TRUE(ReturnsWithin(kTimeout, [&] { stream.reset(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // The connection is closed: the guest reads what was in flight, then EOF (or a reset: the
  // stream dropped the guest's unread bytes).
  char buf[65536];
  ssize_t r;
  while ((r = ::read(guest.get(), buf, sizeof(buf))) > 0) {
  }
  EXPECT_TRUE(r == 0 || errno == ECONNRESET) << std::strerror(errno);
}

TEST_F(StdioStreamTest, DestructorWhileBlockedReturnsPromptly) {
  Pipe out = MakePipe();
  Pipe in = MakePipe();
  ASSERT_GT(::fcntl(out.write.get(), F_SETPIPE_SZ, 4096), 0);
  std::unique_ptr<StdioStream> stream = Listen(1032, std::move(in.read), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = Jam(PathOf(1032), out.read.get(), in.write.get());
  ASSERT_TRUE(guest.valid());
  EXPECT_TRUE(ReturnsWithin(kTimeout, [&] { stream.reset(); }));
}

TEST_F(StdioStreamTest, DestructorBeforeAnyConnectionRemovesTheSocket) {
  std::unique_ptr<StdioStream> stream = Listen(1033, ScopedFd(), ScopedFd());
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(IsSocket(PathOf(1033)));
  EXPECT_FALSE(stream->connected());
  EXPECT_FALSE(stream->WaitOutputDone(0ms));
  EXPECT_TRUE(ReturnsWithin(kTimeout, [&] { stream.reset(); }));
  EXPECT_FALSE(PathExists(PathOf(1033)));
}

TEST_F(StdioStreamTest, AbortBeforeAnyConnection) {
  std::unique_ptr<StdioStream> stream = Listen(1034, ScopedFd(), ScopedFd());
  ASSERT_NE(stream, nullptr);
  stream->Abort();
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
  EXPECT_FALSE(stream->connected());
}

TEST_F(StdioStreamTest, LargeTransferBothWaysIsByteExact) {
  constexpr size_t kSize = 8 << 20;
  const std::string to_guest = RandomBytes(kSize, 1);
  const std::string from_guest = RandomBytes(kSize, 2);
  Pipe in = MakePipe();
  Pipe out = MakePipe();
  std::unique_ptr<StdioStream> stream = Listen(1035, std::move(in.read), std::move(out.write));
  ASSERT_NE(stream, nullptr);
  ScopedFd guest = ConnectGuest(PathOf(1035));
  ASSERT_TRUE(guest.valid());

  std::string guest_got;
  std::string caller_got;
  std::thread caller_writer([&] {
    EXPECT_TRUE(WriteAll(in.write.get(), to_guest));
    in.write.reset();
  });
  std::thread guest_writer([&] {
    EXPECT_TRUE(WriteAll(guest.get(), from_guest));
    ::shutdown(guest.get(), SHUT_WR);
  });
  std::thread guest_reader([&] { guest_got = ReadUpTo(guest.get(), kSize + 1); });
  caller_got = ReadUpTo(out.read.get(), kSize);
  caller_writer.join();
  guest_writer.join();
  guest_reader.join();

  EXPECT_EQ(guest_got.size(), kSize);  // and then EOF: the pipe's EOF became a shutdown
  EXPECT_TRUE(guest_got == to_guest) << "caller -> guest bytes differ";
  EXPECT_EQ(caller_got.size(), kSize);
  EXPECT_TRUE(caller_got == from_guest) << "guest -> caller bytes differ";
  EXPECT_TRUE(stream->WaitOutputDone(kTimeout));
  stream.reset();
  EXPECT_TRUE(ReadsEof(out.read.get()));
}

TEST_F(StdioStreamTest, SocketPathLengthLimit) {
  sockaddr_un addr;
  const size_t max = sizeof(addr.sun_path) - 1;  // 107: the NUL must fit
  // "<dir>/<name>_7" of exactly `max` bytes works; one more is rejected with a clear error.
  std::string prefix = dir_ + "/";
  std::string name(max - prefix.size() - 2, 's');
  std::string base = prefix + name;
  ASSERT_EQ(absl::StrCat(base, "_7").size(), max);
  absl::StatusOr<std::unique_ptr<StdioStream>> ok = StdioStream::Listen(base, 7, ScopedFd(), ScopedFd(), "ok");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(IsSocket(absl::StrCat(base, "_7")));
  ok->reset();

  std::string longer = base + "s";
  absl::StatusOr<std::unique_ptr<StdioStream>> bad = StdioStream::Listen(longer, 7, ScopedFd(), ScopedFd(), "bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("too long for a Unix socket"));
  EXPECT_THAT(bad.status().message(), HasSubstr(longer + "_7"));
  EXPECT_FALSE(PathExists(longer + "_7"));
}

TEST_F(StdioStreamTest, ListenInAMissingDirectoryFails) {
  absl::StatusOr<std::unique_ptr<StdioStream>> stream =
      StdioStream::Listen(dir_ + "/no-such-dir/vm.sock", 9, ScopedFd(), ScopedFd(), "stdout");
  ASSERT_FALSE(stream.ok());
  EXPECT_THAT(stream.status().message(), HasSubstr("no-such-dir/vm.sock_9"));
}

}  // namespace
}  // namespace vessel::sandbox
