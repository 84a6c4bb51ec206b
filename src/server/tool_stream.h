// tool_stream.h: the model's output to content and tool calls, incrementally. The same parser runs on a
// streamed answer (fed each delta as it comes) and on a whole one (fed once), so both give the same
// calls and the same content.
//
// What it guarantees a streaming client:
//   - no partial marker leaks as content: text that may be the start of a call marker ("<tool_c",
//     "[TOOL_", or for Llama 3 a reply that starts with "{") is held back until it is decided;
//   - a call is released whole, once its closing marker (Hermes </tool_call>) or the end of its JSON
//     (Mistral, Llama 3) has been seen and it parsed: a call that later turned out malformed can never
//     have been half-sent;
//   - a malformed call (not JSON, no "name", arguments not an object, a name that is not one of the
//     tools) is given back as content, byte for byte, markers included;
//   - whitespace that only separates calls (or content from calls) is dropped, so an answer that is
//     just calls has no content;
//   - after max_calls calls (1 when parallel_tool_calls is false) the rest of the output is dropped.
// Formats are tools.h's ToolFormat; each format's parser also accepts the other spellings of that
// family (Mistral's JSON array and its name[ARGS] form; Llama 3's bare JSON and <|python_tag|> JSON).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "server/tools.h"

namespace moe::server {

class ToolCallParser {
 public:
  struct Output {
    std::string content;          // content text released by this call
    std::vector<ToolCall> calls;  // calls completed by this call
  };

  // `tool_names`: the request's tools (a call to any other name is content); `new_id` makes the id of
  // a call that carries none (default: new_tool_call_id(format)).
  ToolCallParser(ToolFormat format, std::vector<std::string> tool_names, size_t max_calls,
                 std::function<std::string()> new_id = {});
  explicit ToolCallParser(const ChatTools& t) : ToolCallParser(t.format, t.names, t.max_calls) {}

  Output feed(std::string_view text);
  // The end of the output: releases what was held back (an unfinished call as content, except a Hermes
  // call that only lacks its closing tag and parses whole).
  Output finish();

  size_t calls_seen() const { return n_calls_; }

 private:
  enum class Mode { Text, Call };
  struct Region {  // the result of trying to complete a call region
    enum Status { Incomplete, Done, Bad } status = Incomplete;
    size_t consumed = 0;  // bytes of the region used (Done, Bad)
    std::vector<ToolCall> calls;
  };

  void run(Output& out, bool final);
  Region try_region(std::string_view region, bool final);
  void accept(std::vector<ToolCall>& calls, Output& out);
  bool call_from_json(const std::string& text, ToolCall& call, bool allow_id) const;

  ToolFormat format_;
  std::vector<std::string> names_;
  size_t max_calls_;
  std::function<std::string()> new_id_;
  std::vector<std::string> markers_;

  Mode mode_ = Mode::Text;
  std::string buf_;      // Text: held-back text; Call: the region after the marker
  std::string marker_;   // the marker that opened the region ("" for a bare Llama 3 JSON reply)
  bool at_start_ = true; // Llama 3: no content yet since the start or the last call
  bool skip_sep_ = false;  // drop separators (whitespace, ';') after a call
  bool done_ = false;    // max_calls reached: the rest is dropped
  size_t n_calls_ = 0;
};

// A whole answer of a tool request: parses `text` and rewrites the OpenAI choice object `choice`
// ({"message": {"content"}, "finish_reason"}): the content that is not calls (null when the answer is
// only calls), `message.tool_calls`, and finish_reason "tool_calls" when the model called and stopped.
// Returns the calls.
std::vector<ToolCall> apply_tool_calls(nlohmann::json& choice, const std::string& text, const ChatTools& tools);

// The finish reason of a tool request's choice: "tool_calls" when it made calls and stopped by itself.
inline std::string tool_finish_reason(const std::string& reason, size_t n_calls) {
  return n_calls > 0 && reason == "stop" ? "tool_calls" : reason;
}

}  // namespace moe::server
