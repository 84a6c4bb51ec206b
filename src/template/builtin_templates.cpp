// builtin_templates.cpp: chat templates for models whose GGUF carries none, chosen by name. The texts
// are the models' own published chat templates (model metadata, copied verbatim from the shipped
// .jinja files in ../shared/chat_templates into templates/<name>.jinja, which the build embeds: see
// cmake/embed_templates.cmake), so a model rendered through a built-in gets exactly the prompt format
// it was trained on. "mistral-v7" is an alias of "mistral-small".
#include <algorithm>
#include <cstddef>

#include "template/chat_template.h"

namespace moe::tmpl {
namespace {

struct EmbeddedTemplate {
  const char* name;  // the file's name without .jinja
  const char* text;
  size_t size;
};

#include "builtin_templates.inc"  // kEmbeddedTemplates: templates/*.jinja, generated at build time

struct Builtin {
  const char* name;
  const char* source_file;  // the shipped file templates/<name>.jinja is a copy of
};

const Builtin kBuiltins[] = {
    {"chatml", "chatml-Nous-Hermes-2-Mixtral-8x7B-DPO.jinja"},  // ChatML as used by Nous-Hermes-2-Mixtral-8x7B-DPO and Dolphin-Mixtral
    {"gemma", "google-gemma-2-2b-it.jinja"},  // Gemma 2 (google/gemma-2-2b-it)
    {"hermes-tools", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"},  // Hermes 2 Pro tool use (NousResearch/Hermes-2-Pro-Llama-3-8B)
    {"llama3", "meta-llama-Llama-3.3-70B-Instruct.jinja"},  // Llama 3.x (meta-llama/Llama-3.3-70B-Instruct)
    {"mistral-nemo", "mistralai-Mistral-Nemo-Instruct-2407.jinja"},  // Mistral Nemo (mistralai/Mistral-Nemo-Instruct-2407)
    {"mistral-small", "Mistral-Small-3.2-24B-Instruct-2506.jinja"},  // Mistral Small 3.2, the v7 [SYSTEM_PROMPT] format (mistralai/Mistral-Small-3.2-24B-Instruct-2506)
    {"mixtral", "mistralai-Mixtral-8x7B-Instruct-v0.1.jinja"},  // Mixtral-8x7B-Instruct-v0.1 ([INST])
    {"phi3", "microsoft-Phi-3.5-mini-instruct.jinja"},  // Phi 3.5 (microsoft/Phi-3.5-mini-instruct)
    {"qwen", "Qwen-Qwen2.5-7B-Instruct.jinja"},  // Qwen 2.5 (Qwen/Qwen2.5-7B-Instruct)
    {"qwen3", "Qwen-Qwen3-0.6B.jinja"},  // Qwen 3 (Qwen/Qwen3-0.6B)
};

// The embedded text of a built-in; every name in kBuiltins has its file (checked by the tests).
std::optional<std::string> embedded_text(const std::string& name) {
  for (const auto& t : kEmbeddedTemplates)
    if (name == t.name) return std::string(t.text, t.size);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> builtin_template(const std::string& name) {
  const std::string key = name == "mistral-v7" ? "mistral-small" : name;
  for (const auto& b : kBuiltins)
    if (key == b.name) return embedded_text(b.name);
  return std::nullopt;
}

std::vector<std::string> builtin_template_names() {
  std::vector<std::string> names;
  for (const auto& b : kBuiltins) names.emplace_back(b.name);
  names.emplace_back("mistral-v7");
  std::sort(names.begin(), names.end());
  return names;
}

std::optional<std::string> builtin_template_source_file(const std::string& name) {
  const std::string key = name == "mistral-v7" ? "mistral-small" : name;
  for (const auto& b : kBuiltins)
    if (key == b.name) return std::string(b.source_file);
  return std::nullopt;
}

}  // namespace moe::tmpl
