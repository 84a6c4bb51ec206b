// chat_template.h: renders a model's Jinja chat template (GGUF `tokenizer.chat_template`) exactly as
// Hugging Face's apply_chat_template does with Jinja2's sandbox (trim_blocks, lstrip_blocks,
// raise_exception, tojson, strftime_now), through a small sandboxed interpreter: no file, network or OS
// access; loop iterations, recursion depth and output size are bounded. Template errors (syntax, or
// raise_exception) become moe::Error with the message, never a crash.
#pragma once
#include <nlohmann/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe::tmpl {

struct RenderOptions {
  bool add_generation_prompt = false;
  std::string bos_token = "<s>";
  std::string eos_token = "</s>";
  nlohmann::json tools = nullptr;          // null or an array of tool definitions
  nlohmann::json extra = nlohmann::json::object();  // more variables (e.g. enable_thinking)
  // strftime_now uses this time (seconds since the epoch, UTC) when set, else the clock.
  std::optional<int64_t> now_epoch_seconds;
};

struct Limits {
  int64_t max_output_bytes = 16 << 20;
  int64_t max_loop_iterations = 1 << 20;  // in total per render
  int max_recursion_depth = 64;
};

class ChatTemplate {
 public:
  // Parses a template; throws moe::Error on a syntax error (with line number).
  explicit ChatTemplate(const std::string& source, const Limits& limits = {});
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // messages: an array of {"role":..., "content":...} (content may be a string or a list of parts;
  // tool_calls etc. are passed through). Throws moe::Error with the template's own message on failure.
  std::string render(const nlohmann::json& messages, const RenderOptions& options) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Built-in templates for models whose GGUF carries none: "mixtral" ([INST]), "chatml", "llama3",
// "mistral-v7", ... Returns nullopt for an unknown name.
std::optional<std::string> builtin_template(const std::string& name);
std::vector<std::string> builtin_template_names();

}  // namespace moe::tmpl
