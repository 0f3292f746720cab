// EventLoop: one boost.asio io_context on its own thread, for device backends and KVM eventfds
// (ioeventfd notifications). No busy polling: the thread sleeps in epoll until an fd is readable.
#ifndef VESSEL_VMM_EVENT_LOOP_H_
#define VESSEL_VMM_EVENT_LOOP_H_

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace vessel {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();  // stops the loop and joins its thread; callbacks never run after it returns
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls `on_event` on the loop thread each time the eventfd `fd` is signalled (the counter is
  // read and reset first). `fd` must stay open until the loop is destroyed.
  void WatchEventfd(int fd, std::function<void()> on_event);

 private:
  struct Watch {
    boost::asio::posix::stream_descriptor descriptor;
    std::function<void()> on_event;
  };
  void Arm(Watch* watch);

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::thread thread_;
};

}  // namespace vessel

#endif  // VESSEL_VMM_EVENT_LOOP_H_
