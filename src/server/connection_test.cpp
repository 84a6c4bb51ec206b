// connection_test.cpp: ConnectionWatch on real loopback TCP pairs (IPv4 and IPv6): it finds the accepted
// socket and not the client's end (whose tuple is the mirror image), sees a pipelined byte as "still
// there", and sees a close and a reset as "gone"; an unknown tuple is simply not found.
#include "server/connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace moe::server {
namespace {

struct Endpoint {
  std::string host;
  int port = -1;
};

Endpoint endpoint(const sockaddr_storage& a, socklen_t len) {
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  EXPECT_EQ(getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                        NI_NUMERICHOST | NI_NUMERICSERV),
            0);
  return {host, std::atoi(serv)};
}

// A connected loopback pair: `client` and the listener's accepted end `server`, with the server end's
// addresses as httplib would report them in a Request.
struct Pair {
  int listener = -1, client = -1, server = -1;
  Endpoint local, remote;

  explicit Pair(int family) {
    listener = ::socket(family, SOCK_STREAM, 0);
    sockaddr_storage a{};
    socklen_t len;
    if (family == AF_INET) {
      auto& v4 = reinterpret_cast<sockaddr_in&>(a);
      v4.sin_family = AF_INET;
      v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof v4;
    } else {
      auto& v6 = reinterpret_cast<sockaddr_in6&>(a);
      v6.sin6_family = AF_INET6;
      v6.sin6_addr = in6addr_loopback;
      len = sizeof v6;
    }
    if (::bind(listener, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(listener, 1) != 0) return;
    len = sizeof a;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    client = ::socket(family, SOCK_STREAM, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&a), len) != 0) return;
    server = ::accept(listener, nullptr, nullptr);
    sockaddr_storage l{}, r{};
    socklen_t ll = sizeof l, rl = sizeof r;
    ::getsockname(server, reinterpret_cast<sockaddr*>(&l), &ll);
    ::getpeername(server, reinterpret_cast<sockaddr*>(&r), &rl);
    local = endpoint(l, ll);
    remote = endpoint(r, rl);
  }
  ~Pair() {
    for (int fd : {listener, client, server})
      if (fd >= 0) ::close(fd);
  }
  bool ok() const { return server >= 0; }
  ConnectionWatch watch() const { return ConnectionWatch(local.host, local.port, remote.host, remote.port); }
};

template <typename F>
bool eventually(F&& f) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return f();
}

void check_close_is_seen(int family) {
  Pair p(family);
  if (!p.ok()) GTEST_SKIP() << "no loopback for this address family";
  ConnectionWatch w = p.watch();
  ASSERT_TRUE(w.found());
  EXPECT_EQ(w.fd(), p.server);  // not p.client, whose ends are the same two addresses swapped
  EXPECT_FALSE(w.peer_gone());

  // More bytes from a client that is still there (a pipelined request) are not a hang-up, and the
  // peek leaves them for the server to read.
  ASSERT_EQ(::send(p.client, "G", 1, MSG_NOSIGNAL), 1);
  ASSERT_TRUE(eventually([&] {
    char c;
    return ::recv(p.server, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
  }));
  EXPECT_FALSE(w.peer_gone());
  char c = 0;
  ASSERT_EQ(::recv(p.server, &c, 1, 0), 1);
  EXPECT_EQ(c, 'G');

  ::close(p.client);
  p.client = -1;
  EXPECT_TRUE(eventually([&] { return w.peer_gone(); }));
}

TEST(ConnectionWatch, SeesTheClientCloseIPv4) { check_close_is_seen(AF_INET); }
TEST(ConnectionWatch, SeesTheClientCloseIPv6) { check_close_is_seen(AF_INET6); }

TEST(ConnectionWatch, SeesAReset) {
  Pair p(AF_INET);
  ASSERT_TRUE(p.ok());
  ConnectionWatch w = p.watch();
  ASSERT_TRUE(w.found());
  linger hard{1, 0};  // close() sends RST instead of FIN
  ASSERT_EQ(::setsockopt(p.client, SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
  ::close(p.client);
  p.client = -1;
  EXPECT_TRUE(eventually([&] { return w.peer_gone(); }));
}

// On the transport's own socket of an HTTP/1.1 request, a half-close (the client still reads) is told
// from a close: the first FIN gets an interim "100 Continue"; a closed client resets, a half-closed one
// reads it and stays "there".
TEST(ConnectionWatch, HalfCloseIsNotGoneButCloseIs) {
  Pair p(AF_INET);
  ASSERT_TRUE(p.ok());
  set_current_connection(p.server, true);
  ConnectionWatch w = p.watch();
  set_current_connection(-1, false);
  ASSERT_EQ(w.fd(), p.server);
  ASSERT_EQ(::shutdown(p.client, SHUT_WR), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(w.peer_gone());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  char buf[64] = {};
  ssize_t n = ::recv(p.client, buf, sizeof buf - 1, MSG_DONTWAIT);
  EXPECT_EQ(std::string(buf, n > 0 ? size_t(n) : 0), "HTTP/1.1 100 Continue\r\n\r\n");

  Pair q(AF_INET);
  ASSERT_TRUE(q.ok());
  set_current_connection(q.server, true);
  ConnectionWatch wq = q.watch();
  set_current_connection(-1, false);
  ::close(q.client);
  q.client = -1;
  EXPECT_TRUE(eventually([&] { return wq.peer_gone(); }));

  // Without the transport's word (HTTP/1.0, or a socket found by search) a half-close counts as gone.
  Pair r(AF_INET);
  ASSERT_TRUE(r.ok());
  ConnectionWatch wr = r.watch();
  ASSERT_EQ(::shutdown(r.client, SHUT_WR), 0);
  EXPECT_TRUE(eventually([&] { return wr.peer_gone(); }));
}

TEST(ConnectionWatch, UnknownConnectionIsNotFoundAndNeverGone) {
  Pair p(AF_INET);
  ASSERT_TRUE(p.ok());
  ConnectionWatch other_port(p.local.host, p.local.port, p.remote.host, p.remote.port == 1 ? 2 : 1);
  EXPECT_FALSE(other_port.found());
  EXPECT_FALSE(other_port.peer_gone());
  ConnectionWatch other_host(p.local.host, p.local.port, "127.0.0.2", p.remote.port);
  EXPECT_FALSE(other_host.found());
  ConnectionWatch no_ports("", -1, "", -1);
  EXPECT_FALSE(no_ports.found());
}

}  // namespace
}  // namespace moe::server
