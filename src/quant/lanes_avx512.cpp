// lanes_avx512.cpp: the AVX-512 VNNI kernels of the sub-block lane path (layout and rationale in
// quant/lanes.h). Per tile of one weight row: build the rounds (each 64 weight levels, 4 from each of
// 16 sub-blocks) with permutes, and the 16 lane scales in float; then for each of up to 8 tokens run one
// dpbusd per round into int32 lanes and fold the tile in with 4 float instructions (more tokens: the
// rows are unpacked once into scratch for a 2-row x 4-token micro-kernel, further down). The per-token
// instructions are the same for every group size, so a token's result never depends on its neighbours.
//
// Lane s of a tile is always sub-block s of the tile (values 16s.. for S = 16, 32s.. for S = 32); the
// index vectors below say where in the GGUF block the 4 bytes of round r of lane s live, derived in
// each kernel's comment from the block layout (quant/blocks.h, quant/dequant_ref.cpp).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "quant/blocks.h"
#include "quant/kquant_scales.h"
#include "quant/lanes.h"
#include "quant/simd.h"
#include "quant/vec.h"

namespace moe::quant::detail {
namespace {

#define MOE_UNROLL _Pragma("GCC unroll 16")

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m512i lanes_of(const std::array<int, 16>& v) { return _mm512_loadu_si512(v.data()); }
inline float half(uint16_t h) { return _cvtsh_ss(h); }

// 16 int8 (signed) or uint8 as 16 floats.
inline __m512 floats_i8(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }
inline __m512 floats_u8(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }

// Per-lane constants built from (n, m, h) = (s / 8, (s % 8) / 2, s % 2) for the 16-value sub-block
// kernels, or from g = (s % 8) / 2 for Q4_K.
template <typename F>
constexpr std::array<int, 16> per_lane(F f) {
  std::array<int, 16> a{};
  for (int s = 0; s < 16; ++s) a[static_cast<size_t>(s)] = f(s / 8, (s % 8) / 2, s % 2);
  return a;
}

// ---- Q4_K: S = 32, a tile is super-blocks 2p and 2p + 1 (lanes 0..7 and 8..15).
// Sub-block j of a block is the low (even j) or high (odd j) nibbles of qs[32 (j / 2) + l], l < 32, so
// round r of lane s takes dword 8 ((s % 8) / 2) + r of that block's qs, the high nibbles in odd lanes.
struct Q4K {
  static constexpr int kSub = 32;
  static int64_t tiles(int64_t nb) { return (nb + 1) / 2; }
  static void unpack(const void* wv, int64_t nb, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const auto* w = static_cast<const BlockQ4_K*>(wv);
    const BlockQ4_K& a = w[2 * p];
    const BlockQ4_K& b = 2 * p + 1 < nb ? w[2 * p + 1] : a;  // half tile: the activations there are zero
    // First regroup each block's 32 dwords by round half: lo = dwords 8g + r for r < 4 (g-major), hi the
    // same for r >= 4. Then round r is one two-table permute of (lo or hi of a, of b), each dword twice.
    static constexpr std::array<int, 16> kLoHalf = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    static constexpr auto kRound = per_lane([](int n, int m, int) { return 16 * n + 4 * m; });
    const __m512i lo_idx = lanes_of(kLoHalf), hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(4));
    const __m512i a0 = load512(a.qs), a1 = load512(a.qs + 64), b0 = load512(b.qs), b1 = load512(b.qs + 64);
    const __m512i by_half[2][2] = {{_mm512_permutex2var_epi32(a0, lo_idx, a1), _mm512_permutex2var_epi32(b0, lo_idx, b1)},
                                {_mm512_permutex2var_epi32(a0, hi_idx, a1), _mm512_permutex2var_epi32(b0, hi_idx, b1)}};
    const __m512i round_idx = lanes_of(kRound);
    MOE_UNROLL
    for (int r = 0; r < 8; ++r) {
      const __m512i idx = _mm512_add_epi32(round_idx, _mm512_set1_epi32(r % 4));
      __m512i q = _mm512_permutex2var_epi32(by_half[r / 4][0], idx, by_half[r / 4][1]);
      q = _mm512_mask_srli_epi32(q, 0xAAAA, q, 4);
      wq[r] = _mm512_and_si512(q, _mm512_set1_epi8(0x0F));
    }
    const __m128i sa = k4_scales_mins(a.scales), sb = k4_scales_mins(b.scales);
    const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(half(a.d)), _mm256_set1_ps(half(b.d)), 1);
    const __m512 dmin = _mm512_insertf32x8(_mm512_set1_ps(half(a.dmin)), _mm256_set1_ps(half(b.dmin)), 1);
    ws = _mm512_mul_ps(floats_u8(_mm_unpacklo_epi64(sa, sb)), d);
    wm = _mm512_mul_ps(floats_u8(_mm_unpackhi_epi64(sa, sb)), dmin);
  }
};

