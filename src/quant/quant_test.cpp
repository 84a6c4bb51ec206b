// quant_test.cpp: properties of the scalar reference that hold for any input, checked on random data
// (fresh seeds from std::random_device, printed on failure):
// - every quantizer rounds each value to the nearest level of the grid its own block decodes to,
// - the grids it picks are as fine as the format allows (RMS error against the uniform-noise model),
// - re-quantizing decoded data is stable,
// - the dot products equal the float64 dot of the decoded rows within float rounding,
// - activation quantization is within half a step per element.
// Decoding itself is pinned bit-exactly to llama.cpp/gguf-py by quant_golden_test.cpp, so reading a
// block's scales here through the decoder's helpers is sound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/ref.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::quant {
namespace {

constexpr double kU = 1.0 / (1 << 24);  // unit roundoff of float

const GgmlType kQuantTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

std::vector<uint8_t> encode(GgmlType type, const std::vector<float>& x, const float* importance = nullptr) {
  std::vector<uint8_t> out(*row_bytes(type, x.size()));
  EXPECT_EQ(quantize_row(type, x.data(), out.data(), static_cast<int64_t>(x.size()), importance), out.size());
  return out;
}
std::vector<float> decode(GgmlType type, const std::vector<uint8_t>& blocks, size_t n) {
  std::vector<float> out(n);
  dequantize_row(type, blocks.data(), out.data(), static_cast<int64_t>(n));
  return out;
}

// ---- random data ----

struct Distribution {
  const char* name;
  std::function<float(std::mt19937&, size_t index)> draw;
};

// Shapes a quantizer meets: bell-shaped weights, flat, heavy-tailed (outliers set the block range),
// off-centre and small (exercises the mins), one-signed, and a block-to-block scale that varies over
// three decades (exercises the quantized sub-block scales of the K-quants).
std::vector<Distribution> distributions() {
  return {
      {"normal", [](std::mt19937& g, size_t) { return std::normal_distribution<float>(0, 1)(g); }},
      {"uniform", [](std::mt19937& g, size_t) { return std::uniform_real_distribution<float>(-1, 1)(g); }},
      {"laplace",
       [](std::mt19937& g, size_t) {
         float e = std::exponential_distribution<float>(1)(g);
         return std::bernoulli_distribution(0.5)(g) ? e : -e;
       }},
      {"offset-small", [](std::mt19937& g, size_t) { return 0.02f * std::normal_distribution<float>(0.4f, 1)(g); }},
      {"positive", [](std::mt19937& g, size_t) { return std::fabs(std::normal_distribution<float>(0, 1)(g)); }},
      {"block-scales",
       [scale = 1.0f](std::mt19937& g, size_t i) mutable {
         if (i % 32 == 0) scale = std::pow(10.0f, std::uniform_real_distribution<float>(-2, 1)(g));
         return scale * std::normal_distribution<float>(0, 1)(g);
       }},
  };
}

std::vector<float> sample(const Distribution& d, std::mt19937& g, size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = d.draw(g, i);
  return x;
}

std::string seed_trace(uint32_t seed) { return "seed " + std::to_string(seed); }

// ---- the grid a block decodes to ----

// Element i decodes to offset + step * L for an integer level L in [lmin, lmax] (signed levels as the
// dot products use them). Read from the blocks, in float64.
struct Grid {
  double step, offset;
  int lmin, lmax;
};

std::vector<Grid> grids(GgmlType type, const void* data, size_t n) {
  std::vector<Grid> g(n);
  auto h = [](uint16_t v) { return static_cast<double>(fp16_to_fp32(v)); };
  for (size_t i = 0; i < n; ++i) {
    switch (type) {
      case GgmlType::Q4_0: g[i] = {h(static_cast<const BlockQ4_0*>(data)[i / 32].d), 0, -8, 7}; break;
      case GgmlType::Q5_0: g[i] = {h(static_cast<const BlockQ5_0*>(data)[i / 32].d), 0, -16, 15}; break;
      case GgmlType::Q8_0: g[i] = {h(static_cast<const BlockQ8_0*>(data)[i / 32].d), 0, -127, 127}; break;
      case GgmlType::Q4_1: {
        const auto& b = static_cast<const BlockQ4_1*>(data)[i / 32];
        g[i] = {h(b.d), h(b.m), 0, 15};
        break;
      }
      case GgmlType::Q5_1: {
        const auto& b = static_cast<const BlockQ5_1*>(data)[i / 32];
        g[i] = {h(b.d), h(b.m), 0, 31};
        break;
      }
      case GgmlType::Q2_K: {
        const auto& b = static_cast<const BlockQ2_K*>(data)[i / 256];
        const int sc = b.scales[(i % 256) / 16];
        g[i] = {h(b.d) * (sc & 15), -h(b.dmin) * (sc >> 4), 0, 3};
        break;
      }
      case GgmlType::Q3_K: {
        const auto& b = static_cast<const BlockQ3_K*>(data)[i / 256];
        int scales[16];
        ref::unpack_q3_K_scales(b.scales, scales);
        g[i] = {h(b.d) * scales[(i % 256) / 16], 0, -4, 3};
        break;
      }
      case GgmlType::Q4_K:
      case GgmlType::Q5_K: {
        const bool q4 = type == GgmlType::Q4_K;
        const uint8_t* packed = q4 ? static_cast<const BlockQ4_K*>(data)[i / 256].scales
                                   : static_cast<const BlockQ5_K*>(data)[i / 256].scales;
        const uint16_t d = q4 ? static_cast<const BlockQ4_K*>(data)[i / 256].d : static_cast<const BlockQ5_K*>(data)[i / 256].d;
        const uint16_t dmin =
            q4 ? static_cast<const BlockQ4_K*>(data)[i / 256].dmin : static_cast<const BlockQ5_K*>(data)[i / 256].dmin;
        int sc, m;
        ref::unpack_k4_scale_min(packed, static_cast<int>((i % 256) / 32), &sc, &m);
        g[i] = {h(d) * sc, -h(dmin) * m, 0, q4 ? 15 : 31};
        break;
      }
      case GgmlType::Q6_K: {
        const auto& b = static_cast<const BlockQ6_K*>(data)[i / 256];
        g[i] = {h(b.d) * b.scales[(i % 256) / 16], 0, -32, 31};
        break;
      }
      default: ADD_FAILURE() << "no grid for " << type_name(type); return g;
    }
  }
  return g;
}

// The step the naive rule of each format would take for the (sub-)block holding each element: the
// largest magnitude over half the levels (symmetric formats) or the range over levels-1 (with a min;
// the K-quants' min is never positive, so their range includes 0).
std::vector<double> nominal_steps(GgmlType type, const std::vector<float>& x) {
  int sub = 32, levels = 0;
  bool symmetric = true, range_includes_zero = false;
  switch (type) {
    case GgmlType::Q4_0: levels = 16; break;
    case GgmlType::Q5_0: levels = 32; break;
    case GgmlType::Q8_0: levels = 254; break;  // -127..127: step amax/127
    case GgmlType::Q4_1: levels = 16; symmetric = false; break;
    case GgmlType::Q5_1: levels = 32; symmetric = false; break;
    case GgmlType::Q2_K: sub = 16; levels = 4; symmetric = false; range_includes_zero = true; break;
    case GgmlType::Q3_K: sub = 16; levels = 8; break;
    case GgmlType::Q4_K: levels = 16; symmetric = false; range_includes_zero = true; break;
    case GgmlType::Q5_K: levels = 32; symmetric = false; range_includes_zero = true; break;
    case GgmlType::Q6_K: sub = 16; levels = 64; break;
    default: ADD_FAILURE(); break;
  }
  std::vector<double> steps(x.size());
  for (size_t b = 0; b < x.size(); b += sub) {
    double lo = x[b], hi = x[b], amax = 0;
    for (int j = 0; j < sub; ++j) {
      lo = std::min<double>(lo, x[b + j]);
      hi = std::max<double>(hi, x[b + j]);
      amax = std::max<double>(amax, std::fabs(x[b + j]));
    }
    if (range_includes_zero) lo = std::min(lo, 0.0);
    const double step = symmetric ? amax / (levels / 2) : (hi - lo) / (levels - 1);
    for (int j = 0; j < sub; ++j) steps[b + j] = step;
  }
  return steps;
}

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e * e;
  return std::sqrt(s / static_cast<double>(v.size()));
}

