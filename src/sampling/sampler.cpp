// sampler.cpp: the sampling chain (see sampler.h). Works on a candidate list that each filter shrinks;
// the list and the penalty counts are members so a step allocates nothing once warm.
#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace moe::sampling {
namespace {

// A uniform double in [0, 1) from 53 random bits: the same on every standard library (unlike
// std::uniform_real_distribution, whose algorithm is implementation-defined).
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

bool by_logit_desc(const auto& a, const auto& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

}  // namespace

void Sampler::validate(const Params& p) {
  auto finite = [](float v) { return std::isfinite(v); };
  if (!finite(p.temperature) || p.temperature > 100) fail("temperature ", p.temperature, " must be a number <= 100");
  if (!finite(p.top_p) || p.top_p <= 0) fail("top_p ", p.top_p, " must be in (0, 1]");
  if (!finite(p.min_p) || p.min_p < 0 || p.min_p > 1) fail("min_p ", p.min_p, " must be in [0, 1]");
  if (!finite(p.repeat_penalty) || p.repeat_penalty <= 0) fail("repeat penalty ", p.repeat_penalty, " must be > 0");
  if (!finite(p.presence_penalty) || std::fabs(p.presence_penalty) > 100)
    fail("presence penalty ", p.presence_penalty, " must be in [-100, 100]");
  if (!finite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 100)
    fail("frequency penalty ", p.frequency_penalty, " must be in [-100, 100]");
  if (p.repeat_last_n < -1) fail("repeat_last_n ", p.repeat_last_n, " must be >= -1");
  if (p.n_top_logprobs < 0 || p.n_top_logprobs > 1000) fail("top logprobs ", p.n_top_logprobs, " must be in [0, 1000]");
}

void PenaltyProcessor::apply(std::span<float> logits, const SequenceContext& context) {
  const std::span<const int32_t> history = context.history;
  if (history.empty() || last_n_ == 0) return;
  const auto n = static_cast<int32_t>(logits.size());
  size_t window = last_n_ < 0 ? history.size() : std::min<size_t>(history.size(), last_n_);
  auto recent = history.subspan(history.size() - window);
  counts_.assign(static_cast<size_t>(n), 0);
  for (int32_t id : recent)
    if (id >= 0 && id < n) ++counts_[static_cast<size_t>(id)];
  for (int32_t id = 0; id < n; ++id) {
    const int32_t c = counts_[static_cast<size_t>(id)];
    if (c == 0) continue;
    float& l = logits[static_cast<size_t>(id)];
    l = l <= 0 ? l * repeat_ : l / repeat_;
    l -= static_cast<float>(c) * frequency_ + presence_;
  }
}

Sampler::Sampler(const Params& params) : p_(params), rng_(params.seed) {
  validate(params);
  if (PenaltyProcessor::active(p_.repeat_penalty, p_.presence_penalty, p_.frequency_penalty))
    shapers_.push_back(std::make_unique<PenaltyProcessor>(p_.repeat_penalty, p_.presence_penalty, p_.frequency_penalty,
                                                          p_.repeat_last_n));
}

Sampler::~Sampler() = default;

void Sampler::add_constraint(std::unique_ptr<LogitsProcessor> constraint) { constraints_.push_back(std::move(constraint)); }

Sampled Sampler::sample(std::span<const float> raw_logits, std::span<const int32_t> history, int64_t tokens_left) {
  const auto n = static_cast<int32_t>(raw_logits.size());
  if (n <= 0) fail("cannot sample from an empty vocabulary");
  Sampled out;
  const SequenceContext context{history, tokens_left};

  // Constraints decide what is possible; what follows sees only their result.
  std::span<const float> logits = raw_logits;
  if (!constraints_.empty()) {
    constrained_.assign(raw_logits.begin(), raw_logits.end());
    for (auto& c : constraints_) c->apply(constrained_, context);
    logits = constrained_;
  }

  // The distribution logprobs are reported under: log_softmax of the constrained logits.
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : logits) mx = std::max(mx, v);
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v) - mx);
  const double log_z = mx + std::log(z);

  // Penalties (and any later shaper) on a copy: logprobs stay those of the constrained distribution.
  work_.assign(logits.begin(), logits.end());
  for (auto& p : shapers_) p->apply(work_, context);

  cand_.resize(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) cand_[static_cast<size_t>(id)] = {id, work_[static_cast<size_t>(id)]};

  if (p_.temperature <= 0) {
    out.id = std::min_element(cand_.begin(), cand_.end(), by_logit_desc<Candidate, Candidate>)->id;
  } else {
    // top-k: keep the k largest (sorted); otherwise sort all when a later filter needs the order.
    size_t keep = cand_.size();
    if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
      keep = static_cast<size_t>(p_.top_k);
      std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(keep), cand_.end(),
                        by_logit_desc<Candidate, Candidate>);
    } else {
      std::sort(cand_.begin(), cand_.end(), by_logit_desc<Candidate, Candidate>);
    }
    cand_.resize(keep);
    // top-p: the smallest prefix whose probability (softmax over what is left) reaches top_p.
    if (p_.top_p < 1.0f) {
      const double top = cand_[0].logit;
      double sum = 0;
      for (const auto& c : cand_) sum += std::exp(static_cast<double>(c.logit) - top);
      double cum = 0;
      size_t i = 0;
      for (; i < cand_.size(); ++i) {
        cum += std::exp(static_cast<double>(cand_[i].logit) - top) / sum;
        if (cum >= p_.top_p) break;
      }
      cand_.resize(std::min(cand_.size(), i + 1));
    }
    // min-p: drop tokens less likely than min_p times the most likely one.
    if (p_.min_p > 0.0f) {
      const double threshold = cand_[0].logit + std::log(static_cast<double>(p_.min_p));
      size_t i = 1;
      while (i < cand_.size() && cand_[i].logit >= threshold) ++i;
      cand_.resize(i);
    }
    // Temperature, then one draw from the softmax over what is left.
    const double inv_t = 1.0 / p_.temperature;
    const double top = cand_[0].logit * inv_t;
    double sum = 0;
    for (const auto& c : cand_) sum += std::exp(c.logit * inv_t - top);
    double r = uniform01(rng_) * sum;
    out.id = cand_.back().id;
    for (const auto& c : cand_) {
      r -= std::exp(c.logit * inv_t - top);
      if (r < 0) {
        out.id = c.id;
        break;
      }
    }
  }

  out.logprob = static_cast<float>(logits[static_cast<size_t>(out.id)] - log_z);
  if (p_.n_top_logprobs > 0) {
    const auto k = std::min<size_t>(static_cast<size_t>(p_.n_top_logprobs), static_cast<size_t>(n));
    cand_.resize(static_cast<size_t>(n));
    for (int32_t id = 0; id < n; ++id) cand_[static_cast<size_t>(id)] = {id, logits[static_cast<size_t>(id)]};
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k), cand_.end(),
                      by_logit_desc<Candidate, Candidate>);
    out.top.reserve(k);
    for (size_t i = 0; i < k; ++i) out.top.push_back({cand_[i].id, static_cast<float>(cand_[i].logit - log_z)});
  }
  for (auto& c : constraints_) c->accept(out.id);
  for (auto& p : shapers_) p->accept(out.id);
  return out;
}

}  // namespace moe::sampling
