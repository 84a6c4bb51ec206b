// http_parser.cpp: the strict incremental HTTP/1.1 request framer (see http_parser.h).
#include "server/http_parser.h"

#include <algorithm>

#include "util/error.h"

namespace moe::server {

namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// RFC 9110 token characters.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

// Field values: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL or other controls.
bool is_field_value(std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f)) continue;
    return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits a comma-separated list into trimmed, lower-cased elements (empty elements kept, so the
// caller can refuse them).
std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  for (;;) {
    size_t comma = s.find(',');
    std::string_view item = trim_ows(s.substr(0, comma));
    std::string v(item);
    for (char& c : v) c = lower(c);
    out.push_back(std::move(v));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

// Where a bare LF (not preceded by CR) or a NUL is, from `from` on; npos if none.
size_t find_bad_byte(const std::string& in, size_t from) {
  for (size_t i = from; i < in.size(); ++i) {
    if (in[i] == '\0') return i;
    if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) return i;
  }
  return std::string::npos;
}

constexpr std::string_view kMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};

// Whether canonical_head passes a client's header on to the handler layer.
bool forwarded_header(std::string_view name) {
  static constexpr std::string_view kDropped[] = {
      "Content-Length", "Transfer-Encoding", "Expect", "Range", "If-Range", "Content-Encoding", "TE", "Trailer",
      // httplib adds these itself from the socket; a client's copies must not shadow them.
      "REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT"};
  for (auto d : kDropped)
    if (iequals(name, d)) return false;
  return true;
}

// Methods whose canonical head always carries a Content-Length (0 for an empty body).
bool bodyful_method(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

}  // namespace

std::string_view RequestHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

void RequestParser::reset() {
  state_ = State::NeedMore;
  phase_ = Phase::Head;
  started_ = false;
  head_reported_ = false;
  scanned_ = 0;
  body_limit_ = 0;
  chunk_left_ = 0;
  trailer_bytes_ = 0;
  head_ = RequestHead{};
  body_.clear();
  error_ = HttpError{};
}

RequestParser::State RequestParser::fail(int status, std::string message) {
  error_ = HttpError{status, std::move(message)};
  state_ = State::Failed;
  return state_;
}

RequestParser::State RequestParser::advance(std::string& in) {
  if (state_ == State::Done || state_ == State::Failed) return state_;
  if (phase_ == Phase::Head) {
    if (!started_) {
      // RFC 9112 §2.2: empty lines before a request line are ignored (some clients send a CRLF after a body).
      size_t skip = 0;
      while (skip + 1 < in.size() && in[skip] == '\r' && in[skip + 1] == '\n') skip += 2;
      if (skip > 0) in.erase(0, skip);
      if (in.empty() || in == "\r") return state_ = State::NeedMore;
      started_ = true;
    }
    size_t from = scanned_ >= 3 ? scanned_ - 3 : 0;
    size_t end = in.find("\r\n\r\n", from);
    size_t limit_end = end == std::string::npos ? in.size() : end + 4;
    if (size_t bad = find_bad_byte(in, scanned_); bad < limit_end) {
      return fail(400, in[bad] == '\0' ? "malformed HTTP request: a NUL byte in the request head"
                                       : "malformed HTTP request: lines must end with CRLF, not a bare LF");
    }
    if (end == std::string::npos) {
      scanned_ = in.size();
      size_t line_end = in.find("\r\n");
      if (line_end == std::string::npos && in.size() > limits_.max_target_bytes + 32)
        return fail(414, cat("the request line is longer than ", limits_.max_target_bytes, " bytes"));
      if (in.size() > limits_.max_head_bytes)
        return fail(431, cat("the request head is larger than ", limits_.max_head_bytes, " bytes"));
      return state_ = State::NeedMore;
    }
    if (end + 4 > limits_.max_head_bytes + 4)
      return fail(431, cat("the request head is larger than ", limits_.max_head_bytes, " bytes"));
    State s = parse_head(std::string_view(in).substr(0, end + 2));
    in.erase(0, end + 4);
    if (s == State::Failed) return s;
    phase_ = head_.chunked ? Phase::ChunkSize : head_.has_body() ? Phase::Body : Phase::Complete;
    head_reported_ = true;
    return state_ = State::HeadReady;
  }
  return parse_body(in);
}

