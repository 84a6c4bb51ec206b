// http_transport.cpp: the event loop, the workers and the in-memory request stream (see http_transport.h).
#include "server/http_transport.h"

#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>

#include "server/connection.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::server {

using Clock = std::chrono::steady_clock;

struct HttpTransport::Conn {
  enum class State { Reading, Busy, Lingering };
  int fd = -1;
  std::string ip, local_ip;
  int port = 0, local_port = 0;
  std::string in;                       // bytes read and not yet consumed by the parser
  RequestParser parser;
  State state = State::Reading;
  Clock::time_point deadline;           // reading: request or idle deadline; lingering: when to close
  Clock::time_point request_start;      // first byte of the current request
  Clock::time_point since;              // when it last started waiting (eviction picks the oldest)
  Clock::time_point linger_end;         // lingering: the latest it may go on
  bool in_epoll = false;
  bool close_after_return = false;      // handed back only to be closed (lingering)
  explicit Conn(HttpLimits l) : parser(l) {}
};

namespace {

constexpr size_t kReadChunk = 64 << 10;
// Lingering (after an early answer such as 413 or 401, the client is usually still sending its body
// and reads the answer only after): read and drop for at most this long, and this long between reads.
// Dropping costs no memory, and the connection bounds cap how many may do it.
constexpr double kLingerSeconds = 30;
constexpr double kLingerQuietSeconds = 5;
constexpr size_t kTrimAfterBodyBytes = 1 << 20;
constexpr size_t kWorkerStackBytes = size_t(32) << 20;  // httplib routes with std::regex (recursive)

std::string numeric_host(const sockaddr_storage& a, socklen_t len, int& port) {
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return {};
  port = std::atoi(serv);
  return host;
}

// Writes all of `data` to a non-blocking socket, waiting for room at most `timeout_s` between
// progress; false on error, timeout or `cancelled`.
bool write_all(int fd, const char* data, size_t size, double timeout_s, const std::atomic<bool>* cancelled) {
  size_t off = 0;
  while (off < size) {
    if (cancelled && *cancelled) return false;
    ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      int r = ::poll(&p, 1, int(timeout_s * 1000));
      if (r <= 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL))) return false;
      continue;
    }
    return false;
  }
  return true;
}

// A complete, canonical request (http_parser.h) for httplib's Server::process_request to read, and
// the real socket it writes the answer to.
class RequestStream : public httplib::Stream {
 public:
  RequestStream(const HttpTransport::Conn& c, std::string head, std::string body, double write_timeout_s,
                const std::atomic<bool>& cancelled)
      : c_(c), head_(std::move(head)), body_(std::move(body)), write_timeout_s_(write_timeout_s), cancelled_(cancelled) {}

  bool is_readable() const override { return pos_ < head_.size() + body_.size(); }
  bool is_writable() const override {
    if (cancelled_) return false;
    pollfd p{c_.fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) < 0) return true;  // EINTR: ask again later
    return !(p.revents & (POLLERR | POLLHUP | POLLNVAL));
  }
  ssize_t read(char* ptr, size_t size) override {
    size_t n = 0;
    while (n < size && pos_ < head_.size() + body_.size()) {
      const std::string& src = pos_ < head_.size() ? head_ : body_;
      size_t at = pos_ < head_.size() ? pos_ : pos_ - head_.size();
      size_t take = std::min(size - n, src.size() - at);
      std::memcpy(ptr + n, src.data() + at, take);
      n += take;
      pos_ += take;
    }
    return ssize_t(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    return write_all(c_.fd, ptr, size, write_timeout_s_, &cancelled_) ? ssize_t(size) : -1;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.ip;
    port = c_.port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  size_t body_bytes() const { return body_.size(); }
  // Only compared against FD_SETSIZE by httplib (for select()); the stream never selects.
  socket_t socket() const override { return c_.fd < FD_SETSIZE ? c_.fd : 0; }

 private:
  const HttpTransport::Conn& c_;
  std::string head_, body_;
  size_t pos_ = 0;
  double write_timeout_s_;
  const std::atomic<bool>& cancelled_;
};

size_t stream_body_bytes(const RequestStream& s) { return s.body_bytes(); }

Clock::duration secs(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

}  // namespace

HttpTransport::HttpTransport(TransportOptions options, TransportHooks hooks)
    : opts_(std::move(options)), hooks_(std::move(hooks)) {}

HttpTransport::~HttpTransport() {
  stop();
  for (pthread_t t : workers_) pthread_join(t, nullptr);
  workers_.clear();
  std::lock_guard lock(mu_);
  for (auto& [fd, c] : conns_) ::close(fd);
  conns_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

int HttpTransport::bind(const std::string& host, int port) {
  // Each connection is a descriptor: take the hard limit, and keep the bound below it.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
      getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 128) {
      size_t room = size_t(rl.rlim_cur) - 96;  // model file, logs, batch files, engine
      if (opts_.max_connections > room) {
        log_info("moe serve: at most ", room, " connections (the descriptor limit is ", rl.rlim_cur, ")");
        opts_.max_connections = room;
      }
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string serv = std::to_string(port);
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), serv.c_str(), &hints, &res); rc != 0)
    fail("cannot listen on ", host, ":", port, " (", gai_strerror(rc), ")");
  int err = 0;
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
      listen_fd_ = fd;
      break;
    }
    err = errno;
    ::close(fd);
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) fail("cannot listen on ", host, ":", port, " (", std::strerror(err), ")");
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  int bound = 0;
  numeric_host(a, len, bound);
  return bound;
}

