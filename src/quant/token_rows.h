// token_rows.h: the two pieces every many-token SIMD kernel file (dot_avx512.cpp, dot_tokens_avx2.cpp,
// lanes_avx512.cpp) shares: the unroll pragma that keeps per-token sums and unpacked weights in
// registers, and the pointers to a group's activation rows. ISA-free, so one copy serves every file.
#pragma once
#include <cstddef>
#include <cstdint>

// The token and chunk loops must be fully unrolled so that acc[t] and the unpacked chunks live in
// registers rather than in an array on the stack.
#define MOE_UNROLL _Pragma("GCC unroll 16")

namespace moe::quant::detail {

// rows[t] = the activation row of token t of a group: rows `stride` bytes apart from `x`.
template <int NT, typename Block>
inline void token_rows(const uint8_t* x, size_t stride, const Block* (&rows)[NT]) {
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) rows[t] = reinterpret_cast<const Block*>(x + static_cast<size_t>(t) * stride);
}

}  // namespace moe::quant::detail
