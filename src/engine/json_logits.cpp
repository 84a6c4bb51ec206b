// json_logits.cpp: the precomputed token classes and the mask of one step (see json_logits.h).
#include "engine/json_logits.h"

#include <algorithm>
#include <limits>

#include "util/error.h"

namespace moe::engine {
namespace {
bool is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
}  // namespace

JsonVocabulary::JsonVocabulary(std::shared_ptr<const std::vector<std::string>> token_text, int32_t eos_id)
    : text_(std::move(token_text)), eos_(eos_id) {
  if (!text_) fail("JsonVocabulary needs the token texts");
  const auto n = static_cast<int32_t>(text_->size());
  plain_string_.assign(static_cast<size_t>(n), 0);
  by_text_.reserve(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    const std::string& t = text(id);
    if (t.empty()) continue;
    by_text_[std::string_view(t)].push_back(id);
    bool plain = true;
    for (unsigned char c : t) plain = plain && c >= 0x20 && c != '"' && c != '\\';
    if (plain) plain_string_[static_cast<size_t>(id)] = 1;
    else not_plain_.push_back(id);
    size_t first = 0;
    while (first < t.size() && is_ws(static_cast<unsigned char>(t[first]))) ++first;
    if (first == t.size()) all_space_.push_back(id);
    else if (first == 0) by_first_[static_cast<unsigned char>(t[0])].push_back(id);
    else by_first_after_space_[static_cast<unsigned char>(t[first])].push_back(id);
  }
}

int64_t JsonVocabulary::allowed(const JsonConstraint& state, int64_t tokens_left, std::vector<uint8_t>& out) const {
  const auto n = static_cast<size_t>(n_vocab());
  int64_t count = 0;
  auto allow = [&](int32_t id) {
    if (!out[static_cast<size_t>(id)]) {
      out[static_cast<size_t>(id)] = 1;
      ++count;
    }
  };
  auto try_all = [&](const std::vector<int32_t>& ids) {
    for (int32_t id : ids)
      if (state.accepts(text(id))) allow(id);
  };

  if (state.complete()) {
    out.assign(n, 0);
    if (eos_ >= 0 && static_cast<size_t>(eos_) < n) allow(eos_);
    return count;
  }
  const std::string closing = state.closing_suffix();
  if (tokens_left <= static_cast<int64_t>(closing.size())) {
    // Only the texts that spell a prefix of the closing text: one lookup per prefix length.
    out.assign(n, 0);
    for (size_t len = 1; len <= closing.size(); ++len) {
      auto it = by_text_.find(std::string_view(closing).substr(0, len));
      if (it != by_text_.end())
        for (int32_t id : it->second) allow(id);
    }
    return count;
  }
  if (state.in_string()) {
    // Plain characters are accepted as they are; only tokens with a quote, backslash or control byte
    // need the recogniser.
    out = plain_string_;
    count = std::count(out.begin(), out.end(), uint8_t{1});
    try_all(not_plain_);
    return count;
  }
  // Elsewhere a token can only pass if the state takes its first byte (or, after leading whitespace,
  // its first other byte): whole groups are skipped on one byte's test.
  out.assign(n, 0);
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    if (!by_first_[static_cast<size_t>(b)].empty() && state.accepts(std::string_view(&c, 1)))
      try_all(by_first_[static_cast<size_t>(b)]);
  }
  JsonConstraint after_space = state;
  if (after_space.advance(" ")) {
    // Whitespace here leads to a state between JSON tokens, whose answer to the next non-space byte does
    // not depend on which whitespace or how much of it came before (strings, the one state where ' ' and
    // '\n' differ, were handled above).
    for (int b = 0; b < 256; ++b) {
      const char c = static_cast<char>(b);
      if (!by_first_after_space_[static_cast<size_t>(b)].empty() && after_space.accepts(std::string_view(&c, 1)))
        try_all(by_first_after_space_[static_cast<size_t>(b)]);
    }
    try_all(all_space_);
  } else if (state.accepts("\n") || state.accepts("\t") || state.accepts("\r")) {
    // Some whitespace but not ' ' (no state of this grammar; kept exact rather than assumed).
    for (const auto& group : by_first_after_space_) try_all(group);
    try_all(all_space_);
  }
  return count;
}

void JsonLogitsProcessor::apply(std::span<float> logits, const sampling::SequenceContext& context) {
  if (static_cast<int64_t>(logits.size()) != vocab_->n_vocab())
    fail("the JSON constraint's vocabulary has ", vocab_->n_vocab(), " tokens, the logits ", logits.size());
  if (vocab_->allowed(state_, context.tokens_left, allowed_) == 0) return;  // nothing fits: leave the row
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t id = 0; id < logits.size(); ++id)
    if (!allowed_[id]) logits[id] = ninf;
}

void JsonLogitsProcessor::accept(int32_t token) {
  if (token >= 0 && token < vocab_->n_vocab()) state_.advance(vocab_->text(token));
}

}  // namespace moe::engine