void HttpTransport::run() {
  if (listen_fd_ < 0) fail("the HTTP transport is not bound");
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) fail("cannot create the HTTP event loop (", std::strerror(errno), ")");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kWorkerStackBytes);
  for (int i = 0; i < std::max(1, opts_.workers); ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, [](void* self) -> void* {
          static_cast<HttpTransport*>(self)->worker();
          return nullptr;
        }, this) == 0)
      workers_.push_back(t);
  }
  pthread_attr_destroy(&attr);
  if (workers_.empty()) fail("cannot start the HTTP worker threads");
  loop();
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (pthread_t t : workers_) pthread_join(t, nullptr);
  workers_.clear();
}

void HttpTransport::stop() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
}

void HttpTransport::cancel_all() {
  cancelled_ = true;
  std::lock_guard lock(mu_);
  for (auto& [fd, c] : conns_)
    if (c->state == Conn::State::Busy) ::shutdown(fd, SHUT_RDWR);
}

void HttpTransport::loop() {
  std::vector<epoll_event> events(256);
  std::vector<char> scratch;
  auto last_sweep = Clock::now();
  while (!stopping_) {
    int n = epoll_wait(epoll_fd_, events.data(), int(events.size()), 100);
    if (n < 0 && errno != EINTR) {
      log_error("moe serve: epoll_wait: ", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[size_t(i)].data.fd;
      if (fd == listen_fd_) {
        accept_all();
      } else if (fd == wake_fd_) {
        uint64_t v;
        while (::read(wake_fd_, &v, sizeof v) > 0) {
        }
        std::vector<std::shared_ptr<Conn>> back;
        {
          std::lock_guard lock(mu_);
          back.swap(returned_);
        }
        for (auto& c : back) on_returned(c);
      } else {
        std::shared_ptr<Conn> c;
        {
          std::lock_guard lock(mu_);
          auto it = conns_.find(fd);
          if (it != conns_.end()) c = it->second;
        }
        if (c && c->state != Conn::State::Busy) on_readable(c);
      }
    }
    auto now = Clock::now();
    if (now - last_sweep >= std::chrono::milliseconds(100)) {
      sweep(now);
      last_sweep = now;
    }
  }
}

std::shared_ptr<HttpTransport::Conn> HttpTransport::evictable(const std::string* ip) const {
  // The oldest connection that is only waiting: one lingering after its answer first, then one idle
  // between requests, then one mid-request (a slow client); never one being answered.
  std::shared_ptr<Conn> best;
  int best_rank = 0;
  for (const auto& [fd, c] : conns_) {
    if (c->state == Conn::State::Busy || (ip && c->ip != *ip)) continue;
    int rank = c->state == Conn::State::Lingering ? 3 : (!c->parser.in_request() && c->in.empty()) ? 2 : 1;
    if (!best || rank > best_rank || (rank == best_rank && c->since < best->since)) {
      best = c;
      best_rank = rank;
    }
  }
  if (!ip && best && best_rank < 2) return nullptr;  // the total bound never evicts a request being sent
  return best;
}

void HttpTransport::accept_all() {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) log_warn("moe serve: out of descriptors: ", std::strerror(errno));
      return;
    }
    auto c = std::make_shared<Conn>(opts_.limits);
    c->fd = fd;
    c->ip = numeric_host(peer, len, c->port);
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
    c->local_ip = numeric_host(local, llen, c->local_port);
    int one = 1;
    // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and a client's delayed ACK
    // hold each token back by tens of milliseconds.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    std::shared_ptr<Conn> victim;
    bool refuse_it = false;
    {
      std::lock_guard lock(mu_);
      if (per_ip_[c->ip] >= opts_.max_connections_per_ip) {
        victim = evictable(&c->ip);
        refuse_it = !victim;
      }
      if (!refuse_it && !victim && conns_.size() >= opts_.max_connections) {
        victim = evictable(nullptr);
        refuse_it = !victim;
      }
    }
    if (refuse_it || stopping_) {
      HttpError e{503, "too many connections; retry later"};
      std::string bytes = hooks_.render_error(nullptr, e);
      [[maybe_unused]] ssize_t w = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (hooks_.on_refused) hooks_.on_refused(nullptr, 503);
      ::close(fd);
      continue;
    }
    if (victim) close_conn(victim);
    auto now = Clock::now();
    c->since = now;
    c->deadline = now + secs(opts_.idle_timeout_s);
    {
      std::lock_guard lock(mu_);
      conns_[fd] = c;
      ++per_ip_[c->ip];
      n_open_ = conns_.size();
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0) c->in_epoll = true;
  }
}

