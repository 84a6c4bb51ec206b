// compute_probe_test.cpp: the in-cache matmul rate is a positive, finite figure for the block types the
// models use, one token and several, and bad sizes are refused with a message naming them.
#include "kernels/compute_probe.h"

#include <gtest/gtest.h>

#include <cmath>

#include "quant/lanes.h"
#include "util/error.h"

namespace moe::kernels {
namespace {

TEST(ComputeProbe, MeasuresAPlausibleRate) {
  ThreadPool pool(2);
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::F32})
    for (int64_t n_tok : {1, 4}) {
      const KernelRate r = measure_kernel_rate(pool, type, n_tok, 512, 4, 0.002);
      EXPECT_EQ(r.type, type);
      EXPECT_EQ(r.n_tok, n_tok);
      ASSERT_TRUE(std::isfinite(r.seconds_per_256)) << type_name(type);
      // Above zero, and below a millisecond per 256 multiply-adds (a CPU that slow runs nothing).
      EXPECT_GT(r.seconds_per_256, 0.0) << type_name(type);
      EXPECT_LT(r.seconds_per_256, 1e-3) << type_name(type);
      EXPECT_NEAR(r.weights_per_s() * r.seconds_per_256, 256.0, 1e-9);
    }
}

// Repacked rows (as load repacks them) time the repacked kernels; a type without them is refused.
TEST(ComputeProbe, TimesRepackedKernels) {
  ThreadPool pool(2);
  EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q5_K, 1, 512, 4, 0.002, /*repacked=*/true), Error);
  if (!quant::use_repacked(GgmlType::Q3_K)) {
    EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q3_K, 1, 512, 4, 0.002, true), Error);
    return;
  }
  for (GgmlType type : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0}) {
    const KernelRate r = measure_kernel_rate(pool, type, 1, 512, 4, 0.002, true);
    ASSERT_TRUE(std::isfinite(r.seconds_per_256)) << type_name(type);
    EXPECT_GT(r.seconds_per_256, 0.0) << type_name(type);
    EXPECT_LT(r.seconds_per_256, 1e-3) << type_name(type);
  }
}

TEST(ComputeProbe, RejectsBadSizes) {
  ThreadPool pool(1);
  EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q4_K, 0, 256, 1, 0.001), Error);
  EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q4_K, 513, 256, 1, 0.001), Error);
  EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q4_K, 1, 100, 1, 0.001), Error);  // not whole blocks
  EXPECT_THROW(measure_kernel_rate(pool, GgmlType::Q4_K, 1, 256, 0, 0.001), Error);
}

}  // namespace
}  // namespace moe::kernels
