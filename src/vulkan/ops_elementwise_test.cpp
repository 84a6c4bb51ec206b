// ops_elementwise_test.cpp: rms_norm, rope, swiglu, add and gather_rows on the Vulkan device against
// the CPU kernels (src/kernels/ops.h) on fresh random inputs, with tolerances derived from the f32
// operations each shader performs (each test says how), odd sizes, and batch invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "util/error.h"
#include "vulkan/ops.h"
#include "vulkan/vk_testing.h"
#include "vulkan/vkops_test_util.h"

namespace moe::vk {
namespace {

using testing::bits;
using testing::device_from;
using testing::device_zeros;
using testing::gamma;
using testing::kU;
using testing::random_floats;
using testing::read_back;

TEST(VkRmsNorm, MatchesCpuOnOddSizesInPlaceAndBatchInvariant) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(11);
  for (int64_t n : {1, 67, 1000, 4099}) {
    const int64_t rows = 5;
    std::vector<float> x = random_floats(rng, rows * n, -3, 3), w = random_floats(rng, n, -2, 2);
    const float eps = 1e-5f;
    std::vector<float> ref(x.size());
    for (int64_t r = 0; r < rows; ++r) kernels::rmsnorm(&x[r * n], w.data(), eps, n, &ref[r * n]);

    Buffer bx = device_from(ctx, x), bw = device_from(ctx, w), by = device_zeros<float>(ctx, x.size());
    Buffer bin = device_from(ctx, x);  // normalised in place
    // Row 3 alone, as a batch of one, from a buffer of its own.
    Buffer b3 = device_from(ctx, std::vector<float>(x.begin() + 3 * n, x.begin() + 4 * n));
    Buffer b1 = device_zeros<float>(ctx, n);
    {
      Stream s(ctx);
      rms_norm(s, bx, bw, by, rows, n, eps);
      rms_norm(s, bin, bw, bin, rows, n, eps);
      rms_norm(s, b3, bw, b1, 1, n, eps);
      s.run();
    }
    std::vector<float> y = read_back<float>(ctx, by, x.size()), yin = read_back<float>(ctx, bin, x.size());
    std::vector<float> y1 = read_back<float>(ctx, b1, n);
    // Tolerance: each invocation adds ceil(n/256) squares in f32 and a tree of 8 levels adds the 256
    // partial sums, so the sum of squares is off by at most gamma(m), m = ceil(n/256) + 8, relatively;
    // the square root halves that. Then /n (2.5 ulp), +eps, inversesqrt (2 ulp) and two products:
    // about 10u more, and the CPU's own rounding of its double result: u. Bound: |y| (gamma(m)/2 + 12u).
    const double m = static_cast<double>((n + 255) / 256 + 8);
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double tol = std::fabs(ref[i]) * (gamma(m) / 2 + 12 * kU) + 1e-30;
      if (std::fabs(y[i] - ref[i]) > tol) ++bad;
      EXPECT_EQ(bits(y[i]), bits(yin[i])) << "in place differs at " << i;
    }
    EXPECT_EQ(bad, 0) << "n = " << n;
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(bits(y1[i]), bits(y[3 * n + i])) << "row 3 alone differs from row 3 in a batch, n " << n;
  }
}

TEST(VkRmsNorm, RefusesShortBuffers) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  Buffer x = device_zeros<float>(ctx, 64), w = device_zeros<float>(ctx, 16), y = device_zeros<float>(ctx, 16);
  Stream s(ctx);
  try {
    rms_norm(s, x, w, y, 4, 16, 1e-5f);
    FAIL() << "a 64-byte y for 4 rows of 16 floats was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rms_norm: y holds 64 bytes; 256 are needed"), std::string::npos) << e.what();
  }
}

// The bound of one rotated value of the device's RoPE against kernels::rope_table + rope_apply, for
// pair i of n_rot at position pos, with inputs x0, x1 and result y (see rope.comp):
//  - e = -2i * fl(log2(base)/n_rot) is off by 2u relatively; exp2 is within 3 + 2|e| ulp (the Vulkan
//    bound; an ulp is at most 2u relatively) and its argument's error moves it by |de| ln 2; the
//    product pos * f adds u. So theta is off by |theta| (2u|e| ln2 + (3 + 2|e|) 2u + u).
//  - The two-part 2pi reduction adds u (2pi + |k| 0.006) with |k| <= |theta| / 2pi + 1.
//  - cos and sin of the reduced angle: 16u absolute (hardware approximations reach ~6u; the CPU's
//    float table adds u).
//  - x0 c - x1 s: three f32 roundings, 2u (|x0| + |x1|) + u |y|.
double rope_tolerance(int64_t pos, int64_t i, int64_t n_rot, double base, double x0, double x1, double y) {
  const double e = 2.0 * static_cast<double>(i) * std::log2(base) / static_cast<double>(n_rot);
  const double theta = static_cast<double>(pos) * std::exp2(-e);
  const double d_theta = theta * (2 * kU * e * std::log(2.0) + (3 + 2 * e) * 2 * kU + kU);
  const double k = theta / (2 * M_PI) + 1;
  const double d_angle = d_theta + kU * (2 * M_PI + k * 0.006) + 16 * kU;
  return (std::fabs(x0) + std::fabs(x1)) * (d_angle + 2 * kU) + kU * std::fabs(y) + 1e-30;
}