void HttpTransport::close_conn(const std::shared_ptr<Conn>& c) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(c->fd);
  if (it == conns_.end() || it->second != c) return;
  if (c->in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  c->in_epoll = false;
  ::close(c->fd);
  conns_.erase(it);
  if (--per_ip_[c->ip] == 0) per_ip_.erase(c->ip);
  n_open_ = conns_.size();
}

// Answered and closing: send FIN, keep reading (and dropping) what the client still sends for a
// moment, then close. Closing at once with unread bytes would make the kernel send a reset, which can
// destroy the answer before the client reads it.
void HttpTransport::linger(const std::shared_ptr<Conn>& c) {
  ::shutdown(c->fd, SHUT_WR);
  c->state = Conn::State::Lingering;
  c->in.clear();
  c->in.shrink_to_fit();
  c->linger_end = Clock::now() + secs(kLingerSeconds);
  c->deadline = std::min(c->linger_end, Clock::now() + secs(kLingerQuietSeconds));
  if (!c->in_epoll) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = c->fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c->fd, &ev) == 0) c->in_epoll = true;
  }
}

void HttpTransport::refuse(const std::shared_ptr<Conn>& c, const RequestHead* head, const HttpError& e, bool in_loop) {
  std::string bytes = hooks_.render_error(head, e);
  write_all(c->fd, bytes.data(), bytes.size(), 1.0, nullptr);
  if (hooks_.on_refused) hooks_.on_refused(head, e.status);
  if (in_loop) {
    linger(c);
  } else {
    c->close_after_return = true;
    give_back(c);
  }
}

HttpTransport::Progress HttpTransport::progress(const std::shared_ptr<Conn>& c, bool in_loop) {
  for (;;) {
    bool was_in_request = c->parser.in_request();
    auto st = c->parser.advance(c->in);
    if (!was_in_request && c->parser.in_request()) {
      c->request_start = Clock::now();
      c->deadline = c->request_start + secs(opts_.request_timeout_s);
    }
    switch (st) {
      case RequestParser::State::NeedMore:
        return Progress::NeedMore;
      case RequestParser::State::HeadReady: {
        const RequestHead& head = c->parser.head();
        uint64_t limit = hooks_.body_limit ? hooks_.body_limit(head) : 0;
        c->parser.set_body_limit(limit);
        if (head.content_length && *head.content_length > limit) {
          refuse(c, &head,
                 {413, cat("the request body (", *head.content_length, " bytes) is larger than the limit of ", limit,
                           " bytes for ", head.path)},
                 in_loop);
          return Progress::Closed;
        }
        if (hooks_.check_head)
          if (auto e = hooks_.check_head(head)) {
            refuse(c, &head, *e, in_loop);
            return Progress::Closed;
          }
        c->deadline = c->request_start + secs(opts_.request_timeout_s + double(head.declared_body_bytes()) / opts_.body_bytes_per_s);
        if (head.expect_continue && head.has_body() && head.minor_version == 1) {
          static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
          write_all(c->fd, k100.data(), k100.size(), 1.0, nullptr);
        }
        continue;
      }
      case RequestParser::State::Done:
        return Progress::Dispatch;
      case RequestParser::State::Failed: {
        HttpError e = c->parser.error();
        const RequestHead* head = c->parser.head().method.empty() ? nullptr : &c->parser.head();
        refuse(c, head, e, in_loop);
        return Progress::Closed;
      }
    }
  }
}

