// prompt_builder.h: text and conversations to the prompt ids a model wants, shared by every frontend
// (`moe run`, `moe chat`, the HTTP server). It owns the three rules that must agree everywhere: which
// chat template applies (an override, else the model's own, else ChatML), the BOS policy (the model's
// BOS exactly once, even when the template writes it), and which tokens end an assistant turn. The
// engine only ever sees token ids; keeping this apart lets two engines share one model and lets a
// frontend render prompts without an engine.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::tokenizer { class Tokenizer; }
namespace moe::tmpl { class ChatTemplate; }

namespace moe::engine {

class PromptBuilder {
 public:
  // `template_override`: a built-in template name, a readable file, or template text; empty: the
  // model's own `model_template` (tokenizer.chat_template), else the built-in ChatML (logged). Throws
  // moe::Error naming the override when it is none of those, or with the parser's message.
  // `announce_fallback`: log the ChatML fallback (frontends that never render a conversation pass false).
  PromptBuilder(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, const std::string& template_override,
                const std::optional<std::string>& model_template, bool announce_fallback = true);
  ~PromptBuilder();

  // The prompt ids of a conversation: the chat template rendered with the generation prompt and the
  // model's BOS/EOS texts, special-token texts parsed as tokens, and BOS exactly once (a template that
  // writes it gets no second one). Throws moe::Error with the template's message. `tools`: null (the
  // template sees no tools) or the request's tool definitions, rendered in the template's own format.
  std::vector<int32_t> chat_prompt(const nlohmann::ordered_json& messages,
                                   const nlohmann::ordered_json& tools = nullptr) const;
  // The ids of a plain completion prompt: the text as it is (special-token texts not parsed), with the
  // model's BOS when the model asks for one.
  std::vector<int32_t> text_prompt(std::string_view text) const;
  // The chat template's end-of-turn token ids (e.g. <|im_end|> for ChatML): markers the template text
  // uses that are single tokens of the vocabulary. Generation stops on them like on EOS.
  const std::vector<int32_t>& end_of_turn_ids() const { return eot_ids_; }

  const tmpl::ChatTemplate& chat_template() const { return *chat_; }
  // The template's text (the server reads its tool-call format from it: server/tools.h).
  const std::string& template_source() const { return source_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tok_; }

 private:
  std::shared_ptr<const tokenizer::Tokenizer> tok_;
  std::unique_ptr<tmpl::ChatTemplate> chat_;
  std::string source_;
  std::vector<int32_t> eot_ids_;
};

}  // namespace moe::engine
