// request_fuzz.cpp: libFuzzer target for the JSON request parsers of the OpenAI routes
// (src/server/request.h) and the Ollama routes (src/server/ollama_request.h). A body goes through
// parse_body (which refuses nesting deeper than bounds::kMaxJsonDepth while parsing, as the server
// does), then through every route's parser; each must return a request or throw an ApiError (a 4xx naming the field) or a
// moe::Error — nothing else, no crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server/ollama_request.h"
#include "server/request.h"
#include "util/error.h"

namespace {

template <typename F>
void route(F&& parse) {
  try {
    parse();
  } catch (const moe::server::ApiError& e) {
    if (e.status < 400 || e.status > 499) __builtin_trap();  // a body can only be the client's fault
  } catch (const moe::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe::server;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json body;
  try {
    body = parse_body(text);
  } catch (const ApiError&) {
    return 0;
  }
  constexpr int32_t kVocab = 32000;
  route([&] { (void)parse_chat_request(body); });
  route([&] { (void)parse_completion_request(body, kVocab); });
  route([&] { (void)parse_embedding_request(body, kVocab); });
  route([&] { (void)parse_tokenize_request(body); });
  route([&] { (void)parse_detokenize_request(body, kVocab); });
  route([&] { (void)parse_routing_trace(body); });
  route([&] { (void)ollama::parse_generate(body, kVocab); });
  route([&] { (void)ollama::parse_chat(body); });
  route([&] { (void)ollama::parse_embed(body); });
  route([&] { (void)ollama::parse_embeddings(body); });
  route([&] { (void)ollama::parse_show(body); });
  return 0;
}
