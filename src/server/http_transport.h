// http_transport.h: the server's connection layer, in front of httplib's routing and handlers. One
// event-loop thread owns the listening socket and every connection while it is reading a request
// (non-blocking, epoll), frames each request strictly (http_parser.h) under a whole-request deadline,
// checks the head (API key, per-route body limit) before reading any body, and hands complete requests
// to a fixed pool of worker threads, which run the handlers and write the answers; pipelined requests
// are served one after another, in order, by the same worker.
//
// Why it is shaped so: cpp-httplib 0.11 spends a thread per connection from the first byte, with only a
// per-read timeout, so 200 clients sending a header byte a second starve every other client, and its
// framing has the smuggling and pipelining bugs of issue 12. Reading in one event loop makes a slow
// client cost a buffer, not a thread; handing httplib one canonical, already-framed request at a time
// (through httplib's own Server::process_request over an in-memory RequestStream) keeps every route
// handler, content provider and DataSink exactly as it was. Connections are bounded in total and per
// client address: a new connection from an address at its bound evicts that address's oldest connection
// that is only waiting for a request (so one client cannot keep /health out), and is refused with 503 at
// once when none is.
#pragma once
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "server/http_parser.h"

namespace moe::server {

struct TransportOptions {
  int workers = 128;                       // threads running handlers (a stream holds one while it runs)
  size_t max_connections = 1024;           // open connections in all (cut to the descriptor limit)
  size_t max_connections_per_ip = 256;     // open connections per client address
  double request_timeout_s = 30;           // from a request's first byte to its last (head and body)...
  double body_bytes_per_s = 1 << 20;       // ...plus its announced body at this rate
  double idle_timeout_s = 30;              // keep-alive: how long a connection may wait for its next request
  double write_timeout_s = 60;             // a write that makes no progress this long fails
  HttpLimits limits;
};

struct TransportHooks {
  // The largest body this request may have (413 beyond, answered before any of it is read).
  std::function<uint64_t(const RequestHead&)> body_limit;
  // Checked when the head is complete, before the body is read: a refusal (e.g. 401), or nothing.
  std::function<std::optional<HttpError>(const RequestHead&)> check_head;
  // A whole response for a refusal the transport answers itself (framing errors, 401/413 before the
  // body, 408, 503 at the connection bound). `head` is null when the head could not be parsed.
  std::function<std::string(const RequestHead* head, const HttpError& error)> render_error;
  // Serves one complete request read from `stream`; returns true when the connection may carry another
  // request (the answer was written and did not ask to close).
  std::function<bool(httplib::Stream& stream, bool close_after)> serve;
  // Called once for each refusal the transport answers itself (for the request counters).
  std::function<void(const RequestHead* head, int status)> on_refused;
};

class HttpTransport {
 public:
  HttpTransport(TransportOptions options, TransportHooks hooks);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Binds and listens; returns the port (port 0: any free one). Throws moe::Error when it cannot.
  int bind(const std::string& host, int port);
  int listen_fd() const { return listen_fd_; }
  // Runs the event loop and the workers until stop(); returns once all of them have finished.
  void run();
  // From now on every answer closes its connection (for a drain).
  void set_draining() { draining_ = true; }
  // Ends every connection that is being answered (its handler sees the client gone and cancels),
  // and makes every further write fail.
  void cancel_all();
  // Stops the loop and the workers; run() returns. Idempotent, from any thread.
  void stop();

  size_t open_connections() const { return n_open_.load(); }

  struct Conn;

 private:
  enum class Progress { NeedMore, Dispatch, Closed };
  using Clock = std::chrono::steady_clock;

  void loop();
  void worker();
  void accept_all();
  void on_readable(const std::shared_ptr<Conn>& c);
  void on_returned(const std::shared_ptr<Conn>& c);
  Progress progress(const std::shared_ptr<Conn>& c, bool in_loop);
  void refuse(const std::shared_ptr<Conn>& c, const RequestHead* head, const HttpError& e, bool in_loop);
  void serve_conn(std::shared_ptr<Conn> c);
  void give_back(const std::shared_ptr<Conn>& c);
  void linger(const std::shared_ptr<Conn>& c);
  void close_conn(const std::shared_ptr<Conn>& c);
  void sweep(Clock::time_point now);
  std::shared_ptr<Conn> evictable(const std::string* ip) const;

  TransportOptions opts_;
  TransportHooks hooks_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<size_t> n_open_{0};

  // Owned by the loop thread; mu_ guards them for cancel_all() and the workers' hand-backs.
  mutable std::mutex mu_;
  std::unordered_map<int, std::shared_ptr<Conn>> conns_;
  std::unordered_map<std::string, size_t> per_ip_;
  std::vector<std::shared_ptr<Conn>> returned_;  // handed back by workers, picked up by the loop

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::shared_ptr<Conn>> ready_;  // complete requests waiting for a worker
  std::vector<pthread_t> workers_;
};

// The methods the handlers registered on `server` answer at `path` (GET implies HEAD), as httplib
// would route them; empty when the path is unknown. Reads httplib's route tables, so routes added
// anywhere count without being listed twice.
std::vector<std::string> route_methods(const httplib::Server& server, const std::string& path);

}  // namespace moe::server