TEST(VkRope, MatchesCpuAdjacentAndRotateHalf) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(12);
  const std::vector<int32_t> positions = {0, 1, 17, 255, 1000, 20000, 3};
  const int64_t n_tok = static_cast<int64_t>(positions.size()), n_heads = 3, head_dim = 10, n_rot = 8;
  for (double base : {10000.0, 1e6}) {
    for (bool rotate_half : {false, true}) {
      std::vector<float> x = random_floats(rng, n_tok * n_heads * head_dim, -2, 2);
      std::vector<float> ref = x;
      std::vector<float> cs(n_rot);
      for (int64_t t = 0; t < n_tok; ++t) {
        kernels::rope_table(positions[t], n_rot, base, cs.data());
        float* row = &ref[t * n_heads * head_dim];
        if (rotate_half)
          kernels::rope_apply_rotate_half(row, n_heads, head_dim, n_rot, cs.data());
        else
          kernels::rope_apply(row, n_heads, head_dim, n_rot, cs.data());
      }
      Buffer bx = device_from(ctx, x), bp = device_from(ctx, positions);
      {
        Stream s(ctx);
        rope(s, bx, bp, n_tok, n_heads, head_dim, n_rot, static_cast<float>(base), rotate_half);
        s.run();
      }
      std::vector<float> y = read_back<float>(ctx, bx, x.size());
      int bad = 0;
      for (int64_t t = 0; t < n_tok; ++t)
        for (int64_t h = 0; h < n_heads; ++h) {
          const int64_t o = (t * n_heads + h) * head_dim;
          for (int64_t i = 0; i < n_rot / 2; ++i) {
            const int64_t a = o + (rotate_half ? i : 2 * i), b = o + (rotate_half ? i + n_rot / 2 : 2 * i + 1);
            for (int64_t idx : {a, b}) {
              const double tol = rope_tolerance(positions[t], i, n_rot, base, x[a], x[b], ref[idx]);
              if (std::fabs(y[idx] - ref[idx]) > tol) {
                ++bad;
                ADD_FAILURE() << "pos " << positions[t] << " pair " << i << ": " << y[idx] << " vs " << ref[idx];
              }
            }
          }
          for (int64_t d = n_rot; d < head_dim; ++d)  // past n_rot: untouched
            EXPECT_EQ(bits(y[o + d]), bits(x[o + d]));
        }
      EXPECT_EQ(bad, 0) << "base " << base << " rotate_half " << rotate_half;
    }
  }
}

TEST(VkSwiglu, MatchesCpu) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(13);
  const int64_t n = 1001;
  std::vector<float> g = random_floats(rng, n, -12, 12), u = random_floats(rng, n, -3, 3);
  std::vector<float> ref = g;
  kernels::silu_mul(ref.data(), u.data(), n);
  Buffer bg = device_from(ctx, g), bu = device_from(ctx, u);
  {
    Stream s(ctx);
    swiglu(s, bg, bu, n);
    s.run();
  }
  std::vector<float> y = read_back<float>(ctx, bg, n);
  // exp(-g) within 3 + 2|g| ulp (2u each, relative); 1 + e, the division (2.5 ulp) and the product
  // add about 8u relative to the result; the CPU's float path (std::exp ~1 ulp, three roundings) 5u.
  for (int64_t i = 0; i < n; ++i) {
    const double tol = std::fabs(ref[i]) * ((3 + 2 * std::fabs(g[i])) * 2 * kU + 13 * kU) + 1e-30;
    EXPECT_NEAR(y[i], ref[i], tol) << "g " << g[i] << " up " << u[i];
  }
}

TEST(VkAdd, IsExact) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(14);
  const int64_t n = 777;  // one correctly rounded f32 addition each: bit-exact with the CPU
  std::vector<float> y = random_floats(rng, n, -5, 5), x = random_floats(rng, n, -5, 5);
  std::vector<float> ref = y;
  kernels::add(ref.data(), x.data(), n);
  Buffer by = device_from(ctx, y), bx = device_from(ctx, x);
  {
    Stream s(ctx);
    add(s, by, bx, n);
    s.run();
  }
  std::vector<float> got = read_back<float>(ctx, by, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bits(got[i]), bits(ref[i])) << i;
}

TEST(VkGatherRows, CopiesRowsAndPoisonsBadIndices) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(15);
  const int64_t rows = 7, cols = 33;
  std::vector<float> x = random_floats(rng, rows * cols, -1, 1);
  const std::vector<int32_t> idx = {6, 0, 3, 3, 9, -1};
  Buffer bx = device_from(ctx, x), bi = device_from(ctx, idx), bo = device_zeros<float>(ctx, idx.size() * cols);
  {
    Stream s(ctx);
    gather_rows(s, bx, bi, bo, static_cast<int64_t>(idx.size()), cols);
    s.run();
  }
  std::vector<float> out = read_back<float>(ctx, bo, idx.size() * cols);
  for (size_t r = 0; r < idx.size(); ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float got = out[r * cols + c];
      if (idx[r] >= 0 && idx[r] < rows)
        ASSERT_EQ(bits(got), bits(x[idx[r] * cols + c])) << "row " << r;
      else
        ASSERT_TRUE(std::isnan(got)) << "row " << r << " reads index " << idx[r] << " outside x";
    }
}

}  // namespace
}  // namespace moe::vk
