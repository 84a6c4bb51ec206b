// request.h: parses and validates the JSON bodies of the OpenAI-compatible routes into plain structs,
// before anything touches the engine. Every field a client can send is checked for type and range
// here, and a bad one becomes an ApiError (HTTP 400) whose `param` names it, so the HTTP layer never
// sees an unvalidated value. A field that is not in the table below gets a 400 naming it (none is
// ignored silently); fields we know but cannot honour without changing the answer (suffix, best_of > n,
// store: true, echo with logprobs) are refused by name too. The extras OpenAI clients send that
// cannot change the output of a single-engine server (user, metadata, store: false, service_tier,
// stream_options) are accepted and have no effect.
//
// Bounds (also in the README's server section):
//   field                                   accepted
//   body                                    at most 8 MiB (413 beyond), one JSON object
//   model                                   string: the served name, the model's file name, or absent
//   messages                                1..4096 messages; role system|developer|user|assistant|tool;
//                                           content a string, null (assistant only) or text parts;
//                                           assistant tool_calls (at most 128), tool tool_call_id
//   tools, tool_choice, parallel_tool_calls at most 128 tools (tools.h has the rules)
//   prompt (completions)                    string, array of 1..16 strings, token ids, or 1..16 arrays
//                                           of token ids (each id in [0, n_vocab)); not empty
//   max_tokens / max_completion_tokens      integer >= 1; clamped to the context left after the prompt;
//                                           absent: all of that context
//   temperature                             number in [0, 2] (0: greedy); default 1
//   top_p                                   number in (0, 1]; default 1
//   top_k                                   integer >= -1 (-1 and 0: off)
//   min_p                                   number in [0, 1]
//   presence_penalty, frequency_penalty     number in [-2, 2]
//   repetition_penalty                      number in (0, 10]; default 1
//   seed                                    integer in [-2^63, 2^64); choice i of n uses seed + i
//   stop                                    string or array of 1..4 strings, each 1..256 bytes
//   n                                       integer in [1, 16]; prompts × n at most 64
//   logprobs (chat) / top_logprobs          boolean / integer in [0, 20] (needs logprobs: true)
//   logprobs (completions)                  integer in [0, 5]
//   stream, stream_options.include_usage    booleans
//   response_format                         {"type": "text"}, {"type": "json_object"} (one JSON object), or
//                                           {"type": "json_schema", "json_schema": {"name", "schema",
//                                           "strict", "description"}} (the schema always enforced; see
//                                           src/grammar/json_schema.cpp for the keywords); a schema error
//                                           is a 400 naming response_format.json_schema.schema. Object
//                                           properties are written in the schema's own order (as OpenAI
//                                           and llama.cpp do), not sorted as nlohmann::json keeps keys:
//                                           the schema is compiled from the body in sent key order
//                                           (parse_body_ordered; the *_request_text functions do both)
//   grammar, guided_grammar                 GBNF text (llama.cpp's format; src/grammar/grammar.h)
//   guided_json                             a JSON schema (object, or a string holding one)
//   guided_regex                            a regex of the subset in src/grammar/regex.cpp (full match)
//   guided_choice                           1..4096 strings; the output is exactly one of them
//                                           (at most one of the six output constraints above per request;
//                                           compile errors are 400s naming the field; with max_tokens too
//                                           small for the model's answer the grammar's shortest completion
//                                           is forced, so the output still parses: finish_reason "length")
//   logit_bias                              {"token id": number in [-100, 100]}, at most 1024 entries
//   echo (completions)                      boolean: the prompt text comes first (not with logprobs)
//   metadata, store, service_tier           accepted, no effect (store: true is refused: nothing is stored)
//   ignore_eos                              boolean (keep generating past EOS; for benchmarks)
//   user                                    anything (no effect)
//   moe                                     {"routing": boolean} (per-token expert routing trace)
//   input (embeddings)                      like prompt, 1..128 inputs; encoding_format float|base64
//   tokens (detokenize)                     array of token ids in [0, n_vocab)
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "server/tools.h"

namespace moe::server {

// An error to send back as OpenAI's error JSON:
// {"error": {"message", "type", "param", "code"}} with HTTP status `status`.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = "",
           std::string type = "invalid_request_error", std::string code = "")
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)),
        code(std::move(code)) {}
  int status;
  std::string param;  // empty: null
  std::string type;
  std::string code;   // empty: null
};

// 400 naming the field.
ApiError invalid_param(const std::string& param, const std::string& message,
                       const std::string& code = "invalid_value");

