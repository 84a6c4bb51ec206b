// ops_moe_test.cpp: router_top_k, group_by_expert and moe_combine on the Vulkan device against the CPU
// backend's routing (src/model/cpu_backend.cpp ffn_block, restated below as the reference) on fresh
// random inputs: exact ids with deliberate ties, derived weight tolerances, an expert no token chooses,
// more pairs than one 256-wide chunk, and the three ops chained as the backend runs them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "util/error.h"
#include "vulkan/ops.h"
#include "vulkan/vk_testing.h"
#include "vulkan/vkops_test_util.h"

namespace moe::vk {
namespace {

using testing::device_from;
using testing::device_zeros;
using testing::gamma;
using testing::kU;
using testing::random_floats;
using testing::read_back;

// The CPU backend's router for one token (kernels::route_top_k), on a copy of the logits.
void cpu_route(const float* logits, int64_t n_exp, int64_t k, int32_t* ids, float* ws) {
  std::vector<float> p(logits, logits + n_exp);
  kernels::route_top_k(p.data(), n_exp, k, ids, ws);
}

// Logits whose ranks are 0.5 apart (so f32 and double softmax order them alike), with exact ties
// planted: every third token repeats one expert's logit on another, every sixth at the top.
std::vector<float> router_logits(std::mt19937& rng, int64_t n_tok, int64_t n_exp) {
  std::vector<float> l(n_tok * n_exp);
  std::uniform_real_distribution<float> jitter(-0.05f, 0.05f);
  std::vector<int> rank(n_exp);
  for (int64_t t = 0; t < n_tok; ++t) {
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);
    float* row = &l[t * n_exp];
    for (int64_t e = 0; e < n_exp; ++e) row[e] = 0.5f * static_cast<float>(rank[e]) - 1.0f + jitter(rng);
    if (t % 3 == 0) {
      std::uniform_int_distribution<int64_t> pick(0, n_exp - 1);
      int64_t a = pick(rng), b = pick(rng);
      if (a == b) b = (a + 1) % n_exp;
      if (t % 6 == 0) a = std::max_element(row, row + n_exp) - row;  // tie at the top
      row[b] = row[a];
    }
  }
  return l;
}

TEST(VkRouter, MatchesCpuIdsExactlyWithTiesAndWeightsWithinBound) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(21);
  struct Shape {
    int64_t n_tok, n_exp, k;
  };
  for (Shape sh : {Shape{37, 8, 2}, Shape{70, 5, 3}, Shape{9, 8, 8}, Shape{1, 1, 1}}) {
    std::vector<float> logits = router_logits(rng, sh.n_tok, sh.n_exp);
    std::vector<int32_t> ref_ids(sh.n_tok * sh.k);
    std::vector<float> ref_w(sh.n_tok * sh.k);
    for (int64_t t = 0; t < sh.n_tok; ++t)
      cpu_route(&logits[t * sh.n_exp], sh.n_exp, sh.k, &ref_ids[t * sh.k], &ref_w[t * sh.k]);
    Buffer bl = device_from(ctx, logits), bi = device_zeros<int32_t>(ctx, ref_ids.size()),
           bw = device_zeros<float>(ctx, ref_w.size());
    {
      Stream s(ctx);
      router_top_k(s, bl, sh.n_tok, sh.n_exp, sh.k, bi, bw);
      s.run();
    }
    std::vector<int32_t> ids = read_back<int32_t>(ctx, bi, ref_ids.size());
    std::vector<float> w = read_back<float>(ctx, bw, ref_w.size());
    EXPECT_EQ(ids, ref_ids) << sh.n_tok << " tokens, " << sh.n_exp << " experts, k " << sh.k;
    // Weights: each probability exp(l - max) / sum is within (3 + 2R) ulp from exp (R the logit range,
    // an ulp 2u relative), gamma(n_exp) from the f32 sum and 5u from the division; the CPU's double
    // softmax rounded once adds u. A weight p_j / sum of k such p: twice that, gamma(k), 6u.
    const double range = 0.5 * static_cast<double>(sh.n_exp) + 0.1;
    const double eps_p = (3 + 2 * range) * 2 * kU + gamma(static_cast<double>(sh.n_exp)) + 6 * kU;
    for (size_t i = 0; i < w.size(); ++i)
      EXPECT_NEAR(w[i], ref_w[i], ref_w[i] * (2 * eps_p + gamma(static_cast<double>(sh.k)) + 6 * kU)) << i;
  }
}

