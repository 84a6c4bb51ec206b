// dot_avx512.cpp: AVX-512 (F+BW+VL+DQ+VNNI) dot products against 8-bit activations of the block formats
// matmul runs row by row on AVX-512 (the legacy formats, Q5_K; Q2_K, Q3_K, Q4_K and Q6_K run on the lane
// kernels, lanes_avx512.cpp, and Q6_K's kernels here serve one-row callers), one row or many tokens at a
// time; the float dot products and activation quantizers are quant/vec_kernels.h's, instantiated here
// for 16 lanes. Compiled with the AVX-512 flags and only called when the CPU has them (quant.cpp
// dispatches through util/cpu.h); nothing here runs at static init.
//
// Decode is bound by memory bandwidth, so each kernel is shaped to spend few instructions per weight byte:
// - VNNI _mm512_dpbusd_epi32 multiplies UNSIGNED weight bytes by SIGNED activation bytes and adds groups
//   of four into int32 lanes, without saturation. Weight levels are therefore kept non-negative; offsets
//   (Q4_0's q - 8, Q6_K's q - 32, ...) become "- offset * sum(y)", with sum(y) from a second dpbusd
//   (legacy formats) or the activation block's bsums (K-quants). Exact for every input byte.
// - Legacy formats (32 values per block) are done two blocks per 512-bit register, and two such pairs
//   per loop step into separate accumulators, so no multiply-add waits on the previous one; the four
//   blocks' fp16 scales come out of two word permutes rather than sixteen scalar loads.
// - K-quants: each dpbusd lane holds 4 products of one 16- or 32-value sub-block, at most
//   4 * 63 * 128 = 32256 in magnitude, so it fits int16 and the sub-block scale is applied by VNNI
//   _mm512_dpwssd_epi32 against int32 lanes holding the scale in their low 16 bits (high half zero).
//   The whole super-block stays in int32 and becomes float once (see quant/ref.h).
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
#include "quant/vec_kernels.h"
#include "util/fp16.h"

namespace moe::quant::detail {
namespace {

// ---------------------------------------------------------------------------------------------- helpers

inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
// 32 bytes at p in both halves of a 512-bit register.
inline __m512i broadcast256(const void* p) { return _mm512_broadcast_i64x4(load256(p)); }
// 32 bytes at a in the low half, 32 at b in the high half.
inline __m512i load_pair(const void* a, const void* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(a)), load256(b), 1);
}

inline float half(uint16_t h) { return _cvtsh_ss(h); }

// sum over groups of four of u[k] * s[k], u unsigned bytes, s signed bytes, into 16 fresh int32 lanes.
inline __m512i dot4(__m512i u, __m512i s) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s); }

// ------------------------------------------------------------------------------------ legacy formats

// The nibbles of two legacy blocks, 128-bit lanes [low nibbles 0, high nibbles 0, low 1, high 1]: the
// element order of the activations of the two blocks side by side.
inline __m512i nibble_pair(const uint8_t* qs0, const uint8_t* qs1) {
  const __m256i qs = _mm256_inserti128_si256(_mm256_castsi128_si256(load128(qs0)), load128(qs1), 1);
  const __m512i both = _mm512_castsi256_si512(qs);
  __m512i dup = _mm512_shuffle_i64x2(both, both, _MM_SHUFFLE(1, 1, 0, 0));  // [qs0, qs0, qs1, qs1]
  dup = _mm512_mask_srli_epi16(dup, 0xFF00FF00u, dup, 4);                      // lanes 1 and 3 >> 4
  return _mm512_and_si512(dup, _mm512_set1_epi8(0x0F));
}

// 16 in byte j of the pair where bit j of qh0 (j < 32) or of qh1 (j >= 32) is set: the fifth bits.
inline __m512i fifth_bit_pair(const uint8_t* qh0, const uint8_t* qh1) {
  const uint64_t bits = read_u32(qh0) | static_cast<uint64_t>(read_u32(qh1)) << 32;
  return _mm512_maskz_mov_epi8(_cvtu64_mask64(bits), _mm512_set1_epi8(16));
}

// Integer lanes of two blocks (lanes 0..7 block 0, 8..15 block 1) for each legacy weight format.
inline __m512i lanes_q4_0(const BlockQ4_0& w0, const BlockQ4_0& w1, const BlockQ8_0& x0, const BlockQ8_0& x1) {
  const __m512i y = load_pair(x0.qs, x1.qs);
  return _mm512_sub_epi32(dot4(nibble_pair(w0.qs, w1.qs), y), dot4(_mm512_set1_epi8(8), y));
}

