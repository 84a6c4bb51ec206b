// dot_tokens_avx2.cpp: AVX2 many-token dot products (one weight row against a group of tokens) for Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: the prompt and batched-decode path of matmul on CPUs without AVX-512.
//
// Why: the per-row kernels (dot_avx2.cpp) unpack a block's levels and scales (nibble masks and shifts,
// fifth/high bits, scale shuffles) for every token. Here each unpacked piece (one 32-value chunk of levels
// and its int16 scale pairs) is held in registers and applied to a group of up to kTokenGroup tokens,
// whose int32 block sums stay in registers too; with 16 ymm registers, four tokens leave room for the
// unpacked chunk and the temporaries.
//
// Batch invariance: per token these kernels do exactly the float operations of dot_avx2.cpp's per-row
// kernel for that type, on the same values in the same order (the integer block sums are exact in any
// order; the float steps — the product of the scales, one fmadd per block into the same accumulator(s),
// the same final horizontal sums — are repeated verbatim). So every result is bit-identical to vec_dot on
// AVX2 for that token alone, whatever the group (quant_simd_test.cpp checks this bit for bit, and each
// kernel against the scalar reference). Compiled with the AVX2 flags; only called on CPUs that have them.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "quant/blocks.h"
#include "quant/kquant_scales.h"
#include "quant/simd.h"
#include "quant/token_rows.h"
#include "quant/vec.h"

namespace moe::quant::detail {
namespace {

constexpr int kTokenGroup = 4;

inline float hsum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float half(uint16_t h) { return _cvtsh_ss(h); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m256i low_nibbles() { return _mm256_set1_epi8(0x0F); }
inline __m256i load_bsums(const BlockQ8_K& y) { return load256(y.bsums); }

// As dot_avx2.cpp: int16 scale pairs, lanes 0..7 from pair `lo` of scales16, lanes 8..15 from pair `hi`.
inline __m256i scale_pair(__m256i scales16, int lo, int hi) {
  const char a = static_cast<char>(2 * lo), b = static_cast<char>(2 * lo + 1);
  const char c = static_cast<char>(2 * hi), d = static_cast<char>(2 * hi + 1);
  return _mm256_shuffle_epi8(scales16, _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, d, c, d,
                                                        c, d, c, d, c, d, c, d, c, d, c, d));
}

// sum of (unsigned levels q) * (activation bytes at y), times the int16 scale pairs, as 8 int32 lanes.
inline __m256i scaled(__m256i q, const int8_t* y, __m256i scale_pairs) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, load256(y)), scale_pairs);
}

// ---------------------------------------------------------------------------------------------- Q8_0
// Per token as dot_avx2.cpp's dot_scaled<Q8_0>: blocks alternate between two accumulators (the last odd
// block into the first), each block adds (d_w * d_x) * isum; the weight's |q| is shared by the group.
template <int NT>
void dot_q8_0_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ8_0*>(wv);
  const BlockQ8_0* x[NT];
  token_rows<NT>(xv, stride, x);
  __m256 acc[NT][2];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  auto block = [&](int64_t i, int a) {
    const __m256i q = load256(w[i].qs);
    const __m256i abs_q = _mm256_sign_epi8(q, q);
    const float dw = half(w[i].d);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_0& y = x[t][i];
      const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(load256(y.qs), q)), ones);
      acc[t][a] = _mm256_fmadd_ps(_mm256_set1_ps(dw * half(y.d)), _mm256_cvtepi32_ps(isum), acc[t][a]);
    }
  };
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    block(i, 0);
    block(i + 1, 1);
  }
  if (i < nb) block(i, 0);
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
}

