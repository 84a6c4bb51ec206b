// finite_test.cpp: first_non_finite against the scalar reference decoder on fresh random bytes. Random
// bytes put an all-ones exponent in about one half in 32, so some rows have no bad value and others
// several: for every supported weight type the scan must name the same block (the same element for
// plain types) as "decode everything and look for the first non-finite value".
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gguf/ggml_types.h"
#include "quant/finite.h"
#include "quant/quant.h"

namespace moe::quant {
namespace {

TEST(FiniteScan, AgreesWithTheReferenceDecoderOnRandomBytes) {
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                            GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                            GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
  for (GgmlType type : types) {
    const TypeTraits* tt = type_traits(type);
    ASSERT_NE(tt, nullptr);
    const int64_t block = tt->block_size;
    const int64_t n = (block == 1 ? 64 : 4 * block);
    int found = 0, clean = 0;
    for (int trial = 0; trial < 400; ++trial) {
      std::vector<uint8_t> bytes(*row_bytes(type, static_cast<uint64_t>(n)));
      for (auto& b : bytes) b = static_cast<uint8_t>(rng());
      std::vector<float> decoded(static_cast<size_t>(n));
      dequantize_row(type, bytes.data(), decoded.data(), n);
      std::optional<uint64_t> want;
      for (int64_t i = 0; i < n && !want; ++i)
        if (!std::isfinite(decoded[static_cast<size_t>(i)])) want = static_cast<uint64_t>(i - i % block);
      std::optional<uint64_t> got = first_non_finite(type, bytes.data(), static_cast<uint64_t>(n));
      ASSERT_EQ(got, want) << type_name(type) << " trial " << trial << " seed " << seed;
      (want ? found : clean) += 1;
    }
    // The random rows must have exercised both outcomes, or the comparison proved little.
    EXPECT_GT(found, 0) << type_name(type) << " seed " << seed;
    EXPECT_GT(clean, 0) << type_name(type) << " seed " << seed;
  }
}

}  // namespace
}  // namespace moe::quant
