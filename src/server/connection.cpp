// connection.cpp: finding a connection's socket by its 4-tuple and peeking at it (see connection.h).
#include "server/connection.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace moe::server {

namespace {

// The TCP port of an IPv4 or IPv6 address; -1 for any other family.
int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

bool host_is(const sockaddr_storage& a, socklen_t len, const std::string& host) {
  char buf[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0)
    return false;
  return host == buf;
}

// Whether `fd` is a connected TCP socket with exactly these two ends. Ports are compared first: most
// descriptors fail there (files, the listener, other connections) without a name lookup.
bool is_connection(int fd, const std::string& local_addr, int local_port, const std::string& remote_addr,
                   int remote_port) {
  sockaddr_storage local{}, peer{};
  socklen_t local_len = sizeof local, peer_len = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) return false;  // not a socket
  if (port_of(local) != local_port) return false;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) return false;  // not connected
  if (port_of(peer) != remote_port) return false;
  return host_is(local, local_len, local_addr) && host_is(peer, peer_len, remote_addr);
}

thread_local int current_fd = -1;
thread_local bool current_interim_ok = false;

}  // namespace

void set_current_connection(int fd, bool interim_responses_ok) {
  current_fd = fd;
  current_interim_ok = interim_responses_ok;
}

ConnectionWatch::ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
                                 int remote_port) {
  if (local_port <= 0 || remote_port <= 0) return;
  if (current_fd >= 0 && is_connection(current_fd, local_addr, local_port, remote_addr, remote_port)) {
    fd_ = current_fd;
    may_probe_ = current_interim_ok;
    return;
  }
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  int own = dirfd(dir);
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd < 0 || fd == own) continue;
    if (is_connection(int(fd), local_addr, local_port, remote_addr, remote_port)) {
      fd_ = int(fd);
      break;
    }
  }
  closedir(dir);
}

bool ConnectionWatch::peer_gone() const {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  int ready = poll(&p, 1, 0);
  if (ready <= 0) return false;  // nothing to read and no hang-up (or EINTR: ask again next time)
  if (p.revents & POLLNVAL) return true;
  // Reset, or both directions shut (our transport cancelling): gone whatever is still buffered.
  if (may_probe_ && (p.revents & (POLLERR | POLLHUP))) return true;
  // Readable, hung up or in error: a peek tells a pipelined request (bytes) from EOF (0) or a reset.
  char byte;
  ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  if (!may_probe_) return true;
  // EOF: a close or a half-close. Probe once; a closed peer resets, and the poll above sees it.
  if (!probed_) {
    probed_ = true;
    static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (send(fd_, kContinue, sizeof kContinue - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
        errno != EWOULDBLOCK)
      return true;
  }
  return false;
}

}  // namespace moe::server