// ---- tests ----

TEST(QuantApi, TypeSets) {
  for (GgmlType t : kQuantTypes) {
    EXPECT_TRUE(can_quantize(t)) << type_name(t);
    EXPECT_TRUE(is_supported(t)) << type_name(t);
  }
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    EXPECT_TRUE(can_quantize(t));
    EXPECT_EQ(activation_type(t), GgmlType::F32);
  }
  for (GgmlType t : {GgmlType::Q8_1, GgmlType::Q8_K}) {
    EXPECT_TRUE(is_supported(t));
    EXPECT_FALSE(can_quantize(t));
  }
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::IQ4_NL, GgmlType::I8, GgmlType::F64, GgmlType::TQ1_0}) {
    EXPECT_FALSE(is_supported(t));
    EXPECT_FALSE(can_quantize(t));
    EXPECT_THROW(activation_type(t), Error);
  }
  EXPECT_EQ(activation_type(GgmlType::Q4_0), GgmlType::Q8_0);
  EXPECT_EQ(activation_type(GgmlType::Q5_0), GgmlType::Q8_0);
  EXPECT_EQ(activation_type(GgmlType::Q8_0), GgmlType::Q8_0);
  EXPECT_EQ(activation_type(GgmlType::Q4_1), GgmlType::Q8_1);
  EXPECT_EQ(activation_type(GgmlType::Q5_1), GgmlType::Q8_1);
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    EXPECT_EQ(activation_type(t), GgmlType::Q8_K);
}

