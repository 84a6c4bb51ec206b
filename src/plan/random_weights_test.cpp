// random_weights_test.cpp: the fast random blocks of `moe synth` against the exact way (floats quantized).
// For each type the fast way writes, a tensor drawn directly and one quantized from N(0, 0.02) floats are
// dequantized and their means and variances compared. Tolerances are five standard errors: the mean of n
// values with variance v has variance v/n; the sample variance's relative variance is (kurtosis - 1)/n,
// and every distribution here has kurtosis below 4 (binomials and Irwin-Hall sums: below 3; the scale
// mixtures add less than a third), plus the calibration sample's 2^20 values.
#include "plan/random_weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "quant/quant.h"
#include "util/error.h"

namespace moe::plan {
namespace {

struct Moments {
  double mean = 0, var = 0, maxabs = 0;
  int64_t n = 0;
};

Moments moments_of(GgmlType type, const std::vector<uint8_t>& bytes, int64_t row, int64_t rows) {
  const uint64_t rb = *row_bytes(type, static_cast<uint64_t>(row));
  std::vector<float> y(static_cast<size_t>(row));
  double sum = 0, sq = 0;
  Moments m;
  for (int64_t r = 0; r < rows; ++r) {
    quant::dequantize_row(type, bytes.data() + static_cast<uint64_t>(r) * rb, y.data(), row);
    for (float v : y) {
      sum += v;
      sq += static_cast<double>(v) * v;
      m.maxabs = std::max(m.maxabs, std::fabs(static_cast<double>(v)));
    }
  }
  m.n = row * rows;
  m.mean = sum / static_cast<double>(m.n);
  m.var = sq / static_cast<double>(m.n) - m.mean * m.mean;
  return m;
}

constexpr GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                               GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

TEST(RandomWeights, FastBlocksHaveTheSpreadOfQuantizedFloats) {
  constexpr int64_t kRow = 4096, kRows = 64;
  constexpr float kSigma = 0.02f;
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(type_name(type));
    ASSERT_TRUE(can_draw_blocks(type));
    const uint64_t rb = *row_bytes(type, kRow);
    std::vector<uint8_t> fast(rb * kRows), slow(rb * kRows);
    std::vector<float> x(kRow);
    const double variance = quantized_variance(type, kSigma);
    for (int64_t r = 0; r < kRows; ++r) {
      draw_blocks(type, 1000 + static_cast<uint64_t>(r), variance, fast.data() + static_cast<uint64_t>(r) * rb, kRow);
      fill_normal(77 + static_cast<uint64_t>(r), kSigma, x.data(), kRow);  // seeds unlike the calibration's
      quant::quantize_row(type, x.data(), slow.data() + static_cast<uint64_t>(r) * rb, kRow);
    }
    const Moments f = moments_of(type, fast, kRow, kRows), s = moments_of(type, slow, kRow, kRows);
    const double n = static_cast<double>(f.n);
    EXPECT_NEAR(f.mean, s.mean, 5 * std::sqrt(s.var / n + f.var / n));
    EXPECT_NEAR(f.var / s.var, 1.0, 5 * std::sqrt(3 / n + 3 / n + 3 / 1048576.0));
    // The calibration itself: quantized floats keep roughly the floats' variance (quantization noise and
    // the scale search's shrinkage move it by well under a half even at two bits).
    EXPECT_NEAR(variance / (kSigma * kSigma), 1.0, 0.5);
    // Bell-shaped and bounded like the floats: nothing beyond 8 sigma (Irwin-Hall stops at 3.5).
    EXPECT_LT(f.maxabs, 8 * std::sqrt(s.var));
  }
}

TEST(RandomWeights, AFunctionOfTheSeed) {
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(type_name(type));
    const uint64_t rb = *row_bytes(type, 512);
    std::vector<uint8_t> a(rb), b(rb), c(rb);
    draw_blocks(type, 5, 4e-4, a.data(), 512);
    draw_blocks(type, 5, 4e-4, b.data(), 512);
    draw_blocks(type, 6, 4e-4, c.data(), 512);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
  }
}

TEST(RandomWeights, RejectsWhatItCannotDraw) {
  EXPECT_FALSE(can_draw_blocks(GgmlType::Q4_0));
  EXPECT_FALSE(can_draw_blocks(GgmlType::F16));
  std::vector<uint8_t> buf(4096);
  EXPECT_THROW(draw_blocks(GgmlType::Q4_0, 1, 1.0, buf.data(), 32), Error);
  EXPECT_THROW(draw_blocks(GgmlType::Q4_K, 1, 1.0, buf.data(), 100), Error);
}

}  // namespace
}  // namespace moe::plan
