// StdioStream: the host end of one stdio stream of a guest process.
//
// The agent connects to host vsock ports the host chose (Stdio.*_port); through hybrid vsock a
// guest connection to host port P arrives on the Unix listener "<vsock uds>_P". A StdioStream
// listens there, accepts the agent's connection and then copies bytes between it and the caller's
// file descriptors with plain read/write (no RPC relay): input (caller fd -> guest) and output
// (guest -> caller fd) each on their own thread, so a full pipe in one direction never stalls the
// other.
#ifndef VESSEL_SANDBOX_STDIO_STREAM_H_
#define VESSEL_SANDBOX_STDIO_STREAM_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "vmm/base/scoped_fd.h"

namespace vessel::sandbox {

class StdioStream {
 public:
  // Listens on "<uds_base>_<port>". `input` (may be invalid) is read and sent to the guest;
  // what the guest sends is written to `output` (may be invalid: then it is read and dropped).
  // Takes ownership of both (pass dup()s of the caller's fds).
  static absl::StatusOr<std::unique_ptr<StdioStream>> Listen(const std::string& uds_base,
                                                             uint32_t port, ScopedFd input,
                                                             ScopedFd output, std::string name);
  // Abort()s and joins; removes the listening socket's path.
  ~StdioStream();
  StdioStream(const StdioStream&) = delete;
  StdioStream& operator=(const StdioStream&) = delete;

  uint32_t port() const { return port_; }
  // Whether guest output is delivered somewhere (an input-only stream's far end stays open as
  // long as the agent keeps the process's stdin, so there is nothing to wait for).
  bool carries_output() const { return carries_output_; }
  // Stops sending input: what was sent is delivered, then the guest reads EOF.
  void CloseInput();
  // Waits until the guest closed its sending side (all output delivered) or `timeout` passed;
  // true when the output is complete.
  bool WaitOutputDone(std::chrono::milliseconds timeout);
  bool connected() const;
  // Stops both directions now (pending bytes are dropped) and closes the connection.
  void Abort();

 private:
  StdioStream(uint32_t port, std::string path, std::string name, ScopedFd listener, ScopedFd input,
              ScopedFd output, ScopedFd stop, ScopedFd close_input);
  void Run();          // accepts, then pumps output; starts the input thread
  void PumpInput();    // caller fd -> socket
  void PumpOutput();   // socket -> caller fd
  void FinishOutput();

  const uint32_t port_;
  const std::string path_;
  const std::string name_;
  const bool carries_output_;
  ScopedFd listener_;
  ScopedFd input_;
  ScopedFd output_;
  ScopedFd stop_;         // eventfd: Abort
  ScopedFd close_input_;  // eventfd: CloseInput
  ScopedFd conn_;         // the agent's connection, set once by Run
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  bool output_done_ = false;
  std::thread input_thread_;
  std::thread thread_;
};

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_STDIO_STREAM_H_