inline __m512i lanes_q5_0(const BlockQ5_0& w0, const BlockQ5_0& w1, const BlockQ8_0& x0, const BlockQ8_0& x1) {
  const __m512i y = load_pair(x0.qs, x1.qs);
  const __m512i q = _mm512_or_si512(nibble_pair(w0.qs, w1.qs), fifth_bit_pair(w0.qh, w1.qh));
  return _mm512_sub_epi32(dot4(q, y), dot4(_mm512_set1_epi8(16), y));
}

// Signed weights made unsigned by flipping the sign bit (w + 128), then 128 * sum(y) taken back off.
inline __m512i lanes_q8_0(const BlockQ8_0& w0, const BlockQ8_0& w1, const BlockQ8_0& x0, const BlockQ8_0& x1) {
  const __m512i y = load_pair(x0.qs, x1.qs);
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i u = _mm512_xor_si512(load_pair(w0.qs, w1.qs), bias);
  return _mm512_sub_epi32(dot4(u, y), dot4(bias, y));
}

inline __m512i lanes_q4_1(const BlockQ4_1& w0, const BlockQ4_1& w1, const BlockQ8_1& x0, const BlockQ8_1& x1) {
  return dot4(nibble_pair(w0.qs, w1.qs), load_pair(x0.qs, x1.qs));
}

inline __m512i lanes_q5_1(const BlockQ5_1& w0, const BlockQ5_1& w1, const BlockQ8_1& x0, const BlockQ8_1& x1) {
  const __m512i q = _mm512_or_si512(nibble_pair(w0.qs, w1.qs), fifth_bit_pair(w0.qh, w1.qh));
  return dot4(q, load_pair(x0.qs, x1.qs));
}

template <typename WB, typename XB>
using PairLanes = __m512i (*)(const WB&, const WB&, const XB&, const XB&);

// The scales of a group of four consecutive blocks, gathered with two word permutes instead of sixteen
// scalar loads: the group's bytes are read as two 64-byte registers, bytes [0, 64) and
// [second_start, second_start + 64) (which never pass the group's end), and vpermt2w picks the fp16
// field of each block. Field f (a byte offset: 0 for d, 2 for m or s) of block k is at k * size + f.
template <typename Block>
constexpr int second_start() {
  constexpr int kSpan = 4 * static_cast<int>(sizeof(Block));
  static_assert(kSpan >= 64, "a group of four blocks must fill a 64-byte register");
  return kSpan - 64 < 64 ? kSpan - 64 : 64;
}

template <typename Block>
constexpr int16_t half_index(int k, int field) {
  const int at = k * static_cast<int>(sizeof(Block)) + field;
  static_assert(3 * sizeof(Block) + 4 <= second_start<Block>() + 64, "every scale must be in one register");
  return static_cast<int16_t>(at + 2 <= 64 ? at / 2 : 32 + (at - second_start<Block>()) / 2);
}

// 8 words of the group picked by `index` (word indices into the two registers), in the low 128 bits.
template <typename Block>
inline __m128i group_halves(const Block* blocks, __m512i index) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(blocks);
  const __m512i lo = load512(bytes), hi = load512(bytes + second_start<Block>());
  return _mm512_castsi512_si128(_mm512_permutex2var_epi16(lo, index, hi));
}

