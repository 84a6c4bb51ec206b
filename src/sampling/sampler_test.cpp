// sampler_test.cpp: each stage of the sampling chain: greedy, seeded determinism, the sampled
// distribution against softmax(logits / T) (a binomial bound per token), what top-k, top-p and min-p
// keep, the three penalties with llama.cpp's semantics, and the reported logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "sampling/sampler.h"
#include "util/error.h"

namespace moe::sampling {
namespace {

std::vector<float> logits5() { return {1.0f, 3.0f, 2.0f, -1.0f, 0.5f}; }

std::vector<double> softmax(const std::vector<float>& l, double t) {
  double mx = -1e300, z = 0;
  for (float v : l) mx = std::max(mx, v / t);
  std::vector<double> p;
  for (float v : l) z += std::exp(v / t - mx);
  for (float v : l) p.push_back(std::exp(v / t - mx) / z);
  return p;
}

std::map<int32_t, int> histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int32_t, int> h;
  for (int i = 0; i < n; ++i) ++h[s.sample(logits, {}).id];
  return h;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToTheLowerId) {
  Params p;
  p.temperature = 0;
  Sampler s(p);
  EXPECT_EQ(s.sample(logits5(), {}).id, 1);
  std::vector<float> tie{0.0f, 2.0f, 2.0f};
  EXPECT_EQ(s.sample(tie, {}).id, 1);
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  Params p;
  p.seed = 42;
  std::vector<float> flat(50, 0.0f);
  Sampler a(p), b(p);
  std::vector<int32_t> ra, rb;
  for (int i = 0; i < 40; ++i) {
    ra.push_back(a.sample(flat, {}).id);
    rb.push_back(b.sample(flat, {}).id);
  }
  EXPECT_EQ(ra, rb);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> rc;
  for (int i = 0; i < 40; ++i) rc.push_back(c.sample(flat, {}).id);
  EXPECT_NE(ra, rc);
}

// Counts follow softmax(logits / T): each count within 5 binomial standard deviations (a false
// failure has probability below 1e-5 per token).
TEST(Sampler, DrawsFollowTheTemperedSoftmax) {
  for (float t : {1.0f, 0.5f, 2.0f}) {
    Params p;
    p.temperature = t;
    p.seed = 7;
    Sampler s(p);
    const int n = 20000;
    auto h = histogram(s, logits5(), n);
    auto q = softmax(logits5(), t);
    for (int id = 0; id < 5; ++id) {
      const double mean = n * q[id], sd = std::sqrt(n * q[id] * (1 - q[id]));
      EXPECT_NEAR(h[id], mean, 5 * sd + 1) << "T " << t << " id " << id;
    }
  }
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  Params p;
  p.top_k = 2;
  p.seed = 1;
  Sampler s(p);
  auto h = histogram(s, logits5(), 3000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(2));
  // Renormalised between the two: p(1) = e^3 / (e^3 + e^2).
  const double q = 1 / (1 + std::exp(-1.0));
  EXPECT_NEAR(h[1], 3000 * q, 5 * std::sqrt(3000 * q * (1 - q)));
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  auto q = softmax(logits5(), 1.0);  // sorted: id 1 (0.61), 2 (0.22), 0 (0.08), 4 (0.05), 3 (0.01)
  Params p;
  p.seed = 2;
  p.top_p = static_cast<float>(q[1] + q[2] - 1e-3);  // ids 1 and 2 reach it
  Sampler s(p);
  auto h = histogram(s, logits5(), 2000);
  EXPECT_EQ(h.size(), 2u);
  p.top_p = static_cast<float>(q[1] + q[2] + 1e-3);  // needs id 0 as well
  Sampler s2(p);
  EXPECT_EQ(histogram(s2, logits5(), 4000).size(), 3u);
  p.top_p = 0.01f;  // always at least one
  Sampler s3(p);
  auto h3 = histogram(s3, logits5(), 100);
  EXPECT_EQ(h3.size(), 1u);
  EXPECT_EQ(h3.begin()->first, 1);
}

TEST(Sampler, MinPDropsTokensFarBelowTheTop) {
  Params p;
  p.seed = 3;
  p.min_p = 0.3f;  // keeps p >= 0.3 p_max: logit >= 3 + ln 0.3 = 1.80 -> ids 1 and 2
  Sampler s(p);
  auto h = histogram(s, logits5(), 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(2));
}

TEST(Sampler, PenaltiesFollowLlamaCpp) {
  Params p;
  p.temperature = 0;
  p.repeat_penalty = 2.0f;
  // id 1 (logit 3) seen: 3 / 2 = 1.5 < 2 -> id 2 wins.
  Sampler s(p);
  std::vector<int32_t> hist{1};
  EXPECT_EQ(s.sample(logits5(), hist).id, 2);
  // A negative logit is multiplied (pushed further down), never raised.
  std::vector<float> neg{-1.0f, -1.5f};
  std::vector<int32_t> h0{0};
  EXPECT_EQ(s.sample(neg, h0).id, 1);  // -1 * 2 = -2 < -1.5
  // Only the last repeat_last_n tokens count.
  p.repeat_last_n = 1;
  Sampler s2(p);
  std::vector<int32_t> old{1, 4};
  EXPECT_EQ(s2.sample(logits5(), old).id, 1);
  // Frequency: subtracted per occurrence; presence: once.
  Params f;
  f.temperature = 0;
  f.frequency_penalty = 0.6f;
  Sampler sf(f);
  std::vector<int32_t> once{1}, twice{1, 1};
  EXPECT_EQ(sf.sample(logits5(), once).id, 1);   // 3 - 0.6 = 2.4 > 2
  EXPECT_EQ(sf.sample(logits5(), twice).id, 2);  // 3 - 1.2 = 1.8 < 2
  Params pr;
  pr.temperature = 0;
  pr.presence_penalty = 0.6f;
  Sampler sp(pr);
  EXPECT_EQ(sp.sample(logits5(), twice).id, 1);  // 3 - 0.6, however often
}

TEST(Sampler, LogprobsAreTheModelsLogSoftmax) {
  Params p;
  p.temperature = 0;
  p.n_top_logprobs = 3;
  p.repeat_penalty = 5.0f;  // penalties change the choice, not the reported distribution
  Sampler s(p);
  std::vector<int32_t> hist{1};
  Sampled r = s.sample(logits5(), hist);
  auto q = softmax(logits5(), 1.0);
  EXPECT_EQ(r.id, 2);
  EXPECT_NEAR(r.logprob, std::log(q[2]), 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].id, 1);
  EXPECT_EQ(r.top[1].id, 2);
  EXPECT_EQ(r.top[2].id, 0);
  for (const auto& t : r.top) EXPECT_NEAR(t.logprob, std::log(q[t.id]), 1e-6);
}

TEST(Sampler, RejectsBadParameters) {
  auto bad = [](auto edit) {
    Params p;
    edit(p);
    try {
      Sampler::validate(p);
    } catch (const Error&) {
      return true;
    }
    return false;
  };
  EXPECT_TRUE(bad([](Params& p) { p.top_p = 0; }));
  EXPECT_TRUE(bad([](Params& p) { p.min_p = 2; }));
  EXPECT_TRUE(bad([](Params& p) { p.repeat_penalty = 0; }));
  EXPECT_TRUE(bad([](Params& p) { p.temperature = NAN; }));
  EXPECT_TRUE(bad([](Params& p) { p.repeat_last_n = -2; }));
  EXPECT_TRUE(bad([](Params& p) { p.n_top_logprobs = -1; }));
  EXPECT_FALSE(bad([](Params&) {}));
  Params p;
  Sampler s(p);
  EXPECT_THROW(s.sample(std::vector<float>{}, {}), Error);
}

}  // namespace
}  // namespace moe::sampling
