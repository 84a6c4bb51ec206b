// connection.h: lets a request handler notice that its client has hung up while the answer is still
// being computed, so a non-streamed generation can be cancelled and its KV blocks freed at once.
//
// Why it is shaped so: cpp-httplib 0.11 (Debian 12) gives a handler no handle on its connection, only
// the addresses and ports in Request. A streamed answer is written by a content provider whose DataSink
// can test the socket, but a non-streamed answer must not send its status line before the result is
// known (an engine failure after submission must still be a 500 with a Content-Length'd error body),
// so it waits inside the handler. ConnectionWatch finds that handler's own accepted socket among the
// process's descriptors by its TCP 4-tuple (unique while the connection is open, and the handler's
// thread keeps it open until the handler returns) and peeks at it without consuming anything. The
// transport (http_transport.h) names the socket it is serving on the handler's thread
// (set_current_connection), which spares the search.
//
// Half-close: a client that sends its request and then shutdown(SHUT_WR) (`nc -N`) looks exactly like
// one that went away (both are a FIN). Where the transport allows it (an HTTP/1.1 request), the first
// FIN is answered with an interim "100 Continue", which every HTTP/1.1 client must accept and skip
// (RFC 9110 §15.2); a client that is gone answers those bytes with a reset, which the next check sees,
// while one that only half-closed keeps reading and gets its answer.
#pragma once
#include <string>

namespace moe::server {

// Set by the transport around each request it serves on this thread (fd -1 clears): the socket, and
// whether an interim 1xx may be written to it (HTTP/1.1).
void set_current_connection(int fd, bool interim_responses_ok);

class ConnectionWatch {
 public:
  // Looks for the socket whose local end is local_addr:local_port and whose peer is
  // remote_addr:remote_port, hosts in numeric form as getnameinfo(NI_NUMERICHOST) writes them (which
  // is how httplib fills Request::local_addr and remote_addr). Does not take ownership of it.
  ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr, int remote_port);

  bool found() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // True once the peer has closed or reset the connection. False while it is open, when it has sent
  // more bytes (a pipelined request: it is still there), and when the socket was not found. On the
  // transport's socket of an HTTP/1.1 request, a half-close is told from a close by the probe above;
  // elsewhere (HTTP/1.0, a socket found by search) a half-close counts as gone.
  bool peer_gone() const;

 private:
  int fd_ = -1;
  bool may_probe_ = false;
  mutable bool probed_ = false;
};

}  // namespace moe::server
