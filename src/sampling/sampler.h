// sampler.h: turns a row of logits into the next token, with llama.cpp's semantics and order:
// penalties (repetition, presence, frequency over the last N tokens) -> top-k -> top-p -> min-p ->
// temperature -> a draw from a seeded std::mt19937_64 (same seed, same tokens). Temperature <= 0 is
// greedy (argmax after penalties, ties to the lower id). It also reports the log-probability of the
// chosen token and of the top-n alternatives under the model's own distribution (the log-softmax of
// the raw logits, before penalties and filters), which is what OpenAI-style logprobs report.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

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
  const Params& params() const { return p_; }
  // Throws moe::Error for parameters out of range (negative penalties, top_p <= 0, NaN ...).
  static void validate(const Params& params);

  // Samples from `logits` (n_vocab values). `history` holds the tokens so far (prompt and generated);
  // the penalties look at its last repeat_last_n entries.
  Sampled sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  Params p_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;
  std::vector<float> work_;
  std::vector<int32_t> counts_;
};

}  // namespace moe::sampling