// ---------------------------------------------------------------------------------------------- Q2_K
// Group g = 4n + j of 32 values: bits 2j of qs[32n ..], sub-blocks 2g and 2g + 1; mins against bsums.
template <int NT>
void dot_q2_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ2_K*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  const __m256i three = _mm256_set1_epi8(3);
  __m256 acc[NT], acc_min[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = acc_min[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales));
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    __m256i isum[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    MOE_UNROLL
    for (int n = 0; n < 2; ++n) {
      const __m256i q = load256(w[i].qs + 32 * n);
      const __m256i scs = (n == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11));
      MOE_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m256i qj = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three);
        const __m256i sp = scale_pair(scs, 2 * j, 2 * j + 1);
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_add_epi32(isum[t], scaled(qj, x[t][i].qs + 128 * n + 32 * j, sp));
      }
    }
    const float dw = half(w[i].d), dm = half(w[i].dmin);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      const __m256i min_sum = _mm256_madd_epi16(m16, load_bsums(y));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
      acc_min[t] = _mm256_fmadd_ps(_mm256_set1_ps(dm * y.d), _mm256_cvtepi32_ps(min_sum), acc_min[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(_mm256_sub_ps(acc[t], acc_min[t]));
}

// ---------------------------------------------------------------------------------------------- Q3_K
// As Q2_K plus the high bit (set: +4 on the unsigned level), minus 4 * (scales . bsums) per token.
template <int NT>
void dot_q3_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ3_K*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256 acc[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(q3_K_scales(w[i].scales));
    const __m256i hm = load256(w[i].hmask);
    __m256i isum[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    MOE_UNROLL
    for (int n = 0; n < 2; ++n) {
      const __m256i q = load256(w[i].qs + 32 * n);
      const __m256i scs = (n == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11));
      MOE_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int g = 4 * n + j;
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, g), one), 2);
        const __m256i qj = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three), high);
        const __m256i sp = scale_pair(scs, 2 * j, 2 * j + 1);
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_add_epi32(isum[t], scaled(qj, x[t][i].qs + 32 * g, sp));
      }
    }
    const float dw = half(w[i].d);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load_bsums(y)), 2);
      const __m256i s = _mm256_sub_epi32(isum[t], offset);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(s), acc[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]);
}

// ------------------------------------------------------------------------------------------ Q4_K/Q5_K
// Chunk c = sub-blocks 2c (low nibbles of qs[32c ..]) and 2c + 1 (high nibbles), plus bits 2c / 2c + 1
// of qh[l] for Q5_K. Each min covers two bsums: madd of the bsums with [m0, m0, m1, m1, ...].
template <int NT, bool kFifthBit, typename Block>
void dot_q45_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const Block*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  __m256 acc[NT];
  __m128 acc_min[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps(), acc_min[t] = _mm_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
    const __m256i sc16 = _mm256_cvtepu8_epi16(sm);
    const __m256i scs = _mm256_permute2x128_si256(sc16, sc16, 0x00);
    __m256i hbits;
    if constexpr (kFifthBit) hbits = load256(w[i].qh);
    __m256i isum[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    MOE_UNROLL
    for (int c = 0; c < 4; ++c) {
      const __m256i q = load256(w[i].qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, low_nibbles());
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low_nibbles());
      if constexpr (kFifthBit) {
        const __m256i one = _mm256_set1_epi8(1);
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hbits, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 1), one), 4));
        hbits = _mm256_srli_epi16(hbits, 2);
      }
      const __m256i sp_lo = scale_pair(scs, 2 * c, 2 * c), sp_hi = scale_pair(scs, 2 * c + 1, 2 * c + 1);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        isum[t] = _mm256_add_epi32(isum[t], scaled(lo, x[t][i].qs + 64 * c, sp_lo));
        isum[t] = _mm256_add_epi32(isum[t], scaled(hi, x[t][i].qs + 64 * c + 32, sp_hi));
      }
    }
    const float dw = half(w[i].d), dm = half(w[i].dmin);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      const __m256i min_pairs = _mm256_madd_epi16(m16, load_bsums(y));
      const __m128i min_sum = _mm_add_epi32(_mm256_castsi256_si128(min_pairs), _mm256_extracti128_si256(min_pairs, 1));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
      acc_min[t] = _mm_fmadd_ps(_mm_set1_ps(dm * y.d), _mm_cvtepi32_ps(min_sum), acc_min[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]) - hsum(acc_min[t]);
}

