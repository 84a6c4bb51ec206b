// dot_avx2.cpp: AVX2 dot products of every supported block format against 8-bit activations; the float
// dot products and activation quantizers are quant/vec_kernels.h's, instantiated here for 8 lanes.
// Compiled with -mavx2 -mfma -mf16c -mbmi2 and only called when the CPU has them (quant.cpp dispatches
// through util/cpu.h), so nothing here may run at static-initialization time.
//
// Arithmetic contract (see quant/ref.h): inside a block the integer products are summed exactly in int32
// (_mm256_maddubs_epi16 multiplies an UNSIGNED byte by a SIGNED byte into int16 pairs, which never
// saturate here: every weight operand is made non-negative and small, see each kernel), then each block's
// partial sums are turned into float once and scaled by its float scales. Only the float summation order
// across blocks and lanes differs from the scalar reference.
//
// Offsets such as Q4_0's "q - 8" are not applied to the bytes (that would need a signed weight operand);
// instead sum((q - 8) * y) = sum(q * y) - 8 * sum(y), with sum(y) from maddubs against a constant (legacy
// formats) or from the activation block's precomputed bsums (K-quants). Both are exact for any input.
//
// Q8_0 weights are signed, so they use the sign trick (|w| times y with w's sign): exact for every weight
// byte, and for every activation byte except -128, which quantize_activations never produces
// (|round(x / d)| <= 127 by construction of d = amax / 127).
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/kquant_scales.h"
#include "quant/simd.h"
#include "quant/vec.h"
#include "quant/vec_kernels.h"
#include "util/fp16.h"

namespace moe::quant::detail {
namespace {

// ---------------------------------------------------------------------------------------------- helpers

inline float hsum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Four bytes at p as the low lane of a vector (the load folds into vmovd).
inline __m128i load_u32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm_cvtsi32_si128(v);
}

inline float half(uint16_t h) { return _cvtsh_ss(h); }

// Broadcast of half(*a) * half(*b), where a and b point at the first half of at least four readable
// bytes (the d field of a legacy block, which the quants follow).
inline __m256 half_product(const uint16_t* a, const uint16_t* b) {
  const __m128 f = _mm_cvtph_ps(_mm_unpacklo_epi16(load_u32(a), load_u32(b)));  // [a, b, ...]
  return _mm256_broadcastss_ps(_mm_mul_ss(f, _mm_movehdup_ps(f)));
}

// A function, not a global: a global __m256i would execute AVX2 at static initialization.
inline __m256i low_nibbles() { return _mm256_set1_epi8(0x0F); }

// The 32 nibbles of 16 bytes as bytes 0..15 (low nibbles) and 16..31 (high nibbles): the legacy layout.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low_nibbles());
}

// 0x10 in byte j where bit j of the little-endian 32 bits at qh is set (the fifth bit of Q5_0/Q5_1).
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  // Byte j takes byte j/8 of the word, then keeps bit j%8 of it.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
                       3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Eight int32 lanes summing to sum(q * y) - offset * sum(y), q unsigned bytes <= 31, y any signed bytes:
// every int16 pair stays within 2 * 31 * 128 + 16 * 2 * 128 < 32768.
inline __m256i dot_unsigned_offset(__m256i q, __m256i y, __m256i offset_bytes) {
  const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(offset_bytes, y));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

inline __m256i dot_unsigned(__m256i q, __m256i y) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1));
}

// ------------------------------------------------------------------------------------ legacy formats

inline __m256i lanes_q4_0(const BlockQ4_0& w, const BlockQ8_0& x) {
  return dot_unsigned_offset(unpack_nibbles(w.qs), load256(x.qs), _mm256_set1_epi8(8));
}

inline __m256i lanes_q5_0(const BlockQ5_0& w, const BlockQ8_0& x) {
  const __m256i q = _mm256_or_si256(unpack_nibbles(w.qs), fifth_bits(w.qh));
  return dot_unsigned_offset(q, load256(x.qs), _mm256_set1_epi8(16));
}

