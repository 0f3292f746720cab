#include "vmm/event_loop.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdint>

#include <boost/asio/post.hpp>

#include "vmm/seccomp/seccomp.h"

namespace vessel {

EventLoop::EventLoop() : work_(boost::asio::make_work_guard(io_)) {
  thread_ = std::thread([this, filter = seccomp::ForNewThread(seccomp::ThreadKind::kEventLoop)] {
    pthread_setname_np(pthread_self(), "vessel-events");
    filter.Install();
    io_.run();
  });
}

EventLoop::~EventLoop() {
  work_.reset();
  io_.stop();
  thread_.join();
  for (auto& w : watches_) w->descriptor.release();  // the fds belong to the caller
}

void EventLoop::WatchEventfd(int fd, std::function<void()> on_event) {
  auto watch = std::make_unique<Watch>(Watch{boost::asio::posix::stream_descriptor(io_, fd), std::move(on_event)});
  Watch* raw = watch.get();
  watches_.push_back(std::move(watch));
  boost::asio::post(io_, [this, raw] { Arm(raw); });
}

void EventLoop::Arm(Watch* watch) {
  watch->descriptor.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                               [this, watch](const boost::system::error_code& ec) {
                                 if (ec) return;  // loop stopping
                                 uint64_t count;
                                 ssize_t n = ::read(watch->descriptor.native_handle(), &count, sizeof(count));
                                 (void)n;
                                 watch->on_event();
                                 Arm(watch);
                               });
}

}  // namespace vessel