// ---------------------------------------------------------------------------------------------- Q6_K
// Value 128n + 32k + l: low nibble of ql[64n + 32(k%2) + l] (high nibble for k >= 2), bits 2k..2k+1 of
// qh[32n + l]; level - 32 taken as level * y - 32 * (scales . bsums) per token.
template <int NT>
void dot_q6_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  const __m256i top2 = _mm256_set1_epi8(0x30);
  __m256 acc[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales)));
    __m256i isum[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    MOE_UNROLL
    for (int n = 0; n < 2; ++n) {
      const __m256i scs = (n == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00) : _mm256_permute2x128_si256(sc16, sc16, 0x11));
      const __m256i ql0 = load256(w[i].ql + 64 * n), ql1 = load256(w[i].ql + 64 * n + 32);
      const __m256i qh = load256(w[i].qh + 32 * n);
      MOE_UNROLL
      for (int k = 0; k < 4; ++k) {
        const __m256i ql = k % 2 == 0 ? ql0 : ql1;
        const __m256i low = k < 2 ? _mm256_and_si256(ql, low_nibbles())
                                  : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_nibbles());
        const __m256i high = k == 0   ? _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2)
                             : k == 1 ? _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2)
                             : k == 2 ? _mm256_and_si256(qh, top2)
                                      : _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2);
        const __m256i q = _mm256_or_si256(low, high);
        const __m256i sp = scale_pair(scs, 2 * k, 2 * k + 1);
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) isum[t] = _mm256_add_epi32(isum[t], scaled(q, x[t][i].qs + 128 * n + 32 * k, sp));
      }
    }
    const float dw = half(w[i].d);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load_bsums(y)), 5);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y.d), _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t], offset)), acc[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]);
}

// ------------------------------------------------------------------------------------------ dispatch
using TokensKernel = void (*)(const void*, const uint8_t*, size_t, int64_t, float*, size_t);

template <int NT> struct Q8_0Tokens { static constexpr TokensKernel run = &dot_q8_0_tokens<NT>; };
template <int NT> struct Q2KTokens { static constexpr TokensKernel run = &dot_q2_K_tokens<NT>; };
template <int NT> struct Q3KTokens { static constexpr TokensKernel run = &dot_q3_K_tokens<NT>; };
template <int NT> struct Q4KTokens { static constexpr TokensKernel run = &dot_q45_K_tokens<NT, false, BlockQ4_K>; };
template <int NT> struct Q5KTokens { static constexpr TokensKernel run = &dot_q45_K_tokens<NT, true, BlockQ5_K>; };
template <int NT> struct Q6KTokens { static constexpr TokensKernel run = &dot_q6_K_tokens<NT>; };

template <template <int> class K, int... I>
constexpr auto kernel_table(std::integer_sequence<int, I...>) {
  return std::array<TokensKernel, sizeof...(I)>{K<I + 1>::run...};
}

// Any number of tokens: groups of kTokenGroup, then a smaller last group. kBlock: values per block.
template <template <int> class K, int kBlock>
void dot_tokens_grouped(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok, float* out,
                        size_t out_stride) {
  static constexpr auto kernels = kernel_table<K>(std::make_integer_sequence<int, kTokenGroup>{});
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t t0 = 0; t0 < n_tok; t0 += kTokenGroup) {
    const int64_t nt = std::min<int64_t>(kTokenGroup, n_tok - t0);
    kernels[static_cast<size_t>(nt - 1)](w, xb + static_cast<size_t>(t0) * x_stride, x_stride, n / kBlock,
                                         out + static_cast<size_t>(t0) * out_stride, out_stride);
  }
}

}  // namespace

DotTokensFn dot_tokens_avx2(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0: return &dot_tokens_grouped<Q8_0Tokens, kQK>;
    case GgmlType::Q2_K: return &dot_tokens_grouped<Q2KTokens, kQKK>;
    case GgmlType::Q3_K: return &dot_tokens_grouped<Q3KTokens, kQKK>;
    case GgmlType::Q4_K: return &dot_tokens_grouped<Q4KTokens, kQKK>;
    case GgmlType::Q5_K: return &dot_tokens_grouped<Q5KTokens, kQKK>;
    case GgmlType::Q6_K: return &dot_tokens_grouped<Q6KTokens, kQKK>;
    default: return nullptr;
  }
}

}  // namespace moe::quant::detail