// The CPU backend's grouping: a counting sort of the (token, choice) pairs by expert.
struct Grouping {
  std::vector<uint32_t> offsets;
  std::vector<int32_t> slot_tokens, token_slots;
};
Grouping cpu_group(const std::vector<int32_t>& ids, int64_t n_tok, int64_t k, int64_t n_exp) {
  Grouping g;
  g.offsets.assign(n_exp + 1, 0);
  for (int32_t e : ids) ++g.offsets[e + 1];
  for (int64_t e = 0; e < n_exp; ++e) g.offsets[e + 1] += g.offsets[e];
  std::vector<uint32_t> cursor(g.offsets.begin(), g.offsets.end() - 1);
  g.slot_tokens.assign(n_tok * k, -1);
  g.token_slots.assign(n_tok * k, -1);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const uint32_t slot = cursor[ids[t * k + j]]++;
      g.slot_tokens[slot] = static_cast<int32_t>(t);
      g.token_slots[t * k + j] = static_cast<int32_t>(slot);
    }
  return g;
}

// k distinct experts per token, never `skipped`, in random order (as the router's weight order is).
std::vector<int32_t> random_choices(std::mt19937& rng, int64_t n_tok, int64_t k, int64_t n_exp, int32_t skipped) {
  std::vector<int32_t> pool;
  for (int32_t e = 0; e < n_exp; ++e)
    if (e != skipped) pool.push_back(e);
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < n_tok; ++t) {
    std::shuffle(pool.begin(), pool.end(), rng);
    ids.insert(ids.end(), pool.begin(), pool.begin() + k);
  }
  return ids;
}

TEST(VkGroupByExpert, MatchesCpuCountingSortWithAnIdleExpert) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(22);
  struct Shape {
    int64_t n_tok, k, n_exp;
  };
  for (Shape sh : {Shape{300, 2, 8}, Shape{1, 2, 8}, Shape{129, 3, 5}, Shape{0, 2, 8}}) {
    std::vector<int32_t> ids = random_choices(rng, sh.n_tok, sh.k, sh.n_exp, /*skipped=*/sh.n_exp > 4 ? 4 : -1);
    Grouping ref = cpu_group(ids, sh.n_tok, sh.k, sh.n_exp);
    ASSERT_EQ(ref.offsets[4], ref.offsets[5]);  // expert 4 gets no tokens
    const size_t n = ids.size();
    // Outputs start as garbage (0xff bytes), so anything the op fails to write shows.
    Buffer bi = device_from(ctx, ids), bo = device_from(ctx, std::vector<uint32_t>(sh.n_exp + 1, ~0u)),
           bst = device_from(ctx, std::vector<int32_t>(n, -7)), bts = device_from(ctx, std::vector<int32_t>(n, -7));
    {
      Stream s(ctx);
      group_by_expert(s, bi, sh.n_tok, sh.k, sh.n_exp, bo, bst, bts);
      s.run();
    }
    EXPECT_EQ(read_back<uint32_t>(ctx, bo, sh.n_exp + 1), ref.offsets) << sh.n_tok << " tokens";
    EXPECT_EQ(read_back<int32_t>(ctx, bst, n), ref.slot_tokens) << sh.n_tok << " tokens";
    EXPECT_EQ(read_back<int32_t>(ctx, bts, n), ref.token_slots) << sh.n_tok << " tokens";
  }
}

// The CPU backend's combine: a zeroed sum gets each chosen expert's weighted output in expert id
// order, then the residual gets the sum.
void cpu_combine(const std::vector<float>& y, const std::vector<int32_t>& ids, const std::vector<float>& w,
                 const std::vector<int32_t>& token_slots, int64_t n_tok, int64_t k, int64_t n, std::vector<float>& x) {
  for (int64_t t = 0; t < n_tok; ++t) {
    std::vector<int64_t> order(k);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[t * k + a] < ids[t * k + b]; });
    for (int64_t c = 0; c < n; ++c) {
      float acc = 0;
      for (int64_t j : order) acc += w[t * k + j] * y[token_slots[t * k + j] * n + c];
      x[t * n + c] += acc;
    }
  }
}

// moe_combine's bound: k products and k sums in f32, gamma(2k) of sum |w y|, and the residual add, u of
// the result; both the device and the CPU round so (either may fuse a multiply-add), hence twice.
void expect_combine_close(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<float>& y,
                          const std::vector<int32_t>& token_slots, const std::vector<float>& w, int64_t n_tok,
                          int64_t k, int64_t n) {
  int bad = 0;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t c = 0; c < n; ++c) {
      double mag = 0;
      for (int64_t j = 0; j < k; ++j) mag += std::fabs(double(w[t * k + j]) * y[token_slots[t * k + j] * n + c]);
      const double tol = 2 * (gamma(2.0 * static_cast<double>(k)) * mag + kU * std::fabs(ref[t * n + c])) + 1e-30;
      if (std::fabs(got[t * n + c] - ref[t * n + c]) > tol) ++bad;
    }
  EXPECT_EQ(bad, 0);
}