// ---- Q2_K: S = 16, one super-block per tile, lane s = 8n + 2j + h covers values 128n + 32j + 16h + l.
// Value 128n + 32j + l is bits 2j of qs[32n + l], so round r takes dword 8n + 4h + r shifted by 2j.
struct Q2K {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const BlockQ2_K& b = static_cast<const BlockQ2_K*>(wv)[p];
    static constexpr auto kBase = per_lane([](int n, int, int h) { return 8 * n + 4 * h; });
    static constexpr auto kShift = per_lane([](int, int j, int) { return 2 * j; });
    const __m512i qs = load512(b.qs), base = lanes_of(kBase), shift = lanes_of(kShift);
    MOE_UNROLL
    for (int r = 0; r < 4; ++r) {
      const __m512i q = _mm512_permutexvar_epi32(_mm512_add_epi32(base, _mm512_set1_epi32(r)), qs);
      wq[r] = _mm512_and_si512(_mm512_srlv_epi32(q, shift), _mm512_set1_epi8(3));
    }
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    const __m128i low4 = _mm_set1_epi8(0x0F);
    ws = _mm512_mul_ps(floats_u8(_mm_and_si128(packed, low4)), _mm512_set1_ps(half(b.d)));
    wm = _mm512_mul_ps(floats_u8(_mm_and_si128(_mm_srli_epi16(packed, 4), low4)), _mm512_set1_ps(half(b.dmin)));
  }
};

// ---- Q3_K: the low two bits as Q2_K; the third bit of value v is bit v / 32 of hmask[v % 32], i.e. for
// lane s = 8n + 2j + h, round r: bit 4n + j of hmask dword 4h + r. Level = low2 + 4 hbit - 4, taken as
// the unsigned low2 + 4 hbit with the 4 moved into the min term (wm = 4 * ws); scales are signed.
struct Q3K {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const BlockQ3_K& b = static_cast<const BlockQ3_K*>(wv)[p];
    static constexpr auto kBase = per_lane([](int n, int, int h) { return 8 * n + 4 * h; });
    static constexpr auto kShift = per_lane([](int, int j, int) { return 2 * j; });
    static constexpr auto kHBase = per_lane([](int, int, int h) { return 4 * h; });
    static constexpr auto kHShift = per_lane([](int n, int j, int) { return 4 * n + j; });
    const __m512i qs = load512(b.qs);
    const __m512i hm = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.hmask)));
    const __m512i base = lanes_of(kBase), shift = lanes_of(kShift), hbase = lanes_of(kHBase), hshift = lanes_of(kHShift);
    MOE_UNROLL
    for (int r = 0; r < 4; ++r) {
      const __m512i rr = _mm512_set1_epi32(r);
      const __m512i lo = _mm512_and_si512(
          _mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(base, rr), qs), shift), _mm512_set1_epi8(3));
      const __m512i hi = _mm512_and_si512(
          _mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(hbase, rr), hm), hshift), _mm512_set1_epi8(1));
      wq[r] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 2));
    }
    ws = _mm512_mul_ps(floats_i8(q3_K_scales(b.scales)), _mm512_set1_ps(half(b.d)));
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(4.0f));
  }
};