TEST(QuantApi, RejectsBadArguments) {
  std::vector<float> x(512, 1.0f), y(512);
  std::vector<uint8_t> buf(4096);
  EXPECT_THROW(dequantize_row(GgmlType::Q4_0, buf.data(), y.data(), 33), Error);
  EXPECT_THROW(dequantize_row(GgmlType::Q4_K, buf.data(), y.data(), 128), Error);
  EXPECT_THROW(dequantize_row(GgmlType::IQ2_XXS, buf.data(), y.data(), 256), Error);
  EXPECT_THROW(quantize_row(GgmlType::Q6_K, x.data(), buf.data(), 100), Error);
  EXPECT_THROW(quantize_row(GgmlType::IQ4_NL, x.data(), buf.data(), 32), Error);
  EXPECT_THROW(quantize_row(GgmlType::Q8_K, x.data(), buf.data(), 256), Error);
  EXPECT_THROW(quantize_activations(GgmlType::Q4_0, x.data(), buf.data(), 32), Error);
  EXPECT_THROW(quantize_activations(GgmlType::Q8_K, x.data(), buf.data(), 32), Error);
  EXPECT_THROW(vec_dot(GgmlType::IQ3_S, 256, buf.data(), buf.data()), Error);
  EXPECT_THROW(vec_dot(GgmlType::Q8_0, 48, buf.data(), buf.data()), Error);
  try {
    dequantize_row(GgmlType::Q4_0, buf.data(), y.data(), 33);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_0"), std::string::npos) << e.what();
  }
}

TEST(QuantApi, FloatActivationsAreCopied) {
  const float x[4] = {1.5f, -2.0f, 0.0f, 3.25f};
  float y[4] = {};
  quantize_activations(GgmlType::F32, x, y, 4);
  EXPECT_EQ(std::memcmp(x, y, sizeof(x)), 0);
}

// Zeros must stay zeros (no 0/0 in any scale search), and a constant block must decode to (nearly) it.
TEST(Quantize, ZeroAndConstantBlocks) {
  for (GgmlType t : kQuantTypes) {
    SCOPED_TRACE(type_name(t));
    std::vector<float> zeros(512, 0.0f);
    for (float v : decode(t, encode(t, zeros), zeros.size())) EXPECT_EQ(v, 0.0f);
    for (float c : {0.75f, -3.0f}) {
      std::vector<float> x(512, c);
      // Every format has a level at the constant (up to the half-precision scale): relative 2^-10.
      for (float v : decode(t, encode(t, x), x.size())) EXPECT_NEAR(v, c, std::fabs(c) * 0x1p-10);
    }
  }
}

