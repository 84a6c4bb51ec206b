// ollama_request.h: parses and validates the bodies of the Ollama routes (/api/generate, /api/chat,
// /api/embed, /api/embeddings, /api/show) into plain structs, before anything touches the engine, so
// the route code (ollama.cpp) only sees checked values. Shapes follow Ollama's API documentation.
// A bad field becomes an ApiError (400) whose message names it; the routes send it as Ollama's
// {"error": "..."}.
//
// What is honoured, and what is refused rather than silently dropped:
//   model                     required; "name", "name:latest" or any alias of the served model
//   prompt / messages         text; messages' role system|user|assistant|tool, content a string
//   images                    refused (this is a text model)
//   tools                     chat: tools as OpenAI's (tools.h), rendered by the model's template; the
//                             reply's calls come back as message.tool_calls [{"function": {"index",
//                             "name", "arguments": {…}}}]; messages' tool_calls and tool role (tool_name)
//   format                    "json" (one JSON object) or a JSON schema, both constrained while sampling by
//                             the grammar engine (grammar/grammar.h); a schema it cannot enforce exactly is
//                             refused naming the keyword
//   options                   temperature, top_k, top_p, min_p, seed, num_predict (-1/-2: to the end
//                             of the context), num_ctx (caps prompt + reply, at most the server's
//                             context), stop, repeat_penalty, repeat_last_n, presence_penalty,
//                             frequency_penalty; mirostat != 0, tfs_z != 1, typical_p != 1 refused;
//                             runtime-only options (num_gpu, num_thread, num_batch, use_mmap, ...)
//                             and unknown ones ignored, as Ollama does
//   system, template, raw     generate only; template is Ollama's Go-template subset ({{ .System }},
//                             {{ .Prompt }}, {{ .Response }}, {{ if .X }}...{{ end }}, trim markers)
//   context                   generate only: token ids of an earlier reply, prepended (deprecated in
//                             Ollama, still sent by old clients)
//   suffix                    refused when non-empty (no fill-in-the-middle)
//   stream                    default true; keep_alive accepted (the model stays loaded)
//   think                     refused when true (no thinking models)
//   moe                       {"routing": true}: the per-token expert routing trace
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/request.h"

namespace moe::server::ollama {

inline constexpr size_t kMaxStop = 16;
inline constexpr size_t kMaxEmbedInputs = 128;

struct Options {
  engine::SamplingParams sampling;     // temperature 0.8 by default, as Ollama's
  std::optional<int64_t> num_predict;  // absent or negative: to the end of the context
  std::optional<int64_t> num_ctx;      // absent: the server's context
  std::vector<std::string> stop;
};

struct GenerateRequest {
  std::string model;
  std::string prompt;
  std::optional<std::string> system;
  std::optional<std::string> template_text;
  std::vector<int32_t> context;
  bool raw = false;
  bool stream = true;
  bool routing_trace = false;
  Options options;
};

struct ChatRequest {
  std::string model;
  nlohmann::json messages;  // [{"role", "content"}] ready for the chat template
  std::optional<ToolRequest> tools;  // tools (tool_choice is always auto); key order lost, see ollama.cpp
  bool stream = true;
  bool routing_trace = false;
  Options options;
};

struct EmbedRequest {
  std::string model;
  std::vector<std::string> inputs;
  bool truncate = true;
  std::optional<int64_t> dimensions;
};

// `format` as a JSON schema, compiled (the routes compile it again from the body in its sent key order,
// so the reply's properties come in the schema's order). 400 naming format and the refused keyword.
std::shared_ptr<const grammar::Grammar> format_grammar(const nlohmann::ordered_json& schema);

GenerateRequest parse_generate(const nlohmann::json& body, int32_t n_vocab);
ChatRequest parse_chat(const nlohmann::json& body);
EmbedRequest parse_embed(const nlohmann::json& body);        // /api/embed: input string or strings
EmbedRequest parse_embeddings(const nlohmann::json& body);   // /api/embeddings (legacy): prompt
// /api/show: "model" (or the older "name").
std::string parse_show(const nlohmann::json& body);

// Renders Ollama's Go-template subset (see above) with .System, .Prompt and an empty .Response.
// Throws ApiError(400) naming the construct it does not support.
std::string render_go_template(const std::string& tmpl, const std::string& system, const std::string& prompt);

}  // namespace moe::server::ollama
