// ops_test.cpp: RMSNorm, RoPE, softmax, SwiGLU and paged attention against float64 definitions on
// random inputs. Tolerances: ops that reduce in double and round once are within a few 2^-24 relative
// of the float64 value; the Fast attention (float accumulation) within the bound derived at the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ops.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::kernels {
namespace {

const double kEps = std::ldexp(1.0, -24);

std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(Ops, RmsNorm) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 64, 4096}) {
    auto x = randn(static_cast<size_t>(n), rng, 3.0f), w = randn(static_cast<size_t>(n), rng);
    std::vector<float> y(static_cast<size_t>(n));
    rmsnorm(x.data(), w.data(), 1e-5f, n, y.data());
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double k = 1.0 / std::sqrt(ss / n + static_cast<double>(1e-5f));
    for (int64_t i = 0; i < n; ++i) {
      const double ref = x[i] * k * w[i];
      EXPECT_LE(std::fabs(y[i] - ref), 2 * kEps * std::fabs(ref) + 1e-30) << "n " << n << " i " << i;
    }
    rmsnorm(x.data(), w.data(), 1e-5f, n, x.data());  // in place
    EXPECT_EQ(x, y);
  }
}

TEST(Ops, RopeRotatesAdjacentPairs) {
  std::mt19937 rng(2);
  const int64_t heads = 3, hd = 16, n_rot = 12;  // the last 4 values of each head are not rotated
  const double base = 10000.0;
  for (int64_t pos : {0, 1, 17, 4095}) {
    auto x = randn(static_cast<size_t>(heads * hd), rng);
    auto y = x;
    std::vector<float> cs(static_cast<size_t>(n_rot));
    rope_table(pos, n_rot, base, cs.data());
    rope_apply(y.data(), heads, hd, n_rot, cs.data());
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = x[h * hd + 2 * i], b = x[h * hd + 2 * i + 1];
        double ra = a, rb = b;
        if (2 * i < n_rot) {
          const double th = pos * std::pow(base, -2.0 * i / n_rot);
          ra = a * std::cos(th) - b * std::sin(th);
          rb = a * std::sin(th) + b * std::cos(th);
        }
        // cos/sin are rounded to float (2^-24 relative each), the result once more.
        const double tol = 3 * kEps * (std::fabs(a) + std::fabs(b)) + 1e-30;
        EXPECT_LE(std::fabs(y[h * hd + 2 * i] - ra), tol) << pos << " " << h << " " << i;
        EXPECT_LE(std::fabs(y[h * hd + 2 * i + 1] - rb), tol) << pos << " " << h << " " << i;
      }
  }
}

TEST(Ops, RopeRotateHalfOnHfRowsEqualsRopeOnGgufRows) {
  // llama.cpp's converter moves HF row i (first half) to 2i and row i + hd/2 to 2i + 1 within each head;
  // the rotate-half form on HF order must then be exactly (bit for bit) the adjacent-pair form on GGUF
  // order: the same products in the same order.
  std::mt19937 rng(12);
  const int64_t heads = 4, hd = 32;
  for (int64_t pos : {0, 3, 999}) {
    auto hf = randn(static_cast<size_t>(heads * hd), rng);
    std::vector<float> gg(hf.size());
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        gg[h * hd + 2 * i] = hf[h * hd + i];
        gg[h * hd + 2 * i + 1] = hf[h * hd + i + hd / 2];
      }
    std::vector<float> cs(static_cast<size_t>(hd));
    rope_table(pos, hd, 1e6, cs.data());
    rope_apply_rotate_half(hf.data(), heads, hd, hd, cs.data());
    rope_apply(gg.data(), heads, hd, hd, cs.data());
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        ASSERT_EQ(gg[h * hd + 2 * i], hf[h * hd + i]) << pos << " " << h << " " << i;
        ASSERT_EQ(gg[h * hd + 2 * i + 1], hf[h * hd + i + hd / 2]) << pos << " " << h << " " << i;
      }
  }
}

TEST(Ops, RopeScoresDependOnlyOnRelativePosition) {
  std::mt19937 rng(3);
  const int64_t hd = 64;
  auto q = randn(hd, rng), k = randn(hd, rng);
  auto score = [&](int64_t pq, int64_t pk) {
    auto a = q, b = k;
    std::vector<float> cs(hd);
    rope_table(pq, hd, 1e6, cs.data());
    rope_apply(a.data(), 1, hd, hd, cs.data());
    rope_table(pk, hd, 1e6, cs.data());
    rope_apply(b.data(), 1, hd, hd, cs.data());
    double d = 0;
    for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(a[i]) * b[i];
    return d;
  };
  double mag = 0;
  for (int64_t i = 0; i < hd; ++i) mag += std::fabs(q[i]) * std::fabs(k[i]) * 2;
  EXPECT_NEAR(score(5, 2), score(103, 100), 12 * kEps * mag);
  EXPECT_NEAR(score(7, 7), score(0, 0), 12 * kEps * mag);
}