template <typename Block>
inline __m512i index_of_d() {
  return _mm512_setr_epi32(static_cast<uint16_t>(half_index<Block>(0, 0)) | half_index<Block>(1, 0) << 16,
                           static_cast<uint16_t>(half_index<Block>(2, 0)) | half_index<Block>(3, 0) << 16, 0, 0, 0,
                           0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

// [d0, f0, d1, f1, d2, f2, d3, f3] with f the half after d (Q4_1/Q5_1's m, Q8_1's s).
template <typename Block>
inline __m512i index_of_d_and_next() {
  auto pair = [](int k) {
    return static_cast<int>(static_cast<uint16_t>(half_index<Block>(k, 0)) |
                            static_cast<uint32_t>(static_cast<uint16_t>(half_index<Block>(k, 2))) << 16);
  };
  return _mm512_setr_epi32(pair(0), pair(1), pair(2), pair(3), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

// Lanes 0..7 = lane a of v, lanes 8..15 = lane b (the scale of a pair of blocks from a group's four).
inline __m512 spread(__m256 v, int a, int b) {
  const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi32(a), _mm256_set1_epi32(b), 1);
  return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(v));
}

// sum over blocks of (d_w * d_x) * isum [+ m_w * s_x when kMin], four blocks per step: two pairs into
// two accumulators. The last 1..3 blocks are copied into a zero-filled group (zero scales: they add 0).
template <typename WB, typename XB, PairLanes<WB, XB> Lanes, bool kMin>
float dot_legacy(const void* wv, const void* xv, int64_t nb) {
  const auto* w = static_cast<const WB*>(wv);
  const auto* x = static_cast<const XB*>(xv);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m256 acc_min = _mm256_setzero_ps();
  auto group = [&](const WB* g, const XB* h) {
    __m256 s;  // the four blocks' d_w * d_x (lanes 0..3), or d_w * d_x and m_w * s_x interleaved
    if constexpr (kMin) {
      const __m256 fw = _mm256_cvtph_ps(group_halves(g, index_of_d_and_next<WB>()));
      const __m256 fx = _mm256_cvtph_ps(group_halves(h, index_of_d_and_next<XB>()));
      s = _mm256_mul_ps(fw, fx);
      acc_min = _mm256_add_ps(acc_min, s);  // odd lanes are the m_w * s_x
    } else {
      const __m128i both = _mm_unpacklo_epi64(group_halves(g, index_of_d<WB>()), group_halves(h, index_of_d<XB>()));
      const __m256 f = _mm256_cvtph_ps(both);  // [dw0..dw3, dx0..dx3]
      s = _mm256_castps128_ps256(_mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1)));
    }
    constexpr int kStride = kMin ? 2 : 1;
    acc0 = _mm512_fmadd_ps(spread(s, 0, kStride), _mm512_cvtepi32_ps(Lanes(g[0], g[1], h[0], h[1])), acc0);
    acc1 = _mm512_fmadd_ps(spread(s, 2 * kStride, 3 * kStride), _mm512_cvtepi32_ps(Lanes(g[2], g[3], h[2], h[3])),
                           acc1);
  };
  int64_t i = 0;
  for (; i + 4 <= nb; i += 4) group(w + i, x + i);
  if (i < nb) {
    WB tail_w[4] = {};
    XB tail_x[4] = {};
    std::memcpy(tail_w, w + i, static_cast<size_t>(nb - i) * sizeof(WB));
    std::memcpy(tail_x, x + i, static_cast<size_t>(nb - i) * sizeof(XB));
    group(tail_w, tail_x);
  }
  float sum = hsum(_mm512_add_ps(acc0, acc1));
  if constexpr (kMin) {
    const __m256 odd = _mm256_movehdup_ps(acc_min);  // lanes 2k hold lane 2k + 1
    const __m128 m = _mm_add_ps(_mm256_castps256_ps128(odd), _mm256_extractf128_ps(odd, 1));
    sum += _mm_cvtss_f32(m) + _mm_cvtss_f32(_mm_movehl_ps(m, m));
  }
  return sum;
}

// ------------------------------------------------------------------------------------------ K-quants
// A "chunk" is 64 consecutive values of a super-block: one 512-bit register of weight levels matching
// 64 contiguous activation bytes.

// int32 lanes holding each scale's 16-bit pattern (high half zero), for dpwssd.
inline __m512i scale_lanes(__m128i scales8, bool is_signed) {
  return is_signed ? _mm512_cvtepu16_epi32(_mm256_cvtepi8_epi16(scales8)) : _mm512_cvtepu8_epi32(scales8);
}

// Lanes 4k..4k+3 take scale 4c + k (16-value sub-blocks) ...
inline __m512i scales_of_chunk16(__m512i scales, int c) {
  return _mm512_permutexvar_epi32(
      _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), _mm512_set1_epi32(4 * c)),
      scales);
}
// ... or lanes 0..7 scale 2c and 8..15 scale 2c + 1 (32-value sub-blocks).
inline __m512i scales_of_chunk32(__m512i scales, int c) {
  return _mm512_permutexvar_epi32(
      _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), _mm512_set1_epi32(2 * c)),
      scales);
}

// Mask of the upper 32 bytes (as 16-bit elements, for the masked shifts).
constexpr __mmask32 kUpperHalf16 = 0xFFFF0000u;

// Bytes of the lower half = 1 << lo, of the upper half = 1 << hi (bit selectors for test_epi8_mask).
inline __m512i bit_select(int lo, int hi) {
  return _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << lo)),
                            _mm256_set1_epi8(static_cast<char>(1 << hi)), 1);
}

inline __m256i load_bsums(const BlockQ8_K& y) { return load256(y.bsums); }