// Signed weights: |w| (<= 128 as an unsigned byte) times y carrying w's sign; pairs <= 2 * 128 * 127.
inline __m256i lanes_q8_0(const BlockQ8_0& w, const BlockQ8_0& x) {
  const __m256i q = load256(w.qs);
  const __m256i y = load256(x.qs);
  return dot_unsigned(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
}

inline __m256i lanes_q4_1(const BlockQ4_1& w, const BlockQ8_1& x) {
  return dot_unsigned(unpack_nibbles(w.qs), load256(x.qs));
}

inline __m256i lanes_q5_1(const BlockQ5_1& w, const BlockQ8_1& x) {
  return dot_unsigned(_mm256_or_si256(unpack_nibbles(w.qs), fifth_bits(w.qh)), load256(x.qs));
}

// sum over blocks of (d_w * d_x) * isum, two blocks per step into two accumulators so consecutive
// blocks' multiply-adds do not wait on each other.
template <typename WB, typename XB, __m256i (*Lanes)(const WB&, const XB&)>
float dot_scaled(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const WB*>(wv);
  const auto* x = static_cast<const XB*>(xv);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    acc0 = _mm256_fmadd_ps(half_product(&w[i].d, &x[i].d), _mm256_cvtepi32_ps(Lanes(w[i], x[i])), acc0);
    acc1 = _mm256_fmadd_ps(half_product(&w[i + 1].d, &x[i + 1].d),
                           _mm256_cvtepi32_ps(Lanes(w[i + 1], x[i + 1])), acc1);
  }
  if (i < nb) acc0 = _mm256_fmadd_ps(half_product(&w[i].d, &x[i].d), _mm256_cvtepi32_ps(Lanes(w[i], x[i])), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

// The same plus m_w * s_x per block (Q4_1, Q5_1 against Q8_1): the four halves (d_w, m_w) and
// (d_x, s_x) are adjacent in both blocks, so one conversion yields both products.
template <typename WB, __m256i (*Lanes)(const WB&, const BlockQ8_1&)>
float dot_scaled_min(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const WB*>(wv);
  const auto* x = static_cast<const BlockQ8_1*>(xv);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  auto step = [&](int64_t b, __m256& acc) {
    const __m128 f = _mm_cvtph_ps(_mm_unpacklo_epi32(load_u32(&w[b].d), load_u32(&x[b].d)));  // dw mw dx sx
    const __m128 prod = _mm_mul_ps(f, _mm_movehl_ps(f, f));  // [dw*dx, mw*sx, ...]
    acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(Lanes(w[b], x[b])), acc);
    acc_min = _mm_add_ss(acc_min, _mm_movehdup_ps(prod));
  };
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    step(i, acc0);
    step(i + 1, acc1);
  }
  if (i < nb) step(i, acc0);
  return hsum(_mm256_add_ps(acc0, acc1)) + _mm_cvtss_f32(acc_min);
}

// ------------------------------------------------------------------------------------------ K-quants

// int16 scale pairs for maddubs results of 32 activations: lanes 0..7 get byte pair 2*lo of `scales16`
// (16 int16 broadcast to both 128-bit halves), lanes 8..15 byte pair 2*hi. Built by pshufb.
inline __m256i scale_pair(__m256i scales16, int lo, int hi) {
  const char a = static_cast<char>(2 * lo), b = static_cast<char>(2 * lo + 1);
  const char c = static_cast<char>(2 * hi), d = static_cast<char>(2 * hi + 1);
  return _mm256_shuffle_epi8(scales16, _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, d, c, d,
                                                        c, d, c, d, c, d, c, d, c, d, c, d));
}

// 16 int16 from 16 int8 / uint8 (a full register: lanes 0..15).
inline __m256i widen_signed(const void* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(static_cast<const __m128i*>(p)));
}

inline __m256i load_bsums(const BlockQ8_K& y) { return load256(y.bsums); }