// ---- Repacked rows (lanes.h: repack_row): the rounds are stored in lane order, so a round is a load
// and an AND (a shift too for the upper rounds); scales as above, from the tile headers. Same values in
// the same registers as Q4K / Q2K build, so every result is the same bits.
struct Q4KRepacked {
  static constexpr int kSub = 32;
  static int64_t tiles(int64_t nb) { return (nb + 1) / 2; }
  static void unpack(const void* wv, int64_t nb, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const auto* row = static_cast<const uint8_t*>(wv);
    const bool full = 2 * p + 1 < nb;
    const uint8_t* q = row + static_cast<size_t>(p) * 288;
    const uint8_t* h = q + (full ? 256 : 128);
    // Software prefetch of every line 4 tiles (1152 bytes) ahead: without it this short loop streamed a
    // matrix from DRAM at 0.88-0.98x the permuting kernel's speed, with it 1.0-1.3x; in cache it costs
    // (0.75x at 1-2 tokens), but model weights are streamed (BENCHMARKS.md).
    MOE_UNROLL
    for (int l = 0; l < 5; ++l) _mm_prefetch(reinterpret_cast<const char*>(q + 4 * 288 + 64 * l), _MM_HINT_T0);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    MOE_UNROLL
    for (int k = 0; k < 4; ++k) {
      const __m512i v = full ? load512(q + 64 * k)
                             : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * k)));
      wq[k] = _mm512_and_si512(v, low4);
      wq[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    }
    // Header: scales of a (and b), then d, dmin of each; a half tile pairs block a with itself.
    const int halves = full ? 2 : 1;
    uint16_t dd[2], dm[2];
    std::memcpy(dd, h + 12 * halves, 2 * static_cast<size_t>(halves));
    std::memcpy(dm, h + 14 * halves, 2 * static_cast<size_t>(halves));
    if (!full) dd[1] = dd[0], dm[1] = dm[0];
    const __m128i sa = k4_scales_mins(h), sb = full ? k4_scales_mins(h + 12) : sa;
    const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(half(dd[0])), _mm256_set1_ps(half(dd[1])), 1);
    const __m512 dmin = _mm512_insertf32x8(_mm512_set1_ps(half(dm[0])), _mm256_set1_ps(half(dm[1])), 1);
    ws = _mm512_mul_ps(floats_u8(_mm_unpacklo_epi64(sa, sb)), d);
    wm = _mm512_mul_ps(floats_u8(_mm_unpackhi_epi64(sa, sb)), dmin);
  }
};

struct Q2KRepacked {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const auto* row = static_cast<const uint8_t*>(wv);
    const uint8_t* q = row + static_cast<size_t>(p) * 84;
    _mm_prefetch(reinterpret_cast<const char*>(q + 8 * 84), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q + 8 * 84 + 64), _MM_HINT_T0);
    const __m512i v = load512(q);
    const uint8_t* h = q + 64;
    const __m512i low2 = _mm512_set1_epi8(3);
    wq[0] = _mm512_and_si512(v, low2);
    wq[1] = _mm512_and_si512(_mm512_srli_epi32(v, 2), low2);
    wq[2] = _mm512_and_si512(_mm512_srli_epi32(v, 4), low2);
    wq[3] = _mm512_and_si512(_mm512_srli_epi32(v, 6), low2);
    uint16_t d, dmin;
    std::memcpy(&d, h + 16, 2);
    std::memcpy(&dmin, h + 18, 2);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
    const __m128i low4 = _mm_set1_epi8(0x0F);
    ws = _mm512_mul_ps(floats_u8(_mm_and_si128(packed, low4)), _mm512_set1_ps(half(d)));
    wm = _mm512_mul_ps(floats_u8(_mm_and_si128(_mm_srli_epi16(packed, 4), low4)), _mm512_set1_ps(half(dmin)));
  }
};

