// vec.h: Vec<8> (AVX2, 8 floats) and Vec<16> (AVX-512, 16 floats), the vector wrappers that
// quant/vec_kernels.h's width-generic kernels are instantiated with. Each operation is one line naming
// both widths' instruction, so the two can be read against each other; a file instantiates only the width
// it is compiled for (Vec<8> in *_avx2.cpp, Vec<16> in *_avx512.cpp), and `if constexpr` keeps the other
// width's intrinsics out of its code.
//
// Everything is in an anonymous namespace: each including file gets its own copy compiled with its own
// flags, so the linker never merges an AVX-512 copy into code an AVX2-only CPU runs.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace moe::quant::detail {
namespace {

// Horizontal sum of 8 floats in a fixed order: halves, then pairs, then the last two.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The register types of each width (a specialization, not std::conditional: the vector types' attributes
// would be dropped as template arguments).
template <int kWidth> struct VecTypes;
template <> struct VecTypes<8> { using F = __m256; using I = __m256i; };
template <> struct VecTypes<16> { using F = __m512; using I = __m512i; };

template <int kWidth>
struct Vec {
  static_assert(kWidth == 8 || kWidth == 16);
  static constexpr int kLanes = kWidth;
  static constexpr bool k512 = kWidth == 16;
  using F = typename VecTypes<kWidth>::F;  // kWidth floats
  using I = typename VecTypes<kWidth>::I;  // kWidth int32

  static F zero() { if constexpr (k512) return _mm512_setzero_ps(); else return _mm256_setzero_ps(); }
  static F splat(float v) { if constexpr (k512) return _mm512_set1_ps(v); else return _mm256_set1_ps(v); }
  static F load(const float* p) { if constexpr (k512) return _mm512_loadu_ps(p); else return _mm256_loadu_ps(p); }
  // kWidth halves (F16) or bfloat16s (BF16) widened exactly.
  static F load_f16(const uint16_t* p) {
    if constexpr (k512) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    else return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F load_bf16(const uint16_t* p) {
    if constexpr (k512)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    else
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static F add(F a, F b) { if constexpr (k512) return _mm512_add_ps(a, b); else return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { if constexpr (k512) return _mm512_sub_ps(a, b); else return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { if constexpr (k512) return _mm512_mul_ps(a, b); else return _mm256_mul_ps(a, b); }
  static F fmadd(F a, F b, F c) { if constexpr (k512) return _mm512_fmadd_ps(a, b, c); else return _mm256_fmadd_ps(a, b, c); }
  // vmaxps / vminps return the SECOND operand when either is NaN (the kernels rely on it).
  static F max(F a, F b) { if constexpr (k512) return _mm512_max_ps(a, b); else return _mm256_max_ps(a, b); }
  static F min(F a, F b) { if constexpr (k512) return _mm512_min_ps(a, b); else return _mm256_min_ps(a, b); }
  static F abs(F v) { return and_(v, splat_bits(0x7FFFFFFF)); }
  static F sign_one(F v) { return or_(and_(v, splat(-0.0f)), splat(1.0f)); }  // +-1 with v's sign
  static F trunc(F v) { return round<_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC>(v); }
  static F nearest_even(F v) { return round<_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC>(v); }
  // base + (test >= bound ? addend : 0), lane by lane.
  static F add_where_ge(F base, F test, float bound, F addend) {
    if constexpr (k512) return _mm512_mask_add_ps(base, _mm512_cmp_ps_mask(test, splat(bound), _CMP_GE_OQ), base, addend);
    else return _mm256_add_ps(base, _mm256_and_ps(_mm256_cmp_ps(test, splat(bound), _CMP_GE_OQ), addend));
  }
  // Bit i set where lane i of a equals lane i of b.
  static unsigned eq_mask(F a, F b) {
    if constexpr (k512) return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ);
    else return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)));
  }
  // The sum of the lanes in a fixed order: halves down to 8 lanes, then hsum. (AVX-512 halves by
  // extract: GCC 12's _mm512_castps512_ps256 and _mm512_reduce_add_ps trip -Wuninitialized in its header.)
  static float reduce_add(F v) {
    if constexpr (k512) return hsum(_mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1)));
    else return hsum(v);
  }
  static float reduce_max(F v) {  // callers pass no NaN, so the order is moot
    if constexpr (k512) {
      return _mm512_reduce_max_ps(v);
    } else {
      __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      s = _mm_max_ps(s, _mm_movehl_ps(s, s));
      return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
    }
  }

  static I zero_i() { if constexpr (k512) return _mm512_setzero_si512(); else return _mm256_setzero_si256(); }
  static I to_int(F v) { if constexpr (k512) return _mm512_cvttps_epi32(v); else return _mm256_cvttps_epi32(v); }
  static I add_i(I a, I b) { if constexpr (k512) return _mm512_add_epi32(a, b); else return _mm256_add_epi32(a, b); }
  static int reduce_add_i(I v) {
    if constexpr (k512) {
      return _mm512_reduce_add_epi32(v);
    } else {
      __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
      return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1))));
    }
  }
  // The lanes (each in [-128, 127]) as kWidth bytes at dst.
  static void store_i8(int8_t* dst, I q) {
    if constexpr (k512) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtsepi32_epi8(q));
    } else {
      const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packs_epi16(words, words));
    }
  }

 private:
  static F splat_bits(int bits) {
    if constexpr (k512) return _mm512_castsi512_ps(_mm512_set1_epi32(bits)); else return _mm256_castsi256_ps(_mm256_set1_epi32(bits));
  }
  static F and_(F a, F b) { if constexpr (k512) return _mm512_and_ps(a, b); else return _mm256_and_ps(a, b); }
  static F or_(F a, F b) { if constexpr (k512) return _mm512_or_ps(a, b); else return _mm256_or_ps(a, b); }
  template <int kMode>
  static F round(F v) { if constexpr (k512) return _mm512_roundscale_ps(v, kMode); else return _mm256_round_ps(v, kMode); }
};

using Vec8 = Vec<8>;    // AVX2 + FMA + F16C
using Vec16 = Vec<16>;  // AVX-512 F + BW + VL + DQ

#ifdef __AVX512F__
inline float hsum(__m512 v) { return Vec16::reduce_add(v); }
#endif

}  // namespace
}  // namespace moe::quant::detail