// int32 of the eight lanes of madd(a, b) (16 int16 products summed in pairs), zero-extended to 16 lanes.
inline __m512i madd_wide(__m256i a, __m256i b) { return _mm512_zextsi256_si512(_mm256_madd_epi16(a, b)); }

// -------------------------------------------------------------------- many tokens against one weight row
// Prefill and batched decode multiply each weight row by many tokens' activations. These kernels unpack a
// super-block's levels and scales once into registers and apply them to NT tokens, instead of once per
// token, and per token perform the same operations in the same order whatever NT is (the integer sums
// are exact in any order; the float steps are the same fmadds on the same values). The single-token
// kernel of Q5_K and Q6_K is the group of one (dot_one below), so every result is bit-identical to
// vec_dot of that token alone: batching cannot change an answer. In matmul, Q2_K, Q3_K, Q4_K and Q6_K
// run on the sub-block lane kernels (lanes_avx512.cpp), and the legacy formats loop over their one-row
// kernels.

// Q5_K: chunk c = sub-blocks 2c (low nibbles of qs[32c ..]) and 2c + 1 (high nibbles), plus bit 2c /
// 2c + 1 of qh[l] as the fifth bit. Each min covers 32 values = two bsums: madd of [b0, b1, ...] with
// [m0, m0, m1, m1, ...]; scale lanes 0..7 are the scales (8..15 the mins, never selected).
template <int NT>
void dot_q5_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ5_K*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  __m512 acc[NT];
  __m256 acc_min[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps(), acc_min[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i sm = k4_scales_mins(w[i].scales);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
    const __m512i scales = scale_lanes(sm, false);
    const __m512i hbits = broadcast256(w[i].qh);
    __m512i q[4], sc[4];
    MOE_UNROLL
    for (int c = 0; c < 4; ++c) {
      q[c] = broadcast256(w[i].qs + 32 * c);
      q[c] = _mm512_and_si512(_mm512_mask_srli_epi16(q[c], kUpperHalf16, q[c], 4), _mm512_set1_epi8(0x0F));
      const __mmask64 high = _mm512_test_epi8_mask(hbits, bit_select(2 * c, 2 * c + 1));
      q[c] = _mm512_mask_add_epi8(q[c], high, q[c], _mm512_set1_epi8(16));
      sc[c] = scales_of_chunk32(scales, c);
    }
    const float dw = half(w[i].d), dm = half(w[i].dmin);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      __m512i part[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      MOE_UNROLL
      for (int c = 0; c < 4; ++c) part[c % 2] = _mm512_dpwssd_epi32(part[c % 2], dot4(q[c], load512(y.qs + 64 * c)), sc[c]);
      const __m256i min_sum = _mm256_madd_epi16(mins, load_bsums(y));
      const float dy = y.d;
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dw * dy), _mm512_cvtepi32_ps(_mm512_add_epi32(part[0], part[1])), acc[t]);
      acc_min[t] = _mm256_fmadd_ps(_mm256_set1_ps(dm * dy), _mm256_cvtepi32_ps(min_sum), acc_min[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]) - hsum(acc_min[t]);
}

// Q6_K: in half n, chunk 2n holds values 128n + 0..63: low nibbles of ql[64n .. 64n + 63] with bits
// 0-1 (first 32) / 2-3 (last 32) of qh[32n + l]; chunk 2n + 1 the high nibbles with bits 4-5 / 6-7.
// Level - 32 is taken as level * y - 32 * bsums.
template <int NT>
void dot_q6_K_tokens(const void* wv, const uint8_t* xv, size_t stride, int64_t nb, float* out, size_t out_stride) {
  const auto* w = static_cast<const BlockQ6_K*>(wv);
  const BlockQ8_K* x[NT];
  token_rows<NT>(xv, stride, x);
  const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
  __m512 acc[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m128i sc8 = load128(w[i].scales);
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m512i scales = scale_lanes(sc8, true);
    __m512i q[4], sc[4];  // chunk 2n: low nibbles of half n; chunk 2n + 1: its high nibbles
    MOE_UNROLL
    for (int n = 0; n < 2; ++n) {
      const __m512i ql = load512(w[i].ql + 64 * n);
      __m512i qh = broadcast256(w[i].qh + 32 * n);
      qh = _mm512_mask_srli_epi16(qh, kUpperHalf16, qh, 2);
      q[2 * n] = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_slli_epi16(qh, 4), top2));
      q[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), _mm512_and_si512(qh, top2));
      sc[2 * n] = scales_of_chunk16(scales, 2 * n);
      sc[2 * n + 1] = scales_of_chunk16(scales, 2 * n + 1);
    }
    const float dw = half(w[i].d);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const BlockQ8_K& y = x[t][i];
      const __m512i offset = _mm512_slli_epi32(madd_wide(sc16, load_bsums(y)), 5);
      // part[0] takes the low-nibble chunks, part[1] the high ones.
      __m512i part[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      MOE_UNROLL
      for (int c = 0; c < 4; ++c) part[c % 2] = _mm512_dpwssd_epi32(part[c % 2], dot4(q[c], load512(y.qs + 64 * c)), sc[c]);
      const __m512i isum = _mm512_sub_epi32(_mm512_add_epi32(part[0], part[1]), offset);
      acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dw * y.d), _mm512_cvtepi32_ps(isum), acc[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]);
}