RequestParser::State RequestParser::parse_head(std::string_view head) {
  // Request line.
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed HTTP request line: expected 'METHOD TARGET HTTP/1.1'");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail(400, "malformed HTTP request line: the method is not a token");
  if (target.size() > limits_.max_target_bytes)
    return fail(414, cat("the request target is longer than ", limits_.max_target_bytes, " bytes"));
  if (target.empty()) return fail(400, "malformed HTTP request line: empty request target");
  for (char ch : target) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return fail(400, "malformed HTTP request line: a control or non-ASCII byte in the target");
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
      version[5] > '9' || version[7] < '0' || version[7] > '9')
    return fail(400, "malformed HTTP request line: expected the version HTTP/1.1 or HTTP/1.0");
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
    return fail(505, cat("HTTP version ", version, " is not supported (HTTP/1.1 and HTTP/1.0 are)"));
  head_.minor_version = version[7] - '0';
  if (std::find(std::begin(kMethods), std::end(kMethods), method) == std::end(kMethods))
    return fail(501, cat("the method ", method, " is not implemented"));
  head_.method = std::string(method);
  if (target == "*") {
    if (method != "OPTIONS") return fail(400, "the request target '*' is only for OPTIONS");
  } else if (target.front() != '/') {
    // absolute-form (RFC 9112 §3.2.2: a server must accept it): keep the path and query.
    std::string_view t = target;
    size_t scheme = t.find("://");
    if (scheme == std::string_view::npos || !(iequals(t.substr(0, scheme), "http") || iequals(t.substr(0, scheme), "https")))
      return fail(400, "malformed HTTP request line: the target must be a path ('/…')");
    t.remove_prefix(scheme + 3);
    size_t slash = t.find('/');
    target = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
    if (slash == std::string_view::npos && t.find('?') != std::string_view::npos)
      return fail(400, "malformed HTTP request line: a query without a path");
  }
  head_.target = std::string(target);
  head_.path = head_.target.substr(0, head_.target.find('?'));

  // Header fields.
  int n_content_length = 0, n_host = 0;
  bool has_te = false, conn_close = false, conn_keep_alive = false;
  std::string te_value;
  while (!head.empty()) {
    eol = head.find("\r\n");
    line = head.substr(0, eol);
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
    if (line.size() > limits_.max_header_line)
      return fail(431, cat("a header line is longer than ", limits_.max_header_line, " bytes"));
    if (line.front() == ' ' || line.front() == '\t')
      return fail(400, "malformed HTTP header: folded header lines (obs-fold) are not accepted");
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(400, "malformed HTTP header: a line without ':'");
    std::string_view name = line.substr(0, colon), value = trim_ows(line.substr(colon + 1));
    if (!is_token(name)) return fail(400, cat("malformed HTTP header name '", name.substr(0, 64), "'"));
    // The forwarded line is "name: value", which can be a byte longer than the client's "name:value".
    if (name.size() + 2 + value.size() > limits_.max_header_line)
      return fail(431, cat("a header line is longer than ", limits_.max_header_line, " bytes"));
    if (!is_field_value(value)) return fail(400, cat("malformed value of the header ", name, ": control bytes"));
    if (head_.headers.size() >= limits_.max_headers)
      return fail(431, cat("more than ", limits_.max_headers, " header fields"));
    head_.headers.emplace_back(std::string(name), std::string(value));
    if (iequals(name, "Content-Length")) {
      ++n_content_length;
      if (n_content_length > 1) return fail(400, "more than one Content-Length header");
      if (value.empty() || value.size() > 19 || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(400, cat("invalid Content-Length '", value.substr(0, 32), "': it must be one non-negative decimal number"));
      uint64_t n = 0;
      for (char c : value) n = n * 10 + uint64_t(c - '0');
      head_.content_length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      te_value += has_te ? cat(",", value) : std::string(value);
      has_te = true;
    } else if (iequals(name, "Host")) {
      ++n_host;
    } else if (iequals(name, "Connection")) {
      for (const auto& t : split_list(value)) {
        if (t == "close") conn_close = true;
        if (t == "keep-alive") conn_keep_alive = true;
      }
    } else if (iequals(name, "Expect")) {
      if (!iequals(value, "100-continue")) return fail(417, cat("Expect: ", value.substr(0, 64), " is not supported"));
      head_.expect_continue = true;
    } else if (iequals(name, "Content-Encoding")) {
      for (const auto& c : split_list(value))
        if (c != "identity")
          return fail(415, cat("Content-Encoding '", c.substr(0, 64), "' is not supported: send the body uncompressed"));
    }
  }
  if (head_.minor_version == 1 && n_host != 1)
    return fail(400, n_host == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header");
  if (n_host > 1) return fail(400, "more than one Host header");
  if (has_te) {
    if (head_.minor_version == 0) return fail(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (n_content_length > 0) return fail(400, "a request cannot have both Content-Length and Transfer-Encoding");
    auto codings = split_list(te_value);
    int n_chunked = 0;
    for (const auto& c : codings) {
      if (c.empty()) return fail(400, "malformed Transfer-Encoding: an empty coding");
      if (c == "chunked") {
        ++n_chunked;
        continue;
      }
      return fail(501, cat("the transfer coding '", c.substr(0, 64), "' is not supported (only chunked is)"));
    }
    if (n_chunked != 1) return fail(400, "malformed Transfer-Encoding: chunked more than once");
    head_.chunked = true;
  }
  if (head_.has_body() && (head_.method == "GET" || head_.method == "HEAD" || head_.method == "OPTIONS"))
    return fail(400, cat("a ", head_.method, " request cannot have a body"));
  head_.keep_alive = head_.minor_version == 1 ? !conn_close : (conn_keep_alive && !conn_close);
  // The limits hold for the head the handlers get too (canonical_head), so that it frames the same way
  // under the same limits: it adds a Content-Length to bodyful methods and a space after each colon.
  size_t forwarded = size_t(std::count_if(head_.headers.begin(), head_.headers.end(),
                                          [](const auto& h) { return forwarded_header(h.first); })) +
                     (bodyful_method(head_.method) ? 1 : 0);
  if (forwarded > limits_.max_headers)
    return fail(431, cat("more than ", limits_.max_headers, " header fields (counting the Content-Length the server adds)"));
  // Sized with the longest Content-Length value (20 digits); like the client's head, it may pass the
  // limit by its closing CRLF CRLF.
  size_t canonical_bytes = canonical_head(head_, bodyful_method(head_.method) ? SIZE_MAX : 0).size();
  if (canonical_bytes > limits_.max_head_bytes + 4)
    return fail(431, cat("the request head is larger than ", limits_.max_head_bytes, " bytes once normalised"));
  return State::HeadReady;
}

RequestParser::State RequestParser::parse_body(std::string& in) {
  auto too_large = [&] {
    return fail(413, cat("the request body is larger than the limit of ", body_limit_, " bytes for ", head_.path));
  };
  for (;;) {
    switch (phase_) {
      case Phase::Head:
        return state_;  // not reached: advance() handles the head
      case Phase::Complete:
        return state_ = State::Done;
      case Phase::Body: {
        uint64_t want = *head_.content_length;
        if (want > body_limit_) return too_large();
        if (body_.capacity() < want) body_.reserve(size_t(want));
        size_t take = size_t(std::min<uint64_t>(want - body_.size(), in.size()));
        body_.append(in, 0, take);
        in.erase(0, take);
        if (body_.size() < want) return state_ = State::NeedMore;
        phase_ = Phase::Complete;
        break;
      }
      case Phase::ChunkSize: {
        size_t eol = in.find("\r\n");
        size_t bad = find_bad_byte(in, 0);
        if (bad != std::string::npos && (eol == std::string::npos || bad < eol))
          return fail(400, "malformed chunked body: lines must end with CRLF");
        if (eol == std::string::npos) {
          if (in.size() > limits_.max_chunk_line) return fail(400, "malformed chunked body: a chunk-size line is too long");
          return state_ = State::NeedMore;
        }
        if (eol > limits_.max_chunk_line) return fail(400, "malformed chunked body: a chunk-size line is too long");
        std::string_view line(in.data(), eol);
        size_t digits = 0;
        uint64_t size = 0;
        while (digits < line.size()) {
          char c = lower(line[digits]);
          int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
          if (v < 0) break;
          if (size > (uint64_t(1) << 56)) return too_large();
          size = size * 16 + uint64_t(v);
          ++digits;
        }
        if (digits == 0) return fail(400, "malformed chunked body: a chunk size is not a hexadecimal number");
        std::string_view rest = trim_ows(line.substr(digits));
        if (!rest.empty() && (rest.front() != ';' || !is_field_value(rest)))
          return fail(400, "malformed chunked body: junk after a chunk size");
        in.erase(0, eol + 2);
        if (size == 0) {
          phase_ = Phase::Trailers;
          break;
        }
        if (body_.size() + size > body_limit_) return too_large();
        chunk_left_ = size;
        phase_ = Phase::ChunkData;
        break;
      }
      case Phase::ChunkData: {
        size_t take = size_t(std::min<uint64_t>(chunk_left_, in.size()));
        body_.append(in, 0, take);
        in.erase(0, take);
        chunk_left_ -= take;
        if (chunk_left_ > 0) return state_ = State::NeedMore;
        phase_ = Phase::ChunkDataEnd;
        break;
      }
      case Phase::ChunkDataEnd:
        if (in.size() < 2) {
          if (!in.empty() && in[0] != '\r') return fail(400, "malformed chunked body: a chunk is longer than its size");
          return state_ = State::NeedMore;
        }
        if (in[0] != '\r' || in[1] != '\n') return fail(400, "malformed chunked body: a chunk is longer than its size");
        in.erase(0, 2);
        phase_ = Phase::ChunkSize;
        break;
      case Phase::Trailers: {
        size_t eol = in.find("\r\n");
        size_t bad = find_bad_byte(in, 0);
        if (bad != std::string::npos && (eol == std::string::npos || bad < eol))
          return fail(400, "malformed chunked body: trailer lines must end with CRLF");
        if (eol == std::string::npos) {
          if (trailer_bytes_ + in.size() > limits_.max_trailer_bytes)
            return fail(431, cat("the trailer fields are larger than ", limits_.max_trailer_bytes, " bytes"));
          return state_ = State::NeedMore;
        }
        trailer_bytes_ += eol + 2;
        if (trailer_bytes_ > limits_.max_trailer_bytes)
          return fail(431, cat("the trailer fields are larger than ", limits_.max_trailer_bytes, " bytes"));
        std::string_view line(in.data(), eol);
        if (!line.empty()) {
          size_t colon = line.find(':');
          if (colon == std::string_view::npos || !is_token(line.substr(0, colon)) || !is_field_value(line.substr(colon + 1)))
            return fail(400, "malformed chunked body: a malformed trailer field");
        }
        in.erase(0, eol + 2);
        if (line.empty()) phase_ = Phase::Complete;  // trailers are read and dropped
        break;
      }
    }
  }
}

std::string canonical_head(const RequestHead& head, size_t body_bytes) {
  std::string out = cat(head.method, " ", head.target, " HTTP/1.", head.minor_version, "\r\n");
  for (const auto& [k, v] : head.headers) {
    if (!forwarded_header(k)) continue;
    out += k;
    out += ": ";
    out += v;
    out += "\r\n";
  }
  if (bodyful_method(head.method) || body_bytes > 0) out += cat("Content-Length: ", body_bytes, "\r\n");
  out += "\r\n";
  return out;
}

}  // namespace moe::server
