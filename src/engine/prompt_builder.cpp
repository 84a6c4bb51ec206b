// prompt_builder.cpp: template resolution, BOS policy and end-of-turn ids (see prompt_builder.h).
#include "engine/prompt_builder.h"

#include <fstream>
#include <sstream>

#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::engine {
namespace {

// Known end-of-turn markers of chat templates; those that are single tokens of the vocabulary and
// appear in the template text stop generation like EOS.
const char* const kEndOfTurnMarkers[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string resolve_template(const std::string& override_text, const std::optional<std::string>& model_template,
                             bool announce_fallback) {
  if (!override_text.empty()) {
    if (auto b = tmpl::builtin_template(override_text)) return *b;
    if (std::string f = read_text_file(override_text); !f.empty()) return f;
    if (override_text.find("{%") != std::string::npos || override_text.find("{{") != std::string::npos)
      return override_text;
    std::string names;
    for (auto& n : tmpl::builtin_template_names()) names += (names.empty() ? "" : ", ") + n;
    fail("chat template '", override_text, "' is neither a built-in (", names, "), a readable file, nor template text");
  }
  if (model_template) return *model_template;
  if (announce_fallback)
    log_info("the model has no chat template; using the built-in 'chatml' (choose with --chat-template)");
  return *tmpl::builtin_template("chatml");
}

}  // namespace

PromptBuilder::PromptBuilder(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, const std::string& template_override,
                             const std::optional<std::string>& model_template, bool announce_fallback)
    : tok_(std::move(tokenizer)) {
  const std::string source = resolve_template(template_override, model_template, announce_fallback);
  chat_ = std::make_unique<tmpl::ChatTemplate>(source);
  source_ = source;
  for (const char* m : kEndOfTurnMarkers)
    if (source.find(m) != std::string::npos)
      if (auto id = tok_->token_id(m)) eot_ids_.push_back(*id);
}

PromptBuilder::~PromptBuilder() = default;

std::vector<int32_t> PromptBuilder::chat_prompt(const nlohmann::ordered_json& messages,
                                                const nlohmann::ordered_json& tools) const {
  const tokenizer::Tokenizer& tok = *tok_;
  const int32_t bos = tok.bos_id();
  tmpl::RenderOptions opts;
  opts.add_generation_prompt = true;
  opts.bos_token = bos >= 0 ? tok.piece(bos) : "";
  opts.eos_token = tok.eos_id() >= 0 ? tok.piece(tok.eos_id()) : "";
  opts.tools = tools;
  std::vector<int32_t> ids = tok.encode(chat_->render(messages, opts), /*add_bos=*/false, /*parse_special=*/true);
  if (tok.add_bos() && bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
  return ids;
}

std::vector<int32_t> PromptBuilder::text_prompt(std::string_view text) const { return tok_->encode(text, tok_->add_bos()); }

}  // namespace moe::engine