TEST(Ops, SoftmaxSiluAdd) {
  std::mt19937 rng(4);
  auto x = randn(100, rng, 5.0f);
  auto p = x;
  softmax(p.data(), 100);
  const double mx = *std::max_element(x.begin(), x.end());
  double z = 0;
  for (float v : x) z += std::exp(v - mx);
  double sum = 0;
  for (int i = 0; i < 100; ++i) {
    const double ref = std::exp(x[i] - mx) / z;
    EXPECT_LE(std::fabs(p[i] - ref), 2 * kEps * ref + 1e-45);
    sum += p[i];
  }
  EXPECT_NEAR(sum, 1.0, 100 * kEps);

  auto g = randn(50, rng, 4.0f), u = randn(50, rng);
  auto h = g;
  silu_mul(h.data(), u.data(), 50);
  for (int i = 0; i < 50; ++i) {
    const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    // float exp (1 ulp), one division, one multiplication, each a 2^-24 relative rounding.
    EXPECT_LE(std::fabs(h[i] - ref), 8 * kEps * std::fabs(ref) + 1e-30);
  }
  std::vector<float> a{1, 2, 3}, b{0.5f, -2, 1};
  add(a.data(), b.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{1.5f, 0, 4}));
}

// route_top_k against an independent reference: a stable sort of the expert ids by descending
// probability (so equal probabilities keep the lower id first), renormalised in double. Logits are drawn
// from a few values so exact ties occur, including at the top and at the k-th place.
TEST(Ops, RouteTopKPicksTheMostProbableLowerIdOnTies) {
  std::mt19937 rng(18);
  int ties_at_cut = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    const int64_t n_exp = 1 + static_cast<int64_t>(rng() % 16);
    const int64_t k = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(n_exp));
    std::vector<float> logits(static_cast<size_t>(n_exp));
    for (float& v : logits) v = static_cast<float>(static_cast<int>(rng() % 5)) * 0.75f - 1.5f;
    std::vector<float> p = logits;
    softmax(p.data(), n_exp);
    std::vector<int32_t> order(static_cast<size_t>(n_exp));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
    if (k < n_exp && p[size_t(order[size_t(k - 1)])] == p[size_t(order[size_t(k)])]) ++ties_at_cut;
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += p[size_t(order[size_t(j)])];

    std::vector<float> work = logits;
    std::vector<int32_t> ids(static_cast<size_t>(k), -7);
    std::vector<float> ws(static_cast<size_t>(k), -1.0f);
    route_top_k(work.data(), n_exp, k, ids.data(), ws.data());
    EXPECT_EQ(work, p) << "the logits become the softmax probabilities";
    for (int64_t j = 0; j < k; ++j) {
      ASSERT_EQ(ids[size_t(j)], order[size_t(j)]) << "n_exp " << n_exp << " k " << k << " place " << j;
      // One float rounding of a double quotient.
      const double ref = p[size_t(ids[size_t(j)])] / sum;
      EXPECT_LE(std::fabs(ws[size_t(j)] - ref), kEps * ref);
    }
  }
  EXPECT_GT(ties_at_cut, 100);  // the draw does exercise ties at the k-th place
}

// ------------------------------------------------------------------------------------------------
// KV rows and paged attention.

TEST(KvRows, RoundTripsEachElementType) {
  std::mt19937 rng(5);
  const int64_t n = 80;  // not a multiple of 32: Q8_0 pads its last block
  auto x = randn(n, rng);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0}) {
    SCOPED_TRACE(type_name(t));
    ASSERT_TRUE(kv_element_supported(t));
    std::vector<uint8_t> row(kv_row_bytes(t, n));
    store_kv_row(t, x.data(), n, row.data());
    std::vector<float> all(n);
    load_kv_values(t, row.data(), 0, n, all.data());
    for (int64_t i = 0; i < n; ++i) {
      float want = x[i];
      if (t == GgmlType::F16) want = fp16_to_fp32(fp32_to_fp16(x[i]));
      if (t == GgmlType::BF16) want = bf16_to_fp32(fp32_to_bf16(x[i]));
      if (t == GgmlType::Q8_0) {
        // The padded tail must decode like quantize-then-dequantize of the zero-padded row.
        std::vector<float> padded(96, 0.0f), deq(96);
        std::copy(x.begin(), x.end(), padded.begin());
        std::vector<uint8_t> blocks(*row_bytes(t, 96));
        quant::quantize_row(t, padded.data(), blocks.data(), 96);
        quant::dequantize_row(t, blocks.data(), deq.data(), 96);
        want = deq[i];
      }
      EXPECT_EQ(all[i], want) << i;
    }
    // Any window decodes like the same slice of the whole row (heads need not align with blocks).
    for (int64_t first : {0, 8, 24, 40, 72}) {
      std::vector<float> part(8);
      load_kv_values(t, row.data(), first, 8, part.data());
      for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(part[i], all[first + i]);
    }
  }
  EXPECT_FALSE(kv_element_supported(GgmlType::Q4_0));
}

