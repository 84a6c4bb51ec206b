// connection.h: lets a request handler notice that its client has hung up while the answer is still
// being computed, so a non-streamed generation can be cancelled and its KV blocks freed at once.
//
// Why it is shaped so: cpp-httplib 0.11 (Debian 12) gives a handler no handle on its connection, only
// the addresses and ports in Request. A streamed answer is written by a content provider whose DataSink
// can test the socket, but a non-streamed answer must not send its status line before the result is
// known (an engine failure after submission must still be a 500 with a Content-Length'd error body),
// so it waits inside the handler. ConnectionWatch finds that handler's own accepted socket among the
// process's descriptors by its TCP 4-tuple (unique while the connection is open, and the handler's
// thread keeps it open until the handler returns) and peeks at it without consuming anything.
#pragma once
#include <string>

namespace moe::server {

class ConnectionWatch {
 public:
  // Looks for the socket whose local end is local_addr:local_port and whose peer is
  // remote_addr:remote_port, hosts in numeric form as getnameinfo(NI_NUMERICHOST) writes them (which
  // is how httplib fills Request::local_addr and remote_addr). Does not take ownership of it.
  ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr, int remote_port);

  bool found() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // True once the peer has closed or reset the connection. False while it is open, when it has sent
  // more bytes (a pipelined request: it is still there), and when the socket was not found. Like
  // httplib's own liveness test, a client that half-closes (shutdown(SHUT_WR)) counts as gone.
  bool peer_gone() const;

 private:
  int fd_ = -1;
};

}  // namespace moe::server