// Each value must land on the level of its block's grid nearest to it. The legacy formats compute the
// level against the float step and min before they are rounded to half precision (as llama.cpp does),
// so their choice may differ from the nearest level of the decoded grid by up to
// |L| * |d - half(d)| + |m - half(m)| <= (|L| d + |m|) 2^-11 on either side;
// the K-quants round against the decoded grid itself. Ties and float rounding of x/d add a few ulps.
TEST(Quantize, EveryValueTakesTheNearestLevelOfItsGrid) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 16;
  for (const Distribution& dist : distributions()) {
    const std::vector<float> x = sample(dist, gen, n);
    for (GgmlType t : kQuantTypes) {
      SCOPED_TRACE(std::string(dist.name) + " " + type_name(t));
      const std::vector<uint8_t> q = encode(t, x);
      const std::vector<float> y = decode(t, q, n);
      const std::vector<Grid> g = grids(t, q.data(), n);
      int bad = 0;
      for (size_t i = 0; i < n && bad < 5; ++i) {
        const Grid& gr = g[i];
        double best = std::fabs(x[i] - (gr.offset + gr.step * gr.lmin));
        if (gr.step != 0) {
          const double l = std::clamp(std::nearbyint((x[i] - gr.offset) / gr.step), double(gr.lmin), double(gr.lmax));
          best = std::fabs(x[i] - (gr.offset + gr.step * l));
        }
        const double lmag = std::max(std::abs(gr.lmin), std::abs(gr.lmax));
        const double tol = (std::fabs(gr.step) * lmag + std::fabs(gr.offset)) * 0x1p-10 +
                           8 * kU * (std::fabs(x[i]) + std::fabs(gr.offset));
        if (std::fabs(x[i] - y[i]) > best + tol) {
          ++bad;
          ADD_FAILURE() << "element " << i << ": x " << x[i] << " decodes to " << y[i] << " but the grid (step "
                        << gr.step << ", offset " << gr.offset << ") has a level at distance " << best;
        }
      }
    }
  }
}

// The RMS error against the uniform-noise model. Rounding to a grid of step D leaves an error spread
// evenly over [-D/2, D/2] (the values are not aligned with the grid), so its RMS is D/sqrt(12), and for
// a row it is sqrt(mean D^2 / 12) =: E.
// Legacy formats use the naive step (the block's largest magnitude over half the levels, or its range
// over levels-1). With a min, both extremes sit on levels: RMS <= E. Symmetric ones have levels
// -L/2..L/2-1 and the largest magnitude on -L/2, so values within half a step of the opposite end,
// L/2 * D, clip to L/2 - 1: error in [D/2, D], mean square 7/12 D^2 instead of 1/12 D^2. For a density
// no heavier at the block's ends than flat, at most 1/(2L) of the values are there, so
// RMS <= E sqrt(1 + 3/L) (Q4_0 1.09, Q5_0 1.05; Q8_0 has both -127 and 127, so no clipping).
// K-quants search for the step instead, which on these shapes should only lower the error, but their
// sub-block scales are rounded to 6 bits relative to the largest (4 for Q2_K), so a sub-block whose
// range is a fraction r of the largest gets a step off by up to 1/(2*63r) (r >= 1/4: 3%; Q2_K 1/(2*15r),
// r >= 1/2: 7%), and the search minimizes an error weighted towards large values, not the plain RMS:
// budget 10% over the naive bound. Sampling noise of the mean square over 16384 values is ~1% (3 sigma
// 2% in RMS): 3% more for every type. A wrong scale, level or packing costs far more than these margins.
// Finally the search exists to beat the naive grid on bell-shaped data: require it on normal data for
// the formats where it clearly does (Q3_K's 8-level grid gains only ~3%, too little to assert).
TEST(Quantize, RmsErrorMatchesTheBitWidth) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 64;
  for (const Distribution& dist : distributions()) {
    const std::vector<float> x = sample(dist, gen, n);
    for (GgmlType t : kQuantTypes) {
      SCOPED_TRACE(std::string(dist.name) + " " + type_name(t));
      const std::vector<float> y = decode(t, encode(t, x), n);
      std::vector<double> err(n), model(n);
      const std::vector<double> steps = nominal_steps(t, x);
      for (size_t i = 0; i < n; ++i) {
        err[i] = static_cast<double>(y[i]) - x[i];
        model[i] = steps[i] / std::sqrt(12.0);
      }
      const bool k_quant = t >= GgmlType::Q2_K;
      // Levels of the formats whose grid is one level short on the positive side (Q8_0's is not).
      const double clipping_levels = t == GgmlType::Q4_0 ? 16 : t == GgmlType::Q5_0 ? 32 : t == GgmlType::Q3_K ? 8
                                   : t == GgmlType::Q6_K ? 64 : 0;
      const double naive = clipping_levels > 0 ? std::sqrt(1 + 3 / clipping_levels) : 1.0;
      const double bound = naive * (k_quant ? 1.10 : 1.0) * 1.03;
      const double ratio = rms(err) / rms(model);
      EXPECT_LE(ratio, bound) << "RMS error " << rms(err) << ", uniform model " << rms(model);
      if (k_quant && t != GgmlType::Q3_K && std::string(dist.name) == "normal") {
        EXPECT_LT(ratio, 1.0);
      }
    }
  }
}