// The 16 sub-block scales (low nibbles) and mins (high nibbles) of a Q2_K block as int16.
// Element p = 128n + 32j + l has its two bits at 2j of qs[32n + l] and sub-block p / 16, so group
// g = 4n + j of 32 consecutive elements uses sub-blocks 2g and 2g + 1.
float dot_q2_K(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const BlockQ2_K*>(wv);
  const auto* x = static_cast<const BlockQ8_K*>(xv);
  const __m256i three = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i].scales));
    const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    const __m256i min_sum = _mm256_madd_epi16(m16, load_bsums(x[i]));
    const __m256i sc_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00);  // scales 0..7 in both halves
    const __m256i sc_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);  // scales 8..15
    __m256i isum = _mm256_setzero_si256();
    for (int n = 0; n < 2; ++n) {
      const __m256i q = load256(w[i].qs + 32 * n);
      const __m256i scs = n == 0 ? sc_lo : sc_hi;
      for (int j = 0; j < 4; ++j) {
        const __m256i qj = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three);
        const __m256i p = _mm256_maddubs_epi16(qj, load256(x[i].qs + 128 * n + 32 * j));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(scs, 2 * j, 2 * j + 1)));
      }
    }
    const float dy = x[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w[i].d) * dy), _mm256_cvtepi32_ps(isum), acc);
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(half(w[i].dmin) * dy), _mm256_cvtepi32_ps(min_sum), acc_min);
  }
  return hsum(_mm256_sub_ps(acc, acc_min));
}

// Q3_K: q = low2 + 4 * hbit - 4, computed as the unsigned low2 + 4 * hbit (<= 7) minus 4 * bsums.
float dot_q3_K(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const BlockQ3_K*>(wv);
  const auto* x = static_cast<const BlockQ8_K*>(xv);
  const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(q3_K_scales(w[i].scales));
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load_bsums(x[i])), 2);
    const __m256i sc_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00);
    const __m256i sc_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);
    const __m256i hm = load256(w[i].hmask);
    __m256i isum = _mm256_setzero_si256();
    for (int n = 0; n < 2; ++n) {
      const __m256i q = load256(w[i].qs + 32 * n);
      const __m256i scs = n == 0 ? sc_lo : sc_hi;
      for (int j = 0; j < 4; ++j) {
        const int g = 4 * n + j;
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, g), one), 2);
        const __m256i qj = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * j), three), high);
        const __m256i p = _mm256_maddubs_epi16(qj, load256(x[i].qs + 32 * g));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(scs, 2 * j, 2 * j + 1)));
      }
    }
    isum = _mm256_sub_epi32(isum, offset);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w[i].d) * x[i].d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

// Q4_K / Q5_K share everything but the fifth bit: sub-block j (32 elements) is the low (even j) or high
// (odd j) nibbles of qs[32 * (j / 2) ..], plus bit j of qh[l] for Q5_K.
template <bool kFifthBit, typename Block>
float dot_q45_K(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const Block*>(wv);
  const auto* x = static_cast<const BlockQ8_K*>(xv);
  __m256 acc = _mm256_setzero_ps();
  __m128 acc_min = _mm_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i sm = k4_scales_mins(w[i].scales);
    // Each min covers 32 elements = two bsums: madd of [b0,b1,...] with [m0,m0,m1,m1,...].
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
    const __m256i min_pairs = _mm256_madd_epi16(m16, load_bsums(x[i]));  // 8 int32 (pairs summed later)
    const __m128i min_sum = _mm_add_epi32(_mm256_castsi256_si128(min_pairs), _mm256_extracti128_si256(min_pairs, 1));
    const __m256i sc16 = _mm256_cvtepu8_epi16(sm);  // lanes 0..7 scales (lanes 8..15 mins, unused)
    const __m256i scs = _mm256_permute2x128_si256(sc16, sc16, 0x00);
    __m256i hbits;
    if constexpr (kFifthBit) hbits = load256(w[i].qh);
    __m256i isum = _mm256_setzero_si256();
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
      const __m256i plo = _mm256_maddubs_epi16(lo, load256(x[i].qs + 64 * c));
      const __m256i phi = _mm256_maddubs_epi16(hi, load256(x[i].qs + 64 * c + 32));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, scale_pair(scs, 2 * c, 2 * c)));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, scale_pair(scs, 2 * c + 1, 2 * c + 1)));
    }
    const float dy = x[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w[i].d) * dy), _mm256_cvtepi32_ps(isum), acc);
    acc_min = _mm_fmadd_ps(_mm_set1_ps(half(w[i].dmin) * dy), _mm_cvtepi32_ps(min_sum), acc_min);
  }
  return hsum(acc) - hsum(acc_min);
}

