// IoThread: an io_context and the threads that run it, for the lifetime of this object.
#ifndef VESSEL_RPC_TTRPC_IO_THREAD_H_
#define VESSEL_RPC_TTRPC_IO_THREAD_H_

#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace vessel::ttrpc {

class IoThread {
 public:
  explicit IoThread(int threads = 1) : work_(io_.get_executor()) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  // Stops the io_context (handlers not yet run are dropped) and joins the threads.
  ~IoThread() {
    work_.reset();
    io_.stop();
    for (std::thread& t : threads_) t.join();
  }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
};

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_IO_THREAD_H_