// Relative RMS error on N(0,1) data, for the record (these are the numbers the formats are known for).
TEST(Quantize, ReportRelativeErrorOnNormalData) {
  std::mt19937 gen(1234);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = std::normal_distribution<float>(0, 1)(gen);
  for (GgmlType t : kQuantTypes) {
    const std::vector<float> y = decode(t, encode(t, x), x.size());
    double e2 = 0, x2 = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      e2 += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
      x2 += static_cast<double>(x[i]) * x[i];
    }
    const double bits = 8.0 * static_cast<double>(type_traits(t)->type_size) / static_cast<double>(type_traits(t)->block_size);
    std::cout << "  " << type_name(t) << ": " << bits << " bits/weight, relative RMS error " << std::sqrt(e2 / x2) << "\n";
  }
}

TEST(Quantize, FloatFormatsRoundToNearest) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  std::vector<float> x = sample(distributions()[0], gen, 1024);
  const std::vector<float> f32 = decode(GgmlType::F32, encode(GgmlType::F32, x), x.size());
  EXPECT_EQ(std::memcmp(f32.data(), x.data(), x.size() * 4), 0);
  const std::vector<float> f16 = decode(GgmlType::F16, encode(GgmlType::F16, x), x.size());
  const std::vector<float> bf16 = decode(GgmlType::BF16, encode(GgmlType::BF16, x), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    // Normal-range halves have 11 significant bits, bfloat16 8: round to nearest is within half an ulp.
    if (std::fabs(x[i]) >= 0x1p-14f) {
      EXPECT_LE(std::fabs(f16[i] - x[i]), std::fabs(x[i]) * 0x1p-11f) << x[i];
    }
    EXPECT_LE(std::fabs(bf16[i] - x[i]), std::fabs(x[i]) * 0x1p-8f) << x[i];
  }
}

// Quantizing what a quantizer decoded must give the same values back. The legacy formats reproduce the
// bytes: the decoded block's extreme sits on the extreme level, so the step, the min and every level
// come back. The K-quants' search tries the decoded data's own grid first and places its min back where
// it was, so nearly every super-block decodes to the same values again. The exception is a super-block
// whose decoded data fits a coarser grid just as exactly (a 2-bit sub-block using only levels 1 and 3
// has step 2ds as well as ds): then the super-block scale can come out doubled and the other sub-blocks
// re-round, by at most about their first error. Measured on these shapes: at most 2 super-blocks of 16
// (2-bit, heavy tails), almost always none. Require at most a quarter of the super-blocks to move, and
// so (each moving by at most about its first error) an RMS move of at most half the first error.
TEST(Quantize, RequantizingDecodedDataIsStable) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 16;
  for (const Distribution& dist : distributions()) {
    const std::vector<float> x = sample(dist, gen, n);
    for (GgmlType t : kQuantTypes) {
      SCOPED_TRACE(std::string(dist.name) + " " + type_name(t));
      const std::vector<uint8_t> q1 = encode(t, x);
      const std::vector<float> y1 = decode(t, q1, n);
      const std::vector<uint8_t> q2 = encode(t, y1);
      const std::vector<float> y2 = decode(t, q2, n);
      if (t < GgmlType::Q2_K) {
        EXPECT_EQ(q1, q2);
        continue;
      }
      std::vector<double> first(n), second(n);
      for (size_t i = 0; i < n; ++i) {
        first[i] = static_cast<double>(y1[i]) - x[i];
        second[i] = static_cast<double>(y2[i]) - y1[i];
      }
      size_t moved = 0;
      for (size_t b = 0; b < n; b += 256) moved += !std::equal(&y1[b], &y1[b] + 256, &y2[b]);
      EXPECT_LE(moved, n / 256 / 4);
      EXPECT_LE(rms(second), 0.5 * rms(first)) << "first pass RMS error " << rms(first);
    }
  }
}

