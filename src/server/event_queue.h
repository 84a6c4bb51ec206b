// event_queue.h: the per-request queue between the engine thread, whose callbacks push a request's
// events, and the connection thread that writes them out (take). The OpenAI routes (server.cpp) and
// the Ollama routes (ollama.cpp) each queue their own Event type through it.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

namespace moe::server {

template <class Event>
class EventQueue {
 public:
  void push(Event e) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(e));
    }
    cv_.notify_one();
  }
  // Everything queued, waiting up to `timeout` for the first event.
  std::deque<Event> take(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
    std::deque<Event> out;
    out.swap(events_);
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

}  // namespace moe::server