void HttpTransport::on_readable(const std::shared_ptr<Conn>& c) {
  static thread_local std::vector<char> buf(kReadChunk);
  // At most 1 MiB per wake-up: a fast sender must not keep the loop from every other connection
  // (epoll is level-triggered, so the rest is read on the next round).
  for (int reads = 0; reads < 16; ++reads) {
    ssize_t n = ::recv(c->fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {  // the client closed (or reset) before sending a whole request: nothing to answer
      close_conn(c);
      return;
    }
    if (c->state == Conn::State::Lingering) {
      c->deadline = std::min(c->linger_end, Clock::now() + secs(kLingerQuietSeconds));
      continue;
    }
    c->in.append(buf.data(), size_t(n));
    Progress p = progress(c, true);
    if (p == Progress::Closed) return;
    if (p == Progress::Dispatch) {
      if (c->in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
      c->in_epoll = false;
      {
        std::lock_guard lock(mu_);
        c->state = Conn::State::Busy;
      }
      {
        std::lock_guard lock(queue_mu_);
        ready_.push_back(c);
      }
      queue_cv_.notify_one();
      return;
    }
  }
}

void HttpTransport::on_returned(const std::shared_ptr<Conn>& c) {
  {
    std::lock_guard lock(mu_);
    c->state = Conn::State::Reading;
  }
  if (c->close_after_return) {
    c->close_after_return = false;
    linger(c);
    return;
  }
  auto now = Clock::now();
  c->since = now;
  if (!c->parser.in_request()) c->deadline = now + secs(opts_.idle_timeout_s);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = c->fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c->fd, &ev) == 0) c->in_epoll = true;
}