// ---- Q3_K repacked (lanes.h, repack_row): the low two bits as Q2KRepacked's, and each round's 64 third
// bits as one 64-bit mask (bit k = byte lane k), so round r is ((v >> 2r) & 3) | (4 in the bytes the
// mask selects): a shift, a zero-masked byte move (AVX-512BW) and one ternary-logic instruction, with
// no lane crossing. Levels low2 + 4 hbit, scales and wm = 4 ws exactly as Q3K builds them, so every
// result is the same bits.
struct Q3KRepacked {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static __mmask64 third_bits(const uint8_t* q, int r) {
    uint64_t m;
    std::memcpy(&m, q + 64 + 8 * r, 8);
    return _cvtu64_mask64(m);
  }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const auto* row = static_cast<const uint8_t*>(wv);
    const uint8_t* q = row + static_cast<size_t>(p) * 110;
    // 8 tiles ahead as Q2KRepacked; two lines a tile cover every line of the 110-byte tiles streamed.
    _mm_prefetch(reinterpret_cast<const char*>(q + 8 * 110), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q + 8 * 110 + 64), _MM_HINT_T0);
    const __m512i v = load512(q);
    const __m512i low2 = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
    const __m512i shifted[4] = {v, _mm512_srli_epi32(v, 2), _mm512_srli_epi32(v, 4), _mm512_srli_epi32(v, 6)};
    MOE_UNROLL
    for (int r = 0; r < 4; ++r)  // 0xEA: (shifted & low2) | third bit
      wq[r] = _mm512_ternarylogic_epi32(shifted[r], low2, _mm512_maskz_mov_epi8(third_bits(q, r), four), 0xEA);
    const uint8_t* h = q + 96;  // 12 scale bytes, d
    uint16_t d;
    std::memcpy(&d, h + 12, 2);
    ws = _mm512_mul_ps(floats_i8(q3_K_scales(h)), _mm512_set1_ps(half(d)));
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(4.0f));
  }
};