// One kernel per group size 1..kTokenGroup; a row's tokens go through in groups of kTokenGroup and a
// smaller last group. Eight tokens keep the accumulators and the unpacked block in the 32 registers.
constexpr int kTokenGroup = 8;
using TokensKernel = void (*)(const void*, const uint8_t*, size_t, int64_t, float*, size_t);

template <template <int> class K, int... I>
constexpr auto kernel_table(std::integer_sequence<int, I...>) {
  return std::array<TokensKernel, sizeof...(I)>{&K<I + 1>::run...};
}

template <int NT> struct Q5KTokens { static void run(const void* w, const uint8_t* x, size_t s, int64_t nb, float* o, size_t os) { dot_q5_K_tokens<NT>(w, x, s, nb, o, os); } };
template <int NT> struct Q6KTokens { static void run(const void* w, const uint8_t* x, size_t s, int64_t nb, float* o, size_t os) { dot_q6_K_tokens<NT>(w, x, s, nb, o, os); } };

// Any number of tokens through K's group kernels: groups of kTokenGroup, then a smaller last group.
template <template <int> class K>
void dot_tokens_grouped(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok, float* out,
                        size_t out_stride) {
  static constexpr auto kernels = kernel_table<K>(std::make_integer_sequence<int, kTokenGroup>{});
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t t0 = 0; t0 < n_tok; t0 += kTokenGroup) {
    const int64_t nt = std::min<int64_t>(kTokenGroup, n_tok - t0);
    kernels[static_cast<size_t>(nt - 1)](w, xb + static_cast<size_t>(t0) * x_stride, x_stride, n / kQKK,
                                         out + static_cast<size_t>(t0) * out_stride, out_stride);
  }
}

// One row and one token: K's group of one.
template <template <int> class K>
float dot_one(int64_t n, const void* w, const void* x) {
  float out;
  K<1>::run(w, static_cast<const uint8_t*>(x), 0, n / kQKK, &out, 1);
  return out;
}

}  // namespace

DotFn dot_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return &row_dot<kQK, dot_legacy<BlockQ4_0, BlockQ8_0, lanes_q4_0, false>>;
    case GgmlType::Q5_0: return &row_dot<kQK, dot_legacy<BlockQ5_0, BlockQ8_0, lanes_q5_0, false>>;
    case GgmlType::Q8_0: return &row_dot<kQK, dot_legacy<BlockQ8_0, BlockQ8_0, lanes_q8_0, false>>;
    case GgmlType::Q4_1: return &row_dot<kQK, dot_legacy<BlockQ4_1, BlockQ8_1, lanes_q4_1, true>>;
    case GgmlType::Q5_1: return &row_dot<kQK, dot_legacy<BlockQ5_1, BlockQ8_1, lanes_q5_1, true>>;
    // Q2_K, Q3_K and Q4_K: none. matmul runs them on the lane kernels (lanes_avx512.cpp); one-row
    // callers get the AVX2 kernels, which streamed as fast (BENCHMARKS.md, dot-product kernels).
    case GgmlType::Q5_K: return &dot_one<Q5KTokens>;
    case GgmlType::Q6_K: return &dot_one<Q6KTokens>;
    default: return float_dot<Vec16>(type);
  }
}

DotTokensFn dot_tokens_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q5_K: return &dot_tokens_grouped<Q5KTokens>;
    case GgmlType::Q6_K: return &dot_tokens_grouped<Q6KTokens>;
    default: return nullptr;
  }
}

QuantizeFn quantizer_avx512(GgmlType act_type) { return activation_quantizer<Vec16>(act_type); }

}  // namespace moe::quant::detail