// Importance concentrates accuracy: weighting a quarter of the values 100x must lower their error.
TEST(Quantize, ImportanceLowersTheErrorWhereItIsLarge) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 32;
  const std::vector<float> x = sample(distributions()[0], gen, n);
  std::vector<float> importance(n);
  for (size_t i = 0; i < n; ++i) importance[i] = (i % 4 == 0) ? 100.0f : 1.0f;
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(type_name(t));
    const std::vector<float> plain = decode(t, encode(t, x), n);
    const std::vector<float> weighted = decode(t, encode(t, x, importance.data()), n);
    double e_plain = 0, e_weighted = 0;
    for (size_t i = 0; i < n; i += 4) {
      e_plain += (plain[i] - x[i]) * (plain[i] - x[i]);
      e_weighted += (weighted[i] - x[i]) * (weighted[i] - x[i]);
    }
    EXPECT_LT(e_weighted, e_plain);
  }
}

// Activation blocks: |x - decode(x)| <= d/2 per element, plus what rounding d costs. Q8_K keeps d as a
// float (q = round(x * iscale) with d = 1/iscale: a few ulps of 127 |d|). Q8_0/Q8_1 round with the float
// d but store a half: |L| * |d - half(d)| more, |L| <= 127.
TEST(Activations, WithinHalfAStepPerElement) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 8;
  for (const Distribution& dist : distributions()) {
    std::vector<float> x = sample(dist, gen, n);
    std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // an all-zero block of each kind
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
      SCOPED_TRACE(std::string(dist.name) + " " + type_name(t));
      std::vector<uint8_t> q(*row_bytes(t, n));
      quantize_activations_isa(Isa::Scalar, t, x.data(), q.data(), static_cast<int64_t>(n));
      const std::vector<float> y = decode(t, q, n);
      const int bs = t == GgmlType::Q8_K ? 256 : 32;
      for (size_t b = 0; b < n / bs; ++b) {
        float amax = 0;
        for (int j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(x[b * bs + j]));
        double bound;
        if (t == GgmlType::Q8_K) {
          const BlockQ8_K& blk = reinterpret_cast<const BlockQ8_K*>(q.data())[b];
          bound = std::fabs(blk.d) * (0.5 + 127 * 4 * kU);
          // d = -max/127 takes its sign from the (first) largest-magnitude value, which becomes -127.
          const int jmax = static_cast<int>(
              std::find_if(x.begin() + b * bs, x.begin() + (b + 1) * bs, [&](float v) { return std::fabs(v) == amax; }) -
              (x.begin() + b * bs));
          if (amax > 0) {
            EXPECT_EQ(blk.d < 0, x[b * bs + jmax] > 0);
            EXPECT_EQ(blk.qs[jmax], -127);
          } else {
            EXPECT_EQ(blk.d, 0.0f);
          }
          for (int g = 0; g < 16; ++g) {
            int s = 0;
            for (int l = 0; l < 16; ++l) s += blk.qs[16 * g + l];
            EXPECT_EQ(blk.bsums[g], s);
          }
        } else {
          const uint16_t dh = t == GgmlType::Q8_0 ? reinterpret_cast<const BlockQ8_0*>(q.data())[b].d
                                                  : reinterpret_cast<const BlockQ8_1*>(q.data())[b].d;
          const double d = amax / 127.0f;
          bound = d / 2 + 127 * std::fabs(d - fp16_to_fp32(dh)) + 4 * kU * amax;
          if (t == GgmlType::Q8_1) {
            const BlockQ8_1& blk = reinterpret_cast<const BlockQ8_1*>(q.data())[b];
            int s = 0;
            for (int j = 0; j < 32; ++j) s += blk.qs[j];
            EXPECT_EQ(blk.s, fp32_to_fp16(static_cast<float>(s) * (amax / 127.0f)));
          }
        }
        for (int j = 0; j < bs; ++j) {
          const size_t i = b * bs + j;
          ASSERT_LE(std::fabs(static_cast<double>(x[i]) - y[i]), bound) << "element " << i << " x " << x[i];
        }
      }
    }
  }
}