// One weight row against NT tokens. The products of a tile's rounds accumulate in two int32 chains
// (exact in any order: a lane sums at most 32 products of |level| <= 63 and |x| <= 128).
template <typename K, int NT>
void lanes_group(const void* w, int64_t nb, const uint8_t* x, size_t stride, float* out, size_t out_stride) {
  using Tile = LaneTile<K::kSub>;
  constexpr int kRounds = K::kSub / 4;
  const Tile* xt[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) xt[t] = reinterpret_cast<const Tile*>(x + static_cast<size_t>(t) * stride);
  __m512 acc[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const int64_t tiles = K::tiles(nb);
  for (int64_t p = 0; p < tiles; ++p) {
    __m512i wq[kRounds];
    __m512 ws, wm;
    K::unpack(w, nb, p, wq, ws, wm);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const Tile& y = xt[t][p];
      __m512i isum;
      if constexpr (NT <= 2) {  // few tokens: two chains so the dpbusd latency overlaps
        __m512i chain[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        MOE_UNROLL
        for (int r = 0; r < kRounds; ++r) chain[r % 2] = _mm512_dpbusd_epi32(chain[r % 2], wq[r], load512(y.q[r]));
        isum = _mm512_add_epi32(chain[0], chain[1]);
      } else {  // the other tokens' chains overlap it
        isum = _mm512_setzero_si512();
        MOE_UNROLL
        for (int r = 0; r < kRounds; ++r) isum = _mm512_dpbusd_epi32(isum, wq[r], load512(y.q[r]));
      }
      __m512 v = _mm512_mul_ps(ws, _mm512_cvtepi32_ps(isum));
      v = _mm512_fnmadd_ps(wm, _mm512_loadu_ps(y.bs), v);
      acc[t] = _mm512_fmadd_ps(v, _mm512_loadu_ps(y.dy), acc[t]);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) out[static_cast<size_t>(t) * out_stride] = hsum(acc[t]);
}

constexpr int kGroup = 8;  // tokens per group: 8 accumulators + 8 rounds + scales fit the 32 registers
using GroupKernel = void (*)(const void*, int64_t, const uint8_t*, size_t, float*, size_t);

template <typename K, int... I>
constexpr std::array<GroupKernel, sizeof...(I)> group_table(std::integer_sequence<int, I...>) {
  return {&lanes_group<K, I + 1>...};
}

template <typename K>
const GroupKernel* group_kernels() {
  static constexpr auto table = group_table<K>(std::make_integer_sequence<int, kGroup>{});
  return table.data();
}

// ---- many rows x many tokens: a register-blocked micro-kernel over rows unpacked once.
// For a matmul of more than kGroup tokens the unpack above would be repeated for every group of tokens; instead each row is
// unpacked once into per-thread scratch (rounds and lane scales, 1.25-1.5 bytes per weight, L1/L2
// resident) and a micro-kernel of R rows x T tokens reads it: each activation round loaded is used by R
// rows and each weight round by T tokens, so neither operand's loads nor the unpack bound the loop, and
// per 512 products there remain one dpbusd plus a share of the 4 float instructions per tile.
// The per-(row, token) arithmetic is exactly lanes_group's (same int sum, same ws/wm, same float steps
// in the same order), so a token's result is the same bits on either path.

template <typename K>
struct alignas(64) Slot {
  __m512i wq[K::kSub / 4];
  __m512 ws, wm;
};

template <typename K>
void unpack_row(const void* w, int64_t nb, Slot<K>* out) {
  const int64_t tiles = K::tiles(nb);
  for (int64_t p = 0; p < tiles; ++p) K::unpack(w, nb, p, out[p].wq, out[p].ws, out[p].wm);
}

template <typename K, int R, int T>
void micro(const Slot<K>* const* rows, int64_t tiles, const uint8_t* x, size_t stride, float* y, size_t y_stride) {
  using Tile = LaneTile<K::kSub>;
  constexpr int kRounds = K::kSub / 4;
  const Tile* xt[T];
  MOE_UNROLL
  for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const Tile*>(x + static_cast<size_t>(t) * stride);
  __m512 acc[R][T];
  MOE_UNROLL
  for (int i = 0; i < R; ++i)
    MOE_UNROLL
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t p = 0; p < tiles; ++p) {
    __m512i isum[R][T];
    MOE_UNROLL
    for (int i = 0; i < R; ++i)
      MOE_UNROLL
      for (int t = 0; t < T; ++t) isum[i][t] = _mm512_setzero_si512();
    MOE_UNROLL
    for (int r = 0; r < kRounds; ++r) {
      __m512i xv[T];
      MOE_UNROLL
      for (int t = 0; t < T; ++t) xv[t] = load512(xt[t][p].q[r]);
      MOE_UNROLL
      for (int i = 0; i < R; ++i) {
        const __m512i wv = _mm512_load_si512(&rows[i][p].wq[r]);
        MOE_UNROLL
        for (int t = 0; t < T; ++t) isum[i][t] = _mm512_dpbusd_epi32(isum[i][t], wv, xv[t]);
      }
    }
    MOE_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512 ws = rows[i][p].ws, wm = rows[i][p].wm;
      MOE_UNROLL
      for (int t = 0; t < T; ++t) {
        __m512 v = _mm512_mul_ps(ws, _mm512_cvtepi32_ps(isum[i][t]));
        v = _mm512_fnmadd_ps(wm, _mm512_loadu_ps(xt[t][p].bs), v);
        acc[i][t] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xt[t][p].dy), acc[i][t]);
      }
    }
  }
  MOE_UNROLL
  for (int i = 0; i < R; ++i)
    MOE_UNROLL
    for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * y_stride + static_cast<size_t>(i)] = hsum(acc[i][t]);
}

constexpr int kMicroRows = 2, kMicroTokens = 4;

template <typename K, int R>
void micro_any(int T, const Slot<K>* const* rows, int64_t tiles, const uint8_t* x, size_t stride, float* y,
               size_t y_stride) {
  switch (T) {
    case 1: return micro<K, R, 1>(rows, tiles, x, stride, y, y_stride);
    case 2: return micro<K, R, 2>(rows, tiles, x, stride, y, y_stride);
    case 3: return micro<K, R, 3>(rows, tiles, x, stride, y, y_stride);
    default: return micro<K, R, 4>(rows, tiles, x, stride, y, y_stride);
  }
}

