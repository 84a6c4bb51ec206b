// tools.h: tool calling for the chat routes (OpenAI /v1/chat/completions and Ollama /api/chat): the
// request's `tools` / `tool_choice` / `parallel_tool_calls` validated, the format in which the chat
// template teaches the model to call a tool, the messages of a tool conversation (assistant
// `tool_calls`, `tool` results) shaped for the template, and the response shapes of parsed calls.
// Parsing the model's output into calls is tool_stream.h (one incremental parser serves the streamed
// and the whole answer, so both give the same calls).
//
// The call format is read from the template text itself, because it is what the model was trained on
// (the templates in ../shared/chat_templates and the built-ins):
//   Hermes   the template writes "<tool_call>": Hermes 2 Pro, Qwen 2.5, Qwen 3, Nous-Hermes tool use;
//            a call is <tool_call>{"name": …, "arguments": {…}}</tool_call>
//   Mistral  the template writes "[TOOL_CALLS]": Mistral Nemo ([TOOL_CALLS][{"name", "arguments",
//            "id"}, …]) and Mistral Small 3.x / v7 ([TOOL_CALLS]name[CALL_ID]id[ARGS]{…}, or without
//            [CALL_ID]); both spellings are parsed whichever template is loaded
//   Llama3   the template writes "<|python_tag|>" or '"parameters"' with Llama 3 headers: a JSON object
//            {"name": …, "parameters": {…}} as the whole reply, optionally after <|python_tag|>
// A template with none of these markers (ChatML, [INST] Mixtral, Gemma, Phi 3) does not support tools:
// a request that sends tools to it gets a 400 saying so and naming --chat-template.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"

namespace moe::server {

class Backend;

enum class ToolFormat { None, Hermes, Mistral, Llama3 };
const char* tool_format_name(ToolFormat f);  // "none", "hermes", "mistral", "llama3"
ToolFormat detect_tool_format(std::string_view template_source);

namespace bounds {
inline constexpr size_t kMaxTools = 128;
inline constexpr size_t kMaxToolNameBytes = 64;
inline constexpr size_t kMaxToolCallsPerMessage = 128;
}  // namespace bounds

enum class ToolChoice { Auto, None, Required, Named };

// A request's tools, validated. With ToolChoice::None the tools are neither rendered nor parsed.
struct ToolRequest {
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();  // as sent (key order kept), for the template
  std::vector<std::string> names;                                  // per tool
  std::vector<nlohmann::ordered_json> parameters;                  // per tool: its JSON Schema (an object)
  ToolChoice choice = ToolChoice::Auto;
  std::string named;                                               // ToolChoice::Named: the function's name
  bool parallel = true;                                            // parallel_tool_calls
  bool active() const { return choice != ToolChoice::None; }       // rendered into the prompt and parsed
  bool constrained() const { return choice == ToolChoice::Required || choice == ToolChoice::Named; }
  size_t max_calls() const { return parallel ? bounds::kMaxToolCallsPerMessage : 1; }
};

// `tools`, `tool_choice`, `parallel_tool_calls` of an OpenAI chat body (ordered, so a tool's schema
// keeps its key order in the prompt). nullopt when no tools are sent (tool_choice must then be absent,
// "none" or "auto"). Throws ApiError (400) naming the field: a tool that is not {"type": "function",
// "function": {"name", "description"?, "parameters"?, "strict"?}}, a name that is not 1-64 of
// [A-Za-z0-9_-] or repeats, parameters that are not a JSON Schema object (type "object" when given), a
// tool_choice naming no tool. `functions` / `function_call` (the deprecated spelling) get a 400 saying
// to use tools.
std::optional<ToolRequest> parse_openai_tools(const nlohmann::ordered_json& body);
// Ollama's `tools` (the same objects as OpenAI's; tool_choice is always auto). nullopt when absent/empty.
std::optional<ToolRequest> parse_ollama_tools(const nlohmann::ordered_json& body);

// The tool fields of one request message, added to its normalised form `out` (request.cpp's
// normalise_messages calls this for every message): assistant `tool_calls` [{id, type: "function",
// function: {name, arguments}}] with `arguments` a JSON text (OpenAI) or an object (Ollama) — stored
// as an object, which is what the templates render (tojson) —, and a tool message's `tool_call_id`
// and `name`. `p` is the message's path for errors ("messages[3]").
void normalise_tool_fields(const nlohmann::json& message, const std::string& p, const std::string& role,
                           nlohmann::json& out);

// One parsed call. `arguments` is compact JSON text of an object.
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;
};

// A fresh call id in the shape the format's template accepts back: Mistral's templates demand 9
// alphanumerics; the others get OpenAI's "call_" + 24 alphanumerics.
std::string new_tool_call_id(ToolFormat f);

// What a chat route needs to read tool calls out of the model's output (tool_stream.h's parser is
// built from it). Inactive: the output is all content.
struct ChatTools {
  bool active = false;
  ToolFormat format = ToolFormat::None;
  std::vector<std::string> names;
  size_t max_calls = 0;
};

// The loaded template's tool-call format; a 400 naming `param` when it has none (the message says
// which built-in templates have one and how to choose them).
ToolFormat require_tool_format(const Backend& backend, const std::string& param);
// The prompt of a tool request: the messages with the tools rendered by the chat template (none when
// tool_choice is "none"); sets `out` for parsing the answer, and for "required" or a named function
// `sampling.grammar` to the call grammar (tool_grammar.h). Every tool's parameter schema must compile
// (400 naming it). The template's own error (e.g. Mistral's 9-character call ids, Llama 3's one call per
// message) is a 400 naming `messages`.
std::vector<int32_t> tool_prompt_ids(const Backend& backend, const nlohmann::json& messages, const ToolRequest& tools,
                                     ChatTools& out, engine::SamplingParams& sampling);

// OpenAI `message.tool_calls`: [{"id", "type": "function", "function": {"name", "arguments"}}].
nlohmann::json openai_tool_calls_json(const std::vector<ToolCall>& calls);
// The streamed deltas of one call as OpenAI sends them: the first carries index, id, type and the name
// (with arguments ""), the next the arguments text.
std::vector<nlohmann::json> openai_tool_call_deltas(const ToolCall& call, int index);
// Ollama `message.tool_calls`: [{"function": {"name", "arguments": {…}}}] (arguments an object).
nlohmann::json ollama_tool_calls_json(const std::vector<ToolCall>& calls);

}  // namespace moe::server