// The dot products against the float64 dot of the decoded rows. Within a block the integer sums are
// exact; per block the reference rounds the scale product, the integer sum (when above 2^24), the min
// product and the difference (4 roundings of at most u each, relative to |scale term| + |min term|),
// and accumulating nb blocks in float adds at most nb u of the same magnitudes. The float64 side
// decodes each value with up to 3 roundings and each activation with 1. So
//   |dot - exact| <= (nb + 8) u M,  M = sum_i (|w_i - o_i| + |o_i|) |x_i|,
// o_i the min (offset) of w_i's sub-block. Float weights (nb = n): n u sum |w_i x_i|.
// Q4_1/Q5_1 also use the activation block sum s stored as a half (from the unrounded d): per block
// |m| (|s| + |d sum q|) 2^-11 more.
TEST(VecDot, ScalarMatchesFloat64DotOfDecodedRows) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(seed_trace(seed));
  std::mt19937 gen(seed);
  const size_t n = 256 * 16;
  const GgmlType weight_types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                                   GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q2_K,
                                   GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K};
  const std::vector<Distribution> dists = distributions();
  for (size_t di = 0; di < dists.size(); ++di) {
    const std::vector<float> wf = sample(dists[di], gen, n);
    const std::vector<float> xf = sample(dists[(di + 1) % dists.size()], gen, n);
    for (GgmlType t : weight_types) {
      SCOPED_TRACE(std::string(dists[di].name) + " " + type_name(t));
      std::vector<uint8_t> wq(*row_bytes(t, n));
      if (can_quantize(t)) quantize_row(t, wf.data(), wq.data(), static_cast<int64_t>(n));
      else quantize_activations(t, wf.data(), wq.data(), static_cast<int64_t>(n));  // Q8_1, Q8_K weights
      const GgmlType at = activation_type(t);
      std::vector<uint8_t> xq(*row_bytes(at, n));
      quantize_activations_isa(Isa::Scalar, at, xf.data(), xq.data(), static_cast<int64_t>(n));
      const std::vector<float> w = decode(t, wq, n);
      const std::vector<float> x = decode(at, xq, n);

      std::vector<double> offset(n, 0.0);
      if (t == GgmlType::Q4_1 || t == GgmlType::Q5_1 || t == GgmlType::Q2_K || t == GgmlType::Q4_K ||
          t == GgmlType::Q5_K) {
        const std::vector<Grid> g = grids(t, wq.data(), n);
        for (size_t i = 0; i < n; ++i) offset[i] = g[i].offset;
      }
      double exact = 0, magnitude = 0, extra = 0;
      for (size_t i = 0; i < n; ++i) {
        exact += static_cast<double>(w[i]) * x[i];
        magnitude += (std::fabs(w[i] - offset[i]) + std::fabs(offset[i])) * std::fabs(x[i]);
      }
      const bool float_weights = at == GgmlType::F32;
      const double nb = float_weights ? static_cast<double>(n) : static_cast<double>(n) / type_traits(t)->block_size;
      if (at == GgmlType::Q8_1) {
        for (size_t b = 0; b < n / 32; ++b) {
          const BlockQ8_1& a = reinterpret_cast<const BlockQ8_1*>(xq.data())[b];
          int s = 0;
          for (int j = 0; j < 32; ++j) s += a.qs[j];
          extra += std::fabs(offset[b * 32]) * (std::fabs(fp16_to_fp32(a.s)) + std::fabs(s * fp16_to_fp32(a.d))) * 0x1p-11;
        }
      }
      const double bound = (float_weights ? nb : nb + 8) * kU * magnitude + extra;
      const float got = vec_dot_isa(Isa::Scalar, t, static_cast<int64_t>(n), wq.data(), xq.data());
      EXPECT_LE(std::fabs(got - exact), bound) << "dot " << got << ", float64 " << exact << ", M " << magnitude;
    }
  }
}

}  // namespace
}  // namespace moe::quant