template <typename K>
void rows_kernel(const uint8_t* w, size_t w_row_bytes, int64_t n_rows, int64_t nb, const uint8_t* x, size_t stride,
                 int64_t n_tok, float* y, size_t y_stride) {
  if (n_tok <= kGroup) {  // decode and small batches: unpack straight into registers, once per row
    const GroupKernel kernel = group_kernels<K>()[n_tok - 1];
    for (int64_t i = 0; i < n_rows; ++i) kernel(w + static_cast<size_t>(i) * w_row_bytes, nb, x, stride, y + i, y_stride);
    return;
  }
  const int64_t tiles = K::tiles(nb);
  thread_local std::vector<Slot<K>> scratch;  // grows to 2 rows of the widest matrix, once per thread
  if (scratch.size() < static_cast<size_t>(kMicroRows * tiles)) scratch.resize(static_cast<size_t>(kMicroRows * tiles));
  const Slot<K>* rows[kMicroRows] = {scratch.data(), scratch.data() + tiles};
  for (int64_t i = 0; i < n_rows; i += kMicroRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kMicroRows, n_rows - i));
    for (int k = 0; k < nr; ++k) unpack_row<K>(w + static_cast<size_t>(i + k) * w_row_bytes, nb, scratch.data() + k * tiles);
    for (int64_t t0 = 0; t0 < n_tok; t0 += kMicroTokens) {
      const int nt = static_cast<int>(std::min<int64_t>(kMicroTokens, n_tok - t0));
      const uint8_t* xt = x + static_cast<size_t>(t0) * stride;
      float* yt = y + static_cast<size_t>(t0) * y_stride + static_cast<size_t>(i);
      if (nr == 2)
        micro_any<K, 2>(nt, rows, tiles, xt, stride, yt, y_stride);
      else
        micro_any<K, 1>(nt, rows, tiles, xt, stride, yt, y_stride);
    }
  }
}

template <typename K>
void rows_kernel_n(int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x, size_t x_stride,
                   int64_t n_tok, float* y, size_t y_stride) {
  rows_kernel<K>(static_cast<const uint8_t*>(w), w_row_bytes, n_rows, n / kQKK, static_cast<const uint8_t*>(x), x_stride,
                 n_tok, y, y_stride);
}

// One weight row against any number of tokens: groups of kGroup, then a smaller last group.
template <typename K>
void dot_grouped(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok, float* out,
                 size_t out_stride) {
  const GroupKernel* kernels = group_kernels<K>();
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t t0 = 0; t0 < n_tok; t0 += kGroup) {
    const int64_t nt = std::min<int64_t>(kGroup, n_tok - t0);
    kernels[nt - 1](w, n / kQKK, xb + static_cast<size_t>(t0) * x_stride, x_stride,
                    out + static_cast<size_t>(t0) * out_stride, out_stride);
  }
}

}  // namespace

LanesRowsFn lanes_rows_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &rows_kernel_n<Q2K>;
    case GgmlType::Q3_K: return &rows_kernel_n<Q3K>;
    case GgmlType::Q4_K: return &rows_kernel_n<Q4K>;
    default: return nullptr;
  }
}

DotTokensFn lanes_dot_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &dot_grouped<Q2K>;
    case GgmlType::Q3_K: return &dot_grouped<Q3K>;
    case GgmlType::Q4_K: return &dot_grouped<Q4K>;
    default: return nullptr;
  }
}

LanesRowsFn lanes_rows_repacked_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &rows_kernel_n<Q2KRepacked>;
    case GgmlType::Q3_K: return &rows_kernel_n<Q3KRepacked>;
    case GgmlType::Q4_K: return &rows_kernel_n<Q4KRepacked>;
    default: return nullptr;
  }
}

DotTokensFn lanes_dot_repacked_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &dot_grouped<Q2KRepacked>;
    case GgmlType::Q3_K: return &dot_grouped<Q3KRepacked>;
    case GgmlType::Q4_K: return &dot_grouped<Q4KRepacked>;
    default: return nullptr;
  }
}

}  // namespace moe::quant::detail
