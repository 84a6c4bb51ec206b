// logits_compare.h: the comparisons the logits end-to-end tests make against golden files — read a raw
// float32 logits file, the relative L2 error over all logits, and argmax equality row by row. One copy,
// so every test measures its bound the same way.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "testutil/fixtures.h"

namespace moe::testing {

// A file of float32 values, as `moe logits --out` and the golden references store them.
inline std::vector<float> read_f32(const std::string& path) {
  const std::string bytes = read_file(path);
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

// ||got - ref|| / ||ref|| over all values, in double.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

// Every row of n_vocab logits has its largest value at the same token in `a` and `b`.
inline void expect_same_argmax(const std::vector<float>& a, const std::vector<float>& b, int64_t n_vocab) {
  ASSERT_EQ(a.size(), b.size());
  const auto n = static_cast<std::ptrdiff_t>(n_vocab);
  for (size_t p = 0; (p + 1) * n_vocab <= a.size(); ++p) {
    auto row = [&](const std::vector<float>& v) { return v.begin() + static_cast<std::ptrdiff_t>(p) * n; };
    EXPECT_EQ(std::max_element(row(a), row(a) + n) - row(a), std::max_element(row(b), row(b) + n) - row(b))
        << "position " << p;
  }
}

}  // namespace moe::testing
