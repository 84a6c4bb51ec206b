// logits_processor.h: one link of the sampling chain. A processor rewrites a row of logits for the next
// token of one sequence (a penalty lowers some, a constraint sets the forbidden ones to -infinity) and
// may keep state that follows the tokens chosen (a grammar's position). The Sampler runs its chain in
// two groups: constraints first (they decide which tokens are possible at all; logprobs are reported
// under the constrained distribution), then shapers (penalties, biases) before top-k/top-p/min-p,
// temperature and the draw. New rules (logit_bias, grammars, adapters' stop rules) are new processors.
#pragma once
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace moe::sampling {

// What a processor may look at besides the logits.
struct SequenceContext {
  std::span<const int32_t> history;                              // prompt and tokens generated so far
  int64_t tokens_left = std::numeric_limits<int64_t>::max();     // tokens it may still generate, this one included
};

class LogitsProcessor {
 public:
  virtual ~LogitsProcessor() = default;
  // Rewrites `logits` (n_vocab values) in place.
  virtual void apply(std::span<float> logits, const SequenceContext& context) = 0;
  // The token the sampler chose from the processed row.
  virtual void accept(int32_t token) { (void)token; }
};

// Repetition (llama.cpp's: a positive logit divided by it, a non-positive one multiplied), presence
// (once per token seen) and frequency (once per occurrence) penalties over the last `last_n` tokens of
// the history (-1: all of it).
class PenaltyProcessor : public LogitsProcessor {
 public:
  PenaltyProcessor(float repeat_penalty, float presence_penalty, float frequency_penalty, int32_t last_n)
      : repeat_(repeat_penalty), presence_(presence_penalty), frequency_(frequency_penalty), last_n_(last_n) {}
  // Whether these values change anything (the chain leaves the processor out otherwise).
  static bool active(float repeat_penalty, float presence_penalty, float frequency_penalty) {
    return repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
  void apply(std::span<float> logits, const SequenceContext& context) override;

 private:
  float repeat_, presence_, frequency_;
  int32_t last_n_;
  std::vector<int32_t> counts_;  // per token id, kept to reuse its capacity
};

// OpenAI's logit_bias: a fixed amount added to some tokens' logits (-100 bans a token in practice, +100
// all but forces it). Ids are checked by the caller. Runs as a constraint, before grammars: a bias never
// revives a token a grammar forbids.
class LogitBiasProcessor : public LogitsProcessor {
 public:
  explicit LogitBiasProcessor(std::vector<std::pair<int32_t, float>> bias) : bias_(std::move(bias)) {}
  void apply(std::span<float> logits, const SequenceContext&) override {
    for (auto [id, b] : bias_)
      if (id >= 0 && static_cast<size_t>(id) < logits.size()) logits[static_cast<size_t>(id)] += b;
  }

 private:
  std::vector<std::pair<int32_t, float>> bias_;
};

}  // namespace moe::sampling