struct PagedCache {
  // Blocks of `bt` tokens holding one layer's K rows then V rows; block order shuffled.
  int64_t bt = 4, n_kv = 2, hd = 16;
  GgmlType type;
  size_t rb, block_bytes;
  std::vector<uint8_t> pool;
  std::vector<int32_t> table;
  std::vector<std::vector<float>> k, v;  // what the rows decode to, [pos][n_kv * hd]

  PagedCache(GgmlType t, int64_t n_pos, std::mt19937& rng, int64_t head_dim = 16) : hd(head_dim), type(t) {
    rb = kv_row_bytes(t, n_kv * hd);
    block_bytes = 2 * bt * rb;
    const int64_t n_blocks = (n_pos + bt - 1) / bt + 3;
    pool.assign(n_blocks * block_bytes, 0xEE);
    std::vector<int32_t> ids(static_cast<size_t>(n_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + (n_pos + bt - 1) / bt);
    for (int64_t p = 0; p < n_pos; ++p) {
      auto kk = randn(n_kv * hd, rng), vv = randn(n_kv * hd, rng);
      store_kv_row(t, kk.data(), n_kv * hd, const_cast<uint8_t*>(rows(false).row(p)));
      store_kv_row(t, vv.data(), n_kv * hd, const_cast<uint8_t*>(rows(true).row(p)));
      k.emplace_back(n_kv * hd);
      v.emplace_back(n_kv * hd);
      load_kv_values(t, rows(false).row(p), 0, n_kv * hd, k.back().data());
      load_kv_values(t, rows(true).row(p), 0, n_kv * hd, v.back().data());
    }
  }
  PagedRows rows(bool is_v) const {
    return PagedRows{pool.data(), table.data(), block_bytes, is_v ? bt * rb : 0, rb, bt, type};
  }
};

TEST(Attention, PagedOnlineSoftmaxMatchesFloat64) {
  std::mt19937 rng(6);
  // Head sizes: 16 (whole SIMD registers), 20 and 128 + 8 (SIMD plus a scalar tail), on every cache type.
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0})
    for (int64_t head_dim : {16, 20, 136})
    for (int64_t n_ctx : {1, 3, 16, 17, 45}) {
      SCOPED_TRACE(cat(type_name(t), " n_ctx ", n_ctx, " head_dim ", head_dim));
      PagedCache c(t, n_ctx, rng, head_dim);
      const int64_t hd = c.hd;
      std::vector<uint8_t> scratch(attention_scratch_bytes(hd) + 64);
      void* s = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t{63});
      for (int64_t g = 0; g < c.n_kv; ++g) {
        auto q = randn(hd, rng, 2.0f);
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        // float64 reference over the decoded rows
        std::vector<double> sc(n_ctx);
        double mx = -1e300, qk_max = 0;
        for (int64_t p = 0; p < n_ctx; ++p) {
          double d = 0, a = 0;
          for (int64_t i = 0; i < hd; ++i) {
            d += static_cast<double>(q[i]) * c.k[p][g * hd + i];
            a += std::fabs(static_cast<double>(q[i]) * c.k[p][g * hd + i]);
          }
          sc[p] = d * scale;
          mx = std::max(mx, sc[p]);
          qk_max = std::max(qk_max, a * scale);
        }
        double z = 0, vmax = 0;
        for (auto& x : sc) z += (x = std::exp(x - mx));
        std::vector<double> ref(hd, 0.0);
        for (int64_t p = 0; p < n_ctx; ++p)
          for (int64_t i = 0; i < hd; ++i) {
            ref[i] += sc[p] / z * c.v[p][g * hd + i];
            vmax = std::max(vmax, std::fabs(static_cast<double>(c.v[p][g * hd + i])));
          }
        std::vector<float> out(hd);
        attend_head(q.data(), c.rows(false), c.rows(true), g * hd, hd, n_ctx, scale, out.data(), s, Precision::Exact);
        for (int64_t i = 0; i < hd; ++i) EXPECT_LE(std::fabs(out[i] - ref[i]), 4 * kEps * vmax) << "exact " << i;
        // Fast (float): a score's error is at most gamma_hd * sum|q k| * scale (+ the scale's rounding);
        // exp turns an absolute score error into that relative error of a weight, and the output, a
        // convex combination, moves by at most twice the worst relative weight error times max|v|,
        // plus the float accumulation over n_ctx positions.
        const double score_err = (hd + 2) * kEps * qk_max;
        const double tol = vmax * (2 * score_err + 4 * (n_ctx + 4) * kEps);
        attend_head(q.data(), c.rows(false), c.rows(true), g * hd, hd, n_ctx, scale, out.data(), s, Precision::Fast);
        for (int64_t i = 0; i < hd; ++i) EXPECT_LE(std::fabs(out[i] - ref[i]), tol) << "fast " << i;
      }
    }
}

}  // namespace
}  // namespace moe::kernels
