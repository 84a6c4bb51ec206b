// response.h: the JSON shapes of OpenAI's responses, stream chunks and errors, and SSE framing, as
// pure functions of plain data so that each shape is unit-tested without a model or a socket.
// Shapes follow the OpenAI API reference: chat.completion / chat.completion.chunk, text_completion,
// list of embeddings, list of models, {"error": {...}}; streams are `data: <json>\n\n` events ending
// with `data: [DONE]\n\n`.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/request.h"

namespace moe::server {

// Seconds since the Unix epoch (the `created` of response objects).
int64_t unix_now();
// n random lowercase hex digits, for object ids (chatcmpl-…, file-…, batch_…); thread-safe.
std::string random_hex(size_t n);

// What one choice produced.
struct ChoiceOutput {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  std::vector<engine::TokenLogprob> chosen;
  std::vector<std::vector<engine::TokenLogprob>> top;
  int64_t completion_tokens = 0;
};

struct UsageCounts {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};

// Serialises without ever throwing on invalid UTF-8 (a byte token's text may be a lone byte): such
// bytes become U+FFFD.
std::string dump_json(const nlohmann::json& j);

nlohmann::json error_json(const ApiError& e);
nlohmann::json usage_json(const UsageCounts& u);

// Chat logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
nlohmann::json chat_logprobs_json(std::span<const engine::TokenLogprob> chosen,
                                  std::span<const std::vector<engine::TokenLogprob>> top);
// Completions logprobs: {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"};
// `text_offset` is the byte offset of the first token within the choice's text, advanced past them.
nlohmann::json completion_logprobs_json(std::span<const engine::TokenLogprob> chosen,
                                        std::span<const std::vector<engine::TokenLogprob>> top,
                                        int64_t& text_offset);

struct ResponseMeta {
  std::string id;        // chatcmpl-... / cmpl-...
  int64_t created = 0;   // Unix seconds
  std::string model;
};

nlohmann::json chat_completion_json(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                                    const UsageCounts& usage, bool logprobs);
nlohmann::json completion_json(const ResponseMeta& meta, const std::vector<ChoiceOutput>& choices,
                               const UsageCounts& usage, bool logprobs);

// One streamed chat chunk for choice `index`: `delta` is {"role":...,"content":...} or {} (final);
// `logprobs` null or chat_logprobs_json; `finish_reason` empty: null. With include_usage every chunk
// carries "usage": null, as OpenAI does.
nlohmann::json chat_chunk_json(const ResponseMeta& meta, int index, nlohmann::json delta, nlohmann::json logprobs,
                               const std::string& finish_reason, bool include_usage);
nlohmann::json completion_chunk_json(const ResponseMeta& meta, int index, const std::string& text,
                                     nlohmann::json logprobs, const std::string& finish_reason,
                                     bool include_usage);
// The last chunk of a stream with include_usage: no choices, the usage.
nlohmann::json usage_chunk_json(const ResponseMeta& meta, const char* object, const UsageCounts& usage);

// Embeddings: float arrays, or base64 of little-endian float32 (what the openai clients ask for).
nlohmann::json embeddings_json(const std::string& model, const std::vector<std::vector<float>>& vectors,
                               bool base64, int64_t prompt_tokens);
std::string base64_encode(std::span<const uint8_t> bytes);

nlohmann::json models_json(const std::string& served_name, int64_t created, int64_t max_model_len);
nlohmann::json model_json(const std::string& served_name, int64_t created, int64_t max_model_len);

// SSE framing.
std::string sse_event(const nlohmann::json& j);
inline const char* sse_done() { return "data: [DONE]\n\n"; }

}  // namespace moe::server
