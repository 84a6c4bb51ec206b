// json_logits.h: the `json_object` constraint as a logits processor. Deciding, for every token of the
// vocabulary, whether it keeps the output a prefix of one JSON object used to run the recogniser over
// every token's text at every step. JsonVocabulary precomputes, once per vocabulary, what lets a step
// skip almost all of that: which tokens are plain string characters (accepted unchanged inside a
// string, the common state), the tokens grouped by their first byte and by their first byte after
// leading whitespace (a state that rejects that byte rejects the whole group), and an index from text to
// ids (for the forced closing text). A step then runs the recogniser only over the few tokens that can
// pass, plus one flag test per token.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/json_constraint.h"
#include "sampling/logits_processor.h"

namespace moe::engine {

class JsonVocabulary {
 public:
  // `token_text`: each id's own text (what the output gains when the id is emitted); `eos_id` < 0 when
  // the model has none.
  JsonVocabulary(std::shared_ptr<const std::vector<std::string>> token_text, int32_t eos_id);

  int32_t n_vocab() const { return static_cast<int32_t>(text_->size()); }
  const std::string& text(int32_t id) const { return (*text_)[static_cast<size_t>(id)]; }
  int32_t eos_id() const { return eos_; }

  // Which ids may follow `state` when `tokens_left` tokens (this one included) may still be generated:
  // out[id] = 1 for those allowed. Returns how many. Exactly the rule of the engine: once the object is
  // complete only EOS; when the tokens left are no more than the closing text, only non-empty prefixes
  // of that text; otherwise every non-empty text the recogniser accepts.
  int64_t allowed(const JsonConstraint& state, int64_t tokens_left, std::vector<uint8_t>& out) const;

 private:
  std::shared_ptr<const std::vector<std::string>> text_;
  int32_t eos_;
  std::vector<uint8_t> plain_string_;                // [n_vocab]: 1 when accepted unchanged inside a string
  std::vector<int32_t> not_plain_;                   // non-empty ids with '"', '\\' or a control byte
  std::array<std::vector<int32_t>, 256> by_first_;   // non-empty ids without leading whitespace, by first byte
  std::array<std::vector<int32_t>, 256> by_first_after_space_;  // ids with leading whitespace, by the first other byte
  std::vector<int32_t> all_space_;                   // non-empty ids of whitespace only
  std::unordered_map<std::string_view, std::vector<int32_t>> by_text_;  // text -> ids (views into text_)
};

// One sequence's constraint: masks what JsonVocabulary forbids (every token is left as it is when
// nothing would be allowed, e.g. a vocabulary without the needed characters) and follows the chosen
// tokens' text.
class JsonLogitsProcessor : public sampling::LogitsProcessor {
 public:
  explicit JsonLogitsProcessor(std::shared_ptr<const JsonVocabulary> vocabulary) : vocab_(std::move(vocabulary)) {}
  void apply(std::span<float> logits, const sampling::SequenceContext& context) override;
  void accept(int32_t token) override;
  const JsonConstraint& state() const { return state_; }

 private:
  std::shared_ptr<const JsonVocabulary> vocab_;
  JsonConstraint state_;
  std::vector<uint8_t> allowed_;
};

}  // namespace moe::engine
