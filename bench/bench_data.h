// bench_data.h: the inputs the kernel benchmarks share: normal random floats, and weight rows made of
// 64 distinct quantized rows repeated (quantizing every row of a 192 MiB stream would take longer than
// the benchmark; repeated content streams from memory all the same).
#pragma once
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gguf/ggml_types.h"
#include "quant/quant.h"

namespace moe::bench {

inline std::vector<float> random_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = normal(rng);
  return x;
}

// `rows` rows of `cols` values of `type` (rows[r] = distinct row r % 64, seeded r % 64 + 1).
inline std::vector<uint8_t> repeated_rows(GgmlType type, int64_t cols, int64_t rows) {
  const size_t rb = static_cast<size_t>(*row_bytes(type, static_cast<uint64_t>(cols)));
  const int64_t distinct = rows < 64 ? rows : 64;
  std::vector<uint8_t> w(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < distinct; ++r) {
    const std::vector<float> f = random_floats(cols, static_cast<uint32_t>(r + 1));
    quant::quantize_row(type, f.data(), w.data() + rb * static_cast<size_t>(r), cols);
  }
  for (int64_t r = distinct; r < rows; ++r)
    std::memcpy(w.data() + rb * static_cast<size_t>(r), w.data() + rb * static_cast<size_t>(r % distinct), rb);
  return w;
}

}  // namespace moe::bench