namespace bounds {
inline constexpr size_t kMaxBodyBytes = 8u << 20;
inline constexpr int kMaxJsonDepth = 256;  // arrays and objects open at once in a body (checked while parsing)
inline constexpr size_t kMaxMessages = 4096;
inline constexpr size_t kMaxPrompts = 16;
inline constexpr size_t kMaxChoices = 64;  // prompts × n
inline constexpr int kMaxN = 16;
inline constexpr size_t kMaxStop = 4;
inline constexpr size_t kMaxStopBytes = 256;
inline constexpr int kMaxChatTopLogprobs = 20;
inline constexpr int kMaxCompletionLogprobs = 5;
inline constexpr size_t kMaxEmbeddingInputs = 128;
inline constexpr double kMaxTemperature = 2.0;
inline constexpr double kMaxPenalty = 2.0;
inline constexpr double kMaxRepetitionPenalty = 10.0;
}  // namespace bounds

// Everything chat and completions share.
struct GenerationParams {
  std::optional<std::string> model;
  std::optional<int64_t> max_tokens;
  engine::SamplingParams sampling;  // top_logprobs already set from the request's logprob fields
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;            // chat: logprobs true; completions: logprobs present
  int top_logprobs = 0;             // alternatives per token
  bool ignore_eos = false;
  bool routing_trace = false;       // "moe": {"routing": true}: each token's experts (routing_trace.h)
  bool echo = false;                // completions: the prompt's text comes first in the output
};

struct ChatRequest {
  GenerationParams gen;
  // Normalised: an array of {"role", "content": string[, "name"]} ("developer" becomes "system",
  // text parts are joined), ready for the chat template.
  nlohmann::json messages;
  // tools / tool_choice / parallel_tool_calls (tools.h); nullopt: none sent.
  std::optional<ToolRequest> tools;
};

// A prompt or embedding input: text to tokenize, or token ids used as they are.
struct PromptInput {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> tokens;
};

struct CompletionRequest {
  GenerationParams gen;
  std::vector<PromptInput> prompts;
};

struct EmbeddingRequest {
  std::optional<std::string> model;
  std::vector<PromptInput> inputs;
  bool base64 = false;
  std::optional<int64_t> dimensions;
};

// POST /tokenize: {"prompt" | "content": text} or {"messages": [...]}; add_special_tokens (default
// true) adds the model's BOS to text (a chat rendering always has it).
struct TokenizeRequest {
  std::optional<std::string> model;
  bool is_chat = false;
  std::string text;
  nlohmann::json messages;
  bool add_special_tokens = true;
};

// POST /detokenize: {"tokens": [ids]}.
struct DetokenizeRequest {
  std::optional<std::string> model;
  std::vector<int32_t> tokens;
};

// The opt-in extension object `"moe": {"routing": bool}` of the OpenAI and Ollama routes: true asks for
// the routing trace. 400 naming moe / moe.routing when it is malformed; absent: false.
bool parse_routing_trace(const nlohmann::json& body);

// Parses a request body: 400 (param null) when it is not JSON or not a JSON object.
nlohmann::json parse_body(std::string_view body);

// Whether the body carries a JSON Schema to compile (guided_json, response_format.json_schema): only then
// is the second, order-keeping parse below worth its cost.
bool has_json_schema(const nlohmann::json& body);
// The body parsed again with its keys in the order sent, under parse_body's depth bound. Passed as
// `in_order` below, the JSON Schemas are compiled from it, so object properties are written in the
// schema's own order (from `body` alone, whose keys nlohmann::json sorts, they would come alphabetically).
nlohmann::ordered_json parse_body_ordered(std::string_view body);

// `in_order`: the same body from parse_body_ordered (or a batch line's `body` parsed as ordered_json),
// or null when it carries no JSON Schema; everything is validated on `body`.
ChatRequest parse_chat_request(const nlohmann::json& body, const nlohmann::ordered_json* in_order = nullptr);
CompletionRequest parse_completion_request(const nlohmann::json& body, int32_t n_vocab,
                                           const nlohmann::ordered_json* in_order = nullptr);
// parse_body, then the request, with parse_body_ordered's copy when the body carries a JSON Schema: what
// the HTTP routes call.
ChatRequest parse_chat_request_text(std::string_view text);
CompletionRequest parse_completion_request_text(std::string_view text, int32_t n_vocab);
EmbeddingRequest parse_embedding_request(const nlohmann::json& body, int32_t n_vocab);
TokenizeRequest parse_tokenize_request(const nlohmann::json& body);
DetokenizeRequest parse_detokenize_request(const nlohmann::json& body, int32_t n_vocab);

}  // namespace moe::server