void HttpTransport::give_back(const std::shared_ptr<Conn>& c) {
  {
    std::lock_guard lock(mu_);
    returned_.push_back(c);
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void HttpTransport::sweep(Clock::time_point now) {
  std::vector<std::shared_ptr<Conn>> expired;
  {
    std::lock_guard lock(mu_);
    for (auto& [fd, c] : conns_)
      if (c->state != Conn::State::Busy && now >= c->deadline) expired.push_back(c);
  }
  for (auto& c : expired) {
    if (c->state == Conn::State::Reading && c->parser.in_request()) {
      const RequestHead* head = c->parser.head().method.empty() ? nullptr : &c->parser.head();
      refuse(c, head, {408, cat("the request was not received within its deadline (", opts_.request_timeout_s, " s)")}, true);
      c->linger_end = c->deadline = now + secs(0.5);  // a slow client gets the 408 and little lingering
    } else {
      close_conn(c);
    }
  }
}

void HttpTransport::worker() {
  for (;;) {
    std::shared_ptr<Conn> c;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
      if (ready_.empty()) return;
      c = std::move(ready_.front());
      ready_.pop_front();
    }
    serve_conn(std::move(c));
  }
}

void HttpTransport::serve_conn(std::shared_ptr<Conn> c) {
  for (;;) {
    const RequestHead& head = c->parser.head();
    std::string body = c->parser.take_body();
    bool close_after = !head.keep_alive || draining_ || cancelled_;
    bool interim_ok = head.minor_version == 1;
    std::string canonical = canonical_head(head, body.size());
    RequestStream stream(*c, std::move(canonical), std::move(body), opts_.write_timeout_s, cancelled_);
    if (c->in.capacity() > kReadChunk) c->in.shrink_to_fit();
    bool keep = false;
    bool large = stream_body_bytes(stream) >= kTrimAfterBodyBytes;
    set_current_connection(c->fd, interim_ok);
    try {
      keep = hooks_.serve(stream, close_after);
    } catch (const std::exception& e) {
      log_error("moe serve: connection: ", e.what());
    }
    set_current_connection(-1, false);
    // A large body was parsed into many small allocations, now freed: give the pages back, or every
    // worker's arena keeps its own peak.
    if (large) malloc_trim(0);
    c->parser.reset();
    if (!keep || close_after || stopping_) {
      c->close_after_return = true;
      give_back(c);
      return;
    }
    if (c->in.empty()) {
      give_back(c);
      return;
    }
    // A pipelined request: its bytes are here already; serve it in order on this thread.
    Progress p = progress(c, false);
    if (p == Progress::Closed) return;  // refused and handed back
    if (p == Progress::NeedMore) {
      give_back(c);
      return;
    }
  }
}

// ---- route introspection ---------------------------------------------------------------------------

namespace {

// httplib keeps its route tables private and offers no way to ask "which methods does this path
// have?", which 405 (with Allow) and OPTIONS need. An explicit instantiation may name a private member
// (C++ [temp.spec]/6), which is how these read the tables without a copy of every registration.
using Handlers = std::vector<std::pair<std::regex, httplib::Server::Handler>>;
using ReaderHandlers = std::vector<std::pair<std::regex, httplib::Server::HandlerWithContentReader>>;

template <typename Tag>
struct Member {
  static typename Tag::type ptr;
};
template <typename Tag>
typename Tag::type Member<Tag>::ptr;

template <typename Tag, typename Tag::type P>
struct Bind {
  Bind() { Member<Tag>::ptr = P; }
  static Bind instance;
};
template <typename Tag, typename Tag::type P>
Bind<Tag, P> Bind<Tag, P>::instance;

struct GetTag { using type = Handlers httplib::Server::*; };
struct PostTag { using type = Handlers httplib::Server::*; };
struct PostReaderTag { using type = ReaderHandlers httplib::Server::*; };
struct PutTag { using type = Handlers httplib::Server::*; };
struct PutReaderTag { using type = ReaderHandlers httplib::Server::*; };
struct PatchTag { using type = Handlers httplib::Server::*; };
struct PatchReaderTag { using type = ReaderHandlers httplib::Server::*; };
struct DeleteTag { using type = Handlers httplib::Server::*; };
struct DeleteReaderTag { using type = ReaderHandlers httplib::Server::*; };
struct OptionsTag { using type = Handlers httplib::Server::*; };

template struct Bind<GetTag, &httplib::Server::get_handlers_>;
template struct Bind<PostTag, &httplib::Server::post_handlers_>;
template struct Bind<PostReaderTag, &httplib::Server::post_handlers_for_content_reader_>;
template struct Bind<PutTag, &httplib::Server::put_handlers_>;
template struct Bind<PutReaderTag, &httplib::Server::put_handlers_for_content_reader_>;
template struct Bind<PatchTag, &httplib::Server::patch_handlers_>;
template struct Bind<PatchReaderTag, &httplib::Server::patch_handlers_for_content_reader_>;
template struct Bind<DeleteTag, &httplib::Server::delete_handlers_>;
template struct Bind<DeleteReaderTag, &httplib::Server::delete_handlers_for_content_reader_>;
template struct Bind<OptionsTag, &httplib::Server::options_handlers_>;

template <typename Table>
bool any_match(const Table& table, const std::string& path) {
  for (const auto& [pattern, handler] : table)
    if (std::regex_match(path, pattern)) return true;
  return false;
}

}  // namespace

std::vector<std::string> route_methods(const httplib::Server& s, const std::string& path) {
  std::vector<std::string> out;
  if (any_match(s.*Member<GetTag>::ptr, path)) {
    out.push_back("GET");
    out.push_back("HEAD");
  }
  if (any_match(s.*Member<PostTag>::ptr, path) || any_match(s.*Member<PostReaderTag>::ptr, path)) out.push_back("POST");
  if (any_match(s.*Member<PutTag>::ptr, path) || any_match(s.*Member<PutReaderTag>::ptr, path)) out.push_back("PUT");
  if (any_match(s.*Member<PatchTag>::ptr, path) || any_match(s.*Member<PatchReaderTag>::ptr, path)) out.push_back("PATCH");
  if (any_match(s.*Member<DeleteTag>::ptr, path) || any_match(s.*Member<DeleteReaderTag>::ptr, path))
    out.push_back("DELETE");
  if (any_match(s.*Member<OptionsTag>::ptr, path)) out.push_back("OPTIONS");
  return out;
}

}  // namespace moe::server
