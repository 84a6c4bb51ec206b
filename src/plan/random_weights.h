// random_weights.h: the random values `moe synth` writes. Two ways to make a quantized tensor:
//  - the exact way: draw floats ~ N(0, sigma) (fill_normal) and quantize them (plan/encode.h); the K-quant
//    scale searches make this ~100 ns per weight, i.e. hours for a full-size Mixtral;
//  - the fast way (draw_blocks): write random blocks directly. Quants are binomial (popcounts of random
//    bits: bell-shaped and centred on the format's zero), sub-block scales uniform over the upper half of
//    their range, super-block scales varying by +-25 %; the overall scale is set so the dequantized values
//    have the mean (0) and the variance that the exact way produces for the same sigma, measured once per
//    type by quantizing a sample (quantized_variance). About 1-3 ns per weight.
// Both are functions of (seed, row) only, so a file does not depend on the thread count.
#pragma once
#include <cstdint>
#include <functional>
#include <span>

#include "gguf/ggml_types.h"
#include "util/thread_pool.h"

namespace moe::plan {

class Progress;

// n values ~ approximately N(0, sigma^2) from `seed` (Irwin-Hall sum of four 16-bit uniforms: bell-shaped,
// bounded at +-3.46 sigma).
void fill_normal(uint64_t seed, float sigma, float* out, int64_t n);

// The types draw_blocks writes: Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (the K-quant mixes' types, whose
// quantizers are the slow ones).
bool can_draw_blocks(GgmlType type);

// The variance of the dequantized values when N(0, sigma^2) floats from fill_normal are quantized to
// `type` the exact way: measured on a fixed sample of 2^20 values (so it is deterministic), cached.
double quantized_variance(GgmlType type, float sigma);

// Writes one row of n elements (a multiple of the block size) of random `type` blocks into `out`
// (row_bytes(type, n) bytes) whose dequantized values have mean 0 and variance `variance`.
void draw_blocks(GgmlType type, uint64_t seed, double variance, uint8_t* out, int64_t n);

// `rows` rows of draw_blocks on the pool's threads, row r from row_seed(r), with the variance of the
// exact way for `sigma`. `progress` (may be null) advances by n per row.
void draw_tensor(ThreadPool& pool, GgmlType type, int64_t n, int64_t rows, float sigma, std::span<uint8_t> out,
                 const std::function<uint64_t(int64_t row)>& row_seed, Progress* progress);

}  // namespace moe::plan