TEST(VkMoeCombine, SumsInExpertOrderIntoTheResidual) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(23);
  const int64_t n_tok = 131, k = 3, n_exp = 8, n = 37;
  std::vector<int32_t> ids = random_choices(rng, n_tok, k, n_exp, 4);
  Grouping g = cpu_group(ids, n_tok, k, n_exp);
  std::vector<float> y = random_floats(rng, n_tok * k * n, -4, 4), w = random_floats(rng, n_tok * k, 0, 1);
  std::vector<float> x = random_floats(rng, n_tok * n, -4, 4), ref = x;
  cpu_combine(y, ids, w, g.token_slots, n_tok, k, n, ref);
  Buffer by = device_from(ctx, y), bi = device_from(ctx, ids), bw = device_from(ctx, w),
         bts = device_from(ctx, g.token_slots), bx = device_from(ctx, x);
  {
    Stream s(ctx);
    moe_combine(s, by, bi, bw, bts, n_tok, k, n, bx);
    s.run();
  }
  expect_combine_close(read_back<float>(ctx, bx, x.size()), ref, y, g.token_slots, w, n_tok, k, n);
}

TEST(VkMoe, RouterGroupCombineChainedMatchCpu) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(24);
  const int64_t n_tok = 57, n_exp = 8, k = 2, n = 19;
  std::vector<float> logits = router_logits(rng, n_tok, n_exp);
  std::vector<int32_t> ids(n_tok * k);
  std::vector<float> w(n_tok * k);
  for (int64_t t = 0; t < n_tok; ++t) cpu_route(&logits[t * n_exp], n_exp, k, &ids[t * k], &w[t * k]);
  Grouping g = cpu_group(ids, n_tok, k, n_exp);
  std::vector<float> y = random_floats(rng, n_tok * k * n, -4, 4);  // the experts' outputs, by slot
  std::vector<float> x = random_floats(rng, n_tok * n, -4, 4), ref = x;
  cpu_combine(y, ids, w, g.token_slots, n_tok, k, n, ref);

  Buffer bl = device_from(ctx, logits), bi = device_zeros<int32_t>(ctx, ids.size()),
         bw = device_zeros<float>(ctx, w.size()), bo = device_zeros<uint32_t>(ctx, n_exp + 1),
         bst = device_zeros<int32_t>(ctx, ids.size()), bts = device_zeros<int32_t>(ctx, ids.size()),
         by = device_from(ctx, y), bx = device_from(ctx, x);
  {
    Stream s(ctx);
    router_top_k(s, bl, n_tok, n_exp, k, bi, bw);
    s.barrier();
    group_by_expert(s, bi, n_tok, k, n_exp, bo, bst, bts);
    s.barrier();
    moe_combine(s, by, bi, bw, bts, n_tok, k, n, bx);
    s.run();
  }
  EXPECT_EQ(read_back<int32_t>(ctx, bi, ids.size()), ids);
  EXPECT_EQ(read_back<uint32_t>(ctx, bo, n_exp + 1), g.offsets);
  EXPECT_EQ(read_back<int32_t>(ctx, bst, ids.size()), g.slot_tokens);
  EXPECT_EQ(read_back<int32_t>(ctx, bts, ids.size()), g.token_slots);
  // The weights differ from the CPU's within the router test's bound (about 60u here), which the
  // combine multiplies into every term: widen the comparison by that much of sum |w y|.
  std::vector<float> got = read_back<float>(ctx, bx, x.size());
  int bad = 0;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t c = 0; c < n; ++c) {
      double mag = 0;
      for (int64_t j = 0; j < k; ++j) mag += std::fabs(double(w[t * k + j]) * y[g.token_slots[t * k + j] * n + c]);
      const double tol = (2 * gamma(2.0 * k) + 100 * kU) * mag + 2 * kU * std::fabs(ref[t * n + c]) + 1e-30;
      if (std::fabs(got[t * n + c] - ref[t * n + c]) > tol) ++bad;
    }
  EXPECT_EQ(bad, 0);
}

TEST(VkMoe, BadShapesAreClearErrors) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  Buffer b = device_zeros<float>(ctx, 4096);
  Stream s(ctx);
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_NE(message([&] {
              router_top_k(s, b, 4, 8, 9, b, b);
            }).find("router_top_k: k = 9 experts per token must be in [1, min(n_expert = 8"),
            std::string::npos);
  EXPECT_NE(message([&] {
              group_by_expert(s, b, 4, 2, 5000, b, b, b);
            }).find("group_by_expert: n_expert 5000 must be in [1, 2048]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              moe_combine(s, b, b, b, b, 4000, 2, 8, b);
            }).find("moe_combine: ids holds 16384 bytes; 32000 are needed"),
            std::string::npos);
  EXPECT_NE(message([&] { rope(s, b, b, 2, 2, 8, 7, 1e4f, false); }).find("rope: n_rot 7 must be even"),
            std::string::npos);
  EXPECT_EQ(s.dispatches_recorded(), 0);
}

}  // namespace
}  // namespace moe::vk
