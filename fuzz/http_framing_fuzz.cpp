// http_framing_fuzz.cpp: libFuzzer target for the server's HTTP/1.1 request framer
// (src/server/http_parser.h). The input is a byte stream from a client, parsed as the transport does:
// request after request (pipelining), with a body limit. Properties checked, besides "no crash":
//  - framing does not depend on how the bytes arrive: parsed whole and parsed in pieces (sizes taken
//    from the input) give the same requests, bodies and verdict, in the same order;
//  - a refusal has a 4xx/5xx status and a message;
//  - an accepted body is within its limit;
//  - an accepted request re-serialised (canonical_head + body) parses back to the same request and is
//    consumed exactly, so what the handlers see cannot be framed two ways.
// fuzz-link: moe_server
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "server/http_parser.h"

namespace {

using moe::server::RequestParser;

struct Outcome {
  std::vector<std::string> requests;  // method, target, body of each accepted request
  int error = 0;                      // the refusal's status, 0 when none
};

constexpr uint64_t kBodyLimit = 4096;

// Parses `input` delivered in pieces of the given sizes (cycled; empty: all at once).
Outcome run(const std::string& input, const std::vector<size_t>& pieces) {
  Outcome out;
  RequestParser p;
  std::string in;
  size_t pos = 0, piece = 0;
  for (int guard = 0; guard < 1 << 20; ++guard) {
    auto s = p.advance(in);
    if (s == RequestParser::State::HeadReady) {
      p.set_body_limit(kBodyLimit);
      continue;
    }
    if (s == RequestParser::State::Failed) {
      out.error = p.error().status;
      if (out.error < 400 || out.error > 599 || p.error().message.empty()) __builtin_trap();
      return out;
    }
    if (s == RequestParser::State::Done) {
      std::string body = p.take_body();
      if (body.size() > kBodyLimit) __builtin_trap();
      const auto& h = p.head();
      out.requests.push_back(h.method + " " + h.target + " " + body);
      // The canonical form parses back to the same request, consuming exactly its bytes.
      std::string canon = moe::server::canonical_head(h, body.size()) + body;
      RequestParser q;
      auto t = q.advance(canon);
      if (t != RequestParser::State::HeadReady) __builtin_trap();
      q.set_body_limit(kBodyLimit);
      if (q.advance(canon) != RequestParser::State::Done || !canon.empty()) __builtin_trap();
      if (q.head().method != h.method || q.head().target != h.target || q.take_body() != body) __builtin_trap();
      p.reset();
      continue;
    }
    if (pos >= input.size()) return out;  // NeedMore at the end of the input
    size_t n = pieces.empty() ? input.size() - pos : pieces[piece++ % pieces.size()];
    if (n == 0) n = 1;
    n = std::min(n, input.size() - pos);
    in.append(input, pos, n);
    pos += n;
  }
  __builtin_trap();  // no progress: the parser loops
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first bytes choose the piece sizes (1..16), the rest is the stream.
  size_t n_sizes = 1 + data[0] % 4;
  if (size < 1 + n_sizes) return 0;
  std::vector<size_t> pieces;
  for (size_t i = 0; i < n_sizes; ++i) pieces.push_back(1 + data[1 + i] % 16);
  std::string input(reinterpret_cast<const char*>(data) + 1 + n_sizes, size - 1 - n_sizes);
  Outcome whole = run(input, {});
  Outcome split = run(input, pieces);
  if (whole.requests != split.requests || whole.error != split.error) __builtin_trap();
  return 0;
}