// Q6_K: element 128n + 32k + l takes its low nibble from ql[64n + 32(k%2) + l] (high nibble for k >= 2)
// and bits 2k..2k+1 of qh[32n + l]; q - 32 computed as q * y - 32 * bsums.
float dot_q6_K(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const auto* x = static_cast<const BlockQ8_K*>(xv);
  const __m256i top2 = _mm256_set1_epi8(0x30);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i sc16 = widen_signed(w[i].scales);
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load_bsums(x[i])), 5);
    __m256i isum = _mm256_setzero_si256();
    for (int n = 0; n < 2; ++n) {
      const __m256i scs = n == 0 ? _mm256_permute2x128_si256(sc16, sc16, 0x00)
                                 : _mm256_permute2x128_si256(sc16, sc16, 0x11);
      const __m256i ql0 = load256(w[i].ql + 64 * n);
      const __m256i ql1 = load256(w[i].ql + 64 * n + 32);
      const __m256i qh = load256(w[i].qh + 32 * n);
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low_nibbles()), _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2)),
          _mm256_or_si256(_mm256_and_si256(ql1, low_nibbles()), _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_nibbles()), _mm256_and_si256(qh, top2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_nibbles()),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2)),
      };
      for (int k = 0; k < 4; ++k) {
        const __m256i p = _mm256_maddubs_epi16(q[k], load256(x[i].qs + 128 * n + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(scs, 2 * k, 2 * k + 1)));
      }
    }
    isum = _mm256_sub_epi32(isum, offset);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half(w[i].d) * x[i].d), _mm256_cvtepi32_ps(isum), acc);
  }
  return hsum(acc);
}

}  // namespace

DotFn dot_avx2(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return &row_dot<kQK, dot_scaled<BlockQ4_0, BlockQ8_0, lanes_q4_0>>;
    case GgmlType::Q5_0: return &row_dot<kQK, dot_scaled<BlockQ5_0, BlockQ8_0, lanes_q5_0>>;
    case GgmlType::Q8_0: return &row_dot<kQK, dot_scaled<BlockQ8_0, BlockQ8_0, lanes_q8_0>>;
    case GgmlType::Q4_1: return &row_dot<kQK, dot_scaled_min<BlockQ4_1, lanes_q4_1>>;
    case GgmlType::Q5_1: return &row_dot<kQK, dot_scaled_min<BlockQ5_1, lanes_q5_1>>;
    case GgmlType::Q2_K: return &row_dot<kQKK, dot_q2_K>;
    case GgmlType::Q3_K: return &row_dot<kQKK, dot_q3_K>;
    case GgmlType::Q4_K: return &row_dot<kQKK, dot_q45_K<false, BlockQ4_K>>;
    case GgmlType::Q5_K: return &row_dot<kQKK, dot_q45_K<true, BlockQ5_K>>;
    case GgmlType::Q6_K: return &row_dot<kQKK, dot_q6_K>;
    default: return float_dot<Vec8>(type);
  }
}

QuantizeFn quantizer_avx2(GgmlType act_type) { return activation_quantizer<Vec8>(act_type); }

}  // namespace moe::quant::detail
