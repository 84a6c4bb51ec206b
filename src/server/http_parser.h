// http_parser.h: a strict, incremental HTTP/1.1 request framer (RFC 9112) for the server's transport
// (http_transport.h). It decides where each request starts and ends, and nothing else: a request it
// accepts is handed on (to httplib's routing) re-serialised in one canonical form, so no lenient parser
// behind it ever sees the client's own framing.
//
// Why it is shaped so: framing is where request smuggling and starvation live, so it is a pure
// function of the bytes (no sockets, no clocks: the transport owns deadlines), fed incrementally so a
// client sending a byte at a time costs O(bytes) in all, and every refusal carries the status the RFC
// asks for and a message naming what was wrong. Strictness: CRLF line ends only; exactly one valid
// Content-Length; Transfer-Encoding only "chunked" (other codings 501), never with Content-Length,
// never on HTTP/1.0; Content-Encoding other than identity 415; exactly one Host on HTTP/1.1; no header
// folding, no whitespace before a colon, no control bytes; GET/HEAD/OPTIONS carry no body.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::server {

struct HttpLimits {
  size_t max_head_bytes = 64 << 10;    // request line + headers (431 beyond)
  size_t max_target_bytes = 8 << 10;   // request-target (414 beyond)
  size_t max_header_line = 8 << 10;    // one header line (431 beyond; httplib's own limit)
  size_t max_headers = 100;            // header fields (431 beyond)
  size_t max_chunk_line = 1024;        // a chunk-size line with its extensions (400 beyond)
  size_t max_trailer_bytes = 8 << 10;  // all trailer fields (431 beyond)
};

// A request's head, as parsed and checked.
struct RequestHead {
  std::string method;                  // upper-case token, e.g. "POST"
  std::string target;                  // origin-form ("/v1/models?x=1"), or "*" for OPTIONS
  std::string path;                    // target without the query
  int minor_version = 1;               // HTTP/1.<minor>: 0 or 1
  std::vector<std::pair<std::string, std::string>> headers;  // in order, names as sent
  std::optional<uint64_t> content_length;  // when framed by Content-Length
  bool chunked = false;                // framed by Transfer-Encoding: chunked
  bool keep_alive = true;              // after Connection and the version defaults
  bool expect_continue = false;        // Expect: 100-continue

  // The first value of a header (case-insensitive name), or empty.
  std::string_view header(std::string_view name) const;
  bool has_body() const { return chunked || (content_length && *content_length > 0); }
  // The announced body size when known (Content-Length), else 0.
  uint64_t declared_body_bytes() const { return content_length.value_or(0); }
};

// A refusal: the status to answer with and what was wrong. The connection is closed after it, since
// the framing of anything that follows cannot be trusted.
struct HttpError {
  int status = 400;
  std::string message;
};

class RequestParser {
 public:
  enum class State {
    NeedMore,   // give it more bytes
    HeadReady,  // the head is parsed and valid (reported once per request): check it, set_body_limit, continue
    Done,       // head and body complete: take_head(), take_body(), then reset() for the next request
    Failed,     // error() says why
  };

  explicit RequestParser(HttpLimits limits = {}) : limits_(limits) {}

  // Parses what it can from the front of `in`, removing the bytes it consumed (bytes of a following
  // pipelined request stay in `in`). Call again when more bytes arrive or after HeadReady.
  State advance(std::string& in);

  // The largest body accepted for this request (413 beyond); set it at HeadReady. Default: no body
  // beyond 0 bytes is refused until set, so the caller must decide.
  void set_body_limit(uint64_t bytes) { body_limit_ = bytes; }

  const RequestHead& head() const { return head_; }
  std::string take_body() { return std::move(body_); }
  const HttpError& error() const { return error_; }
  State state() const { return state_; }
  // True while the current request has received any byte (a partial request is pending).
  bool in_request() const { return started_; }
  // Ready for the next request on the same connection.
  void reset();

 private:
  enum class Phase { Head, Body, ChunkSize, ChunkData, ChunkDataEnd, Trailers, Complete };
  State fail(int status, std::string message);
  State parse_head(std::string_view head);
  State parse_body(std::string& in);

  HttpLimits limits_;
  State state_ = State::NeedMore;
  Phase phase_ = Phase::Head;
  bool started_ = false;
  bool head_reported_ = false;
  size_t scanned_ = 0;          // bytes of `in` already searched for the end of the head
  uint64_t body_limit_ = 0;
  uint64_t chunk_left_ = 0;     // bytes left in the current chunk
  size_t trailer_bytes_ = 0;
  RequestHead head_;
  std::string body_;
  HttpError error_;
};

// The request re-serialised for the handler layer: request line, the client's headers less the ones
// that framed or conditioned the message (Content-Length, Transfer-Encoding, Expect, Range, If-Range,
// Content-Encoding: identity, TE, Trailer), and one Content-Length for the decoded body.
std::string canonical_head(const RequestHead& head, size_t body_bytes);

}  // namespace moe::server
