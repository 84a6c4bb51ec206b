// chat_template.h: renders a model's Jinja chat template (GGUF `tokenizer.chat_template`) exactly as
// Hugging Face's apply_chat_template does with Jinja2's sandbox (trim_blocks, lstrip_blocks,
// raise_exception, tojson, strftime_now), through a small sandboxed interpreter: no file, network or OS
// access; loop iterations, recursion depth and output size are bounded. Template errors (syntax, or
// raise_exception) become moe::Error with the message, never a crash.
//
// Values are nlohmann::ordered_json: HF's `tojson` is Python's json.dumps, which keeps a dict's key
// order, so a tool schema {"type":..., "function":...} must come out in that order. A plain
// nlohmann::json converts implicitly (its keys are already sorted, so only their order is lost); a
// server that wants byte-exact tool JSON parses requests with nlohmann::ordered_json.
#pragma once
#include <nlohmann/json.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe::tmpl {

struct RenderOptions {
  bool add_generation_prompt = false;
  std::string bos_token = "<s>";
  std::string eos_token = "</s>";
  // null (the template sees `tools` as undefined) or an array of tool definitions.
  nlohmann::ordered_json tools = nullptr;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // more variables (e.g. enable_thinking)
  // strftime_now uses this time (seconds since the epoch, UTC) when set, else the local clock.
  std::optional<int64_t> now_epoch_seconds;
  // When set, strftime_now(format) returns this function's result instead of formatting a time (for a
  // caller that fixes the date text, as the reference renderer of the golden cases does).
  std::function<std::string(const std::string& format)> strftime_now;
};

struct Limits {
  int64_t max_output_bytes = 16 << 20;
  int64_t max_loop_iterations = 1 << 20;  // in total per render
  int max_recursion_depth = 64;           // nested macro calls
  // Bytes of strings and elements of lists built by expressions, in total per render: bounds the work
  // of quadratic patterns (a list re-concatenated in a loop) that the two limits above let through.
  int64_t max_work = int64_t{1} << 28;
};

class ChatTemplate {
 public:
  // Parses a template; throws moe::Error on a syntax error (with line number).
  explicit ChatTemplate(const std::string& source, const Limits& limits = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // messages: an array of {"role":..., "content":...} (content may be a string or a list of parts;
  // tool_calls etc. are passed through). Throws moe::Error with the template's own message on failure:
  // raise_exception(msg) gives exactly msg; other errors name the template line.
  std::string render(const nlohmann::ordered_json& messages, const RenderOptions& options) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Built-in templates for models whose GGUF carries none: "mixtral" ([INST]), "chatml", "llama3",
// "mistral-v7", ... Returns nullopt for an unknown name.
std::optional<std::string> builtin_template(const std::string& name);
std::vector<std::string> builtin_template_names();
// The name of the published .jinja file a built-in was copied from (for tests and `--help` text).
std::optional<std::string> builtin_template_source_file(const std::string& name);

}  // namespace moe::tmpl
