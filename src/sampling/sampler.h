// sampler.h: turns a row of logits into the next token, with llama.cpp's semantics and order:
// constraints (logits processors that forbid tokens, e.g. JSON) -> penalties (repetition, presence,
// frequency over the last N tokens, a PenaltyProcessor) -> top-k -> top-p -> min-p -> temperature -> a
// draw from a seeded std::mt19937_64 (same seed, same tokens). Temperature <= 0 is greedy (argmax after
// penalties, ties to the lower id). It also reports the log-probability of the chosen token and of the
// top-n alternatives under the model's own distribution (the log-softmax of the logits after the
// constraints, before penalties and filters), which is what OpenAI-style logprobs report.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "sampling/logits_processor.h"

namespace moe::sampling {

struct Params {
  float temperature = 1.0f;        // <= 0: greedy
  int32_t top_k = 0;               // <= 0: off
  float top_p = 1.0f;              // >= 1: off
  float min_p = 0.0f;              // <= 0: off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;     // 1: off; logit > 0 is divided by it, logit <= 0 multiplied
  int32_t repeat_last_n = 64;      // how many recent tokens the three penalties look at (-1: all)
  float presence_penalty = 0.0f;   // subtracted once from every token seen in the window
  float frequency_penalty = 0.0f;  // subtracted once per occurrence in the window
  uint64_t seed = 0;
  int32_t n_top_logprobs = 0;      // alternatives to report (0: only the chosen token's logprob)
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
};

struct Sampled {
  int32_t id = 0;
  float logprob = 0;                // of the chosen token under the model's distribution
  std::vector<TokenLogprob> top;    // the n_top_logprobs most likely tokens, most likely first
};

class Sampler {
 public:
  explicit Sampler(const Params& params);
  ~Sampler();
  // Adds a constraint to the chain (applied in the order added, before the penalties).
  void add_constraint(std::unique_ptr<LogitsProcessor> constraint);
  // Throws moe::Error for parameters out of range (negative penalties, top_p <= 0, NaN ...).
  static void validate(const Params& params);

  // Samples from `logits` (n_vocab values). `history` holds the tokens so far (prompt and generated);
  // the penalties look at its last repeat_last_n entries. `tokens_left` (this one included) is for
  // constraints that must finish in time. Every processor is told the chosen token.
  Sampled sample(std::span<const float> logits, std::span<const int32_t> history,
                 int64_t tokens_left = std::numeric_limits<int64_t>::max());

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  Params p_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;
  std::vector<std::unique_ptr<LogitsProcessor>> constraints_;
  std::vector<std::unique_ptr<LogitsProcessor>> shapers_;  // penalties
  std::vector<float> constrained_;  // the row after the constraints
  std::vector<float> work_;         // ... and after the shapers
};

}  // namespace moe::sampling
