// lanes_avx512.cpp: the AVX-512 VNNI kernels of the sub-block lane path (layout and rationale in
// quant/lanes.h). Per tile of one weight row: build the rounds (each 64 weight levels, 4 from each of
// 16 sub-blocks) with permutes, and the 16 lane scales in float; then for each of up to 8 tokens run one
// dpbusd per round into int32 lanes and fold the tile in with 4 float instructions (more tokens: the
// rows are unpacked once into scratch for a 4-row x 3-token micro-kernel, further down). The per-token
// instructions are the same for every group size, so a token's result never depends on its neighbours.
//
// Lane s of a tile is always sub-block s of the tile (values 16s.. for S = 16, 32s.. for S = 32); the
// index vectors below say where in the GGUF block the 4 bytes of round r of lane s live, derived in
// each kernel's comment from the block layout (quant/blocks.h, quant/dequant_ref.cpp).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "quant/blocks.h"
#include "quant/kquant_scales.h"
#include "quant/lanes.h"
#include "quant/simd.h"
#include "quant/token_rows.h"
#include "quant/vec.h"

namespace moe::quant::detail {
namespace {

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m512i lanes_of(const std::array<int, 16>& v) { return _mm512_loadu_si512(v.data()); }
inline float half(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch of kLines cache lines from `at` (a repacked tile some tiles ahead of the one being
// unpacked: each repacked kernel streams its row as one ascending run of tiles).
template <int kLines>
inline void prefetch_lines(const uint8_t* at) {
  MOE_UNROLL
  for (int l = 0; l < kLines; ++l) _mm_prefetch(reinterpret_cast<const char*>(at + 64 * l), _MM_HINT_T0);
}

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
    // Software prefetch of every line 8 tiles (2304 bytes) ahead: without it this short loop streamed a
    // matrix from DRAM at 0.88-0.98x the permuting kernel's speed, with it 1.0-1.3x; in cache it costs
    // (0.75x at 1-2 tokens), but model weights are streamed (BENCHMARKS.md). 8 tiles rather than 4: at
    // ~35 GB/s a thread must keep ~2 KB in flight to cover DRAM latency; decode was 1.12x faster with 8
    // (4 interleaved rounds on the 4-layer Mixtral Q4_K_M; 10, 12, 16 and 24 no better than 8).
    prefetch_lines<5>(q + 8 * 288);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    MOE_UNROLL
    for (int k = 0; k < 4; ++k) {
      const __m512i v = full ? load512(q + 64 * k)
                             : _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * k)));
      wq[k] = _mm512_and_si512(v, low4);
      wq[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    }
    // Header (lanes.h): the 16 lanes' low scale/min nibbles, their top bits in two dwords (one per
    // block; bit pairs sc[j], sc[j + 4], mn[j], mn[j + 4] in byte j), d[2], dmin[2]. Decoded with a few
    // 128/256-bit operations instead of unpacking GGUF's 12-byte packing in scalar registers. A half tile
    // (16 bytes: 8 lanes' nibbles, one dword, d, dmin) leaves lanes 8..15 zero.
    __m128i nibbles, tops;
    __m128 ddm;  // d of lanes 0..7, d of lanes 8..15, dmin of 0..7, dmin of 8..15
    if (full) {
      nibbles = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
      tops = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(h + 16));
      ddm = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h + 24)));
    } else {
      nibbles = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(h));
      tops = _mm_cvtsi32_si128(static_cast<int>(read_u32(h + 8)));
      ddm = _mm_cvtph_ps(_mm_shufflelo_epi16(_mm_cvtsi32_si128(static_cast<int>(read_u32(h + 12))), 0x50));  // d d m m
    }
    // Dword k of each half = the block's top-bit dword >> 2k: byte j holds bit pair k of its byte j, so
    // the low 8 bytes are the scales' top bits of lanes 0..7 (8..15), the high 8 the mins'.
    const __m256i pairs = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(_mm256_castsi128_si256(tops), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)),
                          _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)),
        _mm256_set1_epi8(3));
    const __m128i pa = _mm256_castsi256_si128(pairs), pb = _mm256_extracti128_si256(pairs, 1);
    const __m128i low4x = _mm_set1_epi8(0x0F);
    const __m128i sc = _mm_or_si128(_mm_and_si128(nibbles, low4x), _mm_slli_epi16(_mm_unpacklo_epi64(pa, pb), 4));
    const __m128i mn =
        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(nibbles, 4), low4x), _mm_slli_epi16(_mm_unpackhi_epi64(pa, pb), 4));
    const __m512 wide = _mm512_castps128_ps512(ddm);
    const __m512 d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), wide);
    const __m512 dmin = _mm512_permutexvar_ps(_mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3), wide);
    ws = _mm512_mul_ps(floats_u8(sc), d);
    wm = _mm512_mul_ps(floats_u8(mn), dmin);
  }
};

struct Q2KRepacked {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const auto* row = static_cast<const uint8_t*>(wv);
    const uint8_t* q = row + static_cast<size_t>(p) * 84;
    prefetch_lines<2>(q + 8 * 84);
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

// ---- Q8_0: S = 32, a tile is blocks 16p..16p + 15 of the row (8 in a last half tile), lane s = block
// 16p + s, round r = its bytes 4r..4r + 3. The kernels multiply the unsigned w + 128 (w ^ 0x80) and take
// 128 d_w * sum(x) back off through the min term (lanes.h): ws = d_w, wm = 128 d_w, both exact.
// A lane sums 32 products (w + 128) x with |x| <= 127 (quantize_q8_0's levels), at most 32 * 255 * 127 in
// magnitude: exact in int32 and in the float it is converted to (< 2^24).
//
// In place (GGUF blocks, 34 bytes apart): the 16 blocks' levels are an 8 x 8 dword transpose in each
// 256-bit half (z[j] = block j's 32 bytes below, block 8 + j's above: round r of lane s is dword
// 8 (s / 8) + r of z[s % 8]), 24 shuffles per tile; the scales come in with one gather.
struct Q80 {
  static constexpr int kSub = 32;
  static __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static int64_t tiles(int64_t nb) { return (nb + 1) / 2; }
  static void unpack(const void* wv, int64_t nb, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(wv) + 16 * p;
    const bool full = 2 * p + 1 < nb;
    const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
    __m512i z[8];
    MOE_UNROLL
    for (int j = 0; j < 8; ++j) {
      const __m256i lo = _mm256_xor_si256(load256(b[j].qs), bias);
      // half tile: lanes 8..15 zero, as the repacked row loads them
      z[j] = full ? _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_xor_si256(load256(b[8 + j].qs), bias), 1)
                  : _mm512_zextsi256_si512(lo);
    }
    // Within each 128-bit lane: dwords (r, r + 4) of four blocks, then the 128-bit lanes of two such
    // registers interleaved (qword permute) give round r and r + 4 of all eight blocks of the half.
    __m512i t[8], u[8];
    MOE_UNROLL
    for (int j = 0; j < 8; j += 2) {
      t[j] = _mm512_unpacklo_epi32(z[j], z[j + 1]);
      t[j + 1] = _mm512_unpackhi_epi32(z[j], z[j + 1]);
    }
    MOE_UNROLL
    for (int g = 0; g < 8; g += 4) {
      u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);      // rounds 0, 4 of blocks g..g + 3
      u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);  // rounds 1, 5
      u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);  // rounds 2, 6
      u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);  // rounds 3, 7
    }
    const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i second = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    MOE_UNROLL
    for (int r = 0; r < 4; ++r) {
      wq[r] = _mm512_permutex2var_epi64(u[r], first, u[4 + r]);
      wq[r + 4] = _mm512_permutex2var_epi64(u[r], second, u[4 + r]);
    }
    // The scales: the dword at the start of each block, its low half d (masked to the blocks there are).
    static constexpr auto kBlockAt = per_lane([](int n, int m, int h) {
      return static_cast<int>(sizeof(BlockQ8_0)) * (8 * n + 2 * m + h);  // lane s = 8n + 2m + h: block s
    });
    const __m512i at = lanes_of(kBlockAt);
    const __m512i dwords = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), full ? 0xFFFF : 0x00FF, at, b, 1);
    ws = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dwords));
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(128.0f));
  }
};

// Repacked (lanes.h): the rounds are stored in lane order with the bias applied, so a round is one load.
struct Q80Repacked {
  static constexpr int kSub = 32;
  static int64_t tiles(int64_t nb) { return (nb + 1) / 2; }
  static void unpack(const void* wv, int64_t nb, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    constexpr size_t kTile = 16 * sizeof(BlockQ8_0);  // 544 bytes: 8 rounds of 64, 16 fp16 scales
    const uint8_t* q = static_cast<const uint8_t*>(wv) + static_cast<size_t>(p) * kTile;
    // Every line of the tile 4 tiles ahead, as Q4KRepacked does (a row is one ascending stream).
    prefetch_lines<9>(q + 4 * kTile);
    if (2 * p + 1 < nb) {
      MOE_UNROLL
      for (int r = 0; r < 8; ++r) wq[r] = load512(q + 64 * r);
      ws = _mm512_cvtph_ps(Q80::load256(q + 512));
    } else {  // half tile: 8 rounds of 32 bytes, 8 scales; zeros above
      MOE_UNROLL
      for (int r = 0; r < 8; ++r) wq[r] = _mm512_zextsi256_si512(Q80::load256(q + 32 * r));
      ws = _mm512_cvtph_ps(_mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 256))));
    }
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(128.0f));
  }
};

// ---- Q6_K: S = 16, one super-block per tile, lane s = 8n + 2m + h covers values 128n + 32m + 16h + l'
// (l' < 16). Value 128n + 32m + l has its low nibble in ql[64n + 32 (m % 2) + l] (the high nibble for
// m >= 2) and its top two bits at bit 2m of qh[32n + l]; with l = 16h + 4r + i, round r of lane s takes
// ql dword 16n + 8 (m % 2) + 4h + r shifted by 4 (m / 2) and qh dword 8n + 4h + r shifted by 2m.
// Level - 32 is taken as the unsigned 6-bit level with 32 * ws in the min term (as Q3K does with 4);
// scales are signed. The in-place kernel runs only where the rows are not repacked (--no-repack, a
// model too large to copy): it gives the same bits as Q6KRepacked, so one token and every batch do the
// same arithmetic either way.
struct Q6K {
  static constexpr int kSub = 16;
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const BlockQ6_K& b = static_cast<const BlockQ6_K*>(wv)[p];
    static constexpr auto kLBase = per_lane([](int n, int m, int h) { return 16 * n + 8 * (m % 2) + 4 * h; });
    static constexpr auto kLShift = per_lane([](int, int m, int) { return 4 * (m / 2); });
    static constexpr auto kHBase = per_lane([](int n, int, int h) { return 8 * n + 4 * h; });
    static constexpr auto kHShift = per_lane([](int, int m, int) { return 2 * m; });
    const __m512i ql0 = load512(b.ql), ql1 = load512(b.ql + 64), qh = load512(b.qh);
    const __m512i lbase = lanes_of(kLBase), lshift = lanes_of(kLShift), hbase = lanes_of(kHBase), hshift = lanes_of(kHShift);
    MOE_UNROLL
    for (int r = 0; r < 4; ++r) {
      const __m512i rr = _mm512_set1_epi32(r);
      const __m512i lo = _mm512_and_si512(
          _mm512_srlv_epi32(_mm512_permutex2var_epi32(ql0, _mm512_add_epi32(lbase, rr), ql1), lshift),
          _mm512_set1_epi8(0x0F));
      const __m512i hi = _mm512_and_si512(
          _mm512_srlv_epi32(_mm512_permutexvar_epi32(_mm512_add_epi32(hbase, rr), qh), hshift), _mm512_set1_epi8(3));
      wq[r] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4));
    }
    ws = _mm512_mul_ps(floats_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales))), _mm512_set1_ps(half(b.d)));
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(32.0f));
  }
};

// Repacked Q6_K (lanes.h): a tile is 210 bytes, register 0 = rounds 0 | 2 << 4 of the low nibbles,
// register 1 = rounds 1 | 3 << 4, register 2 = the top bit pairs of round r in bits 2r, then scales[16]
// and d. The pairs of rounds 0 and 2 are (H & 0x33) (bits 0-1 and 4-5), those of rounds 1 and 3 the same
// after a shift by 2; each round is then one bit select (vpternlogd, C ? A : B with C = 0x0F per byte):
// bits 0-3 from its nibbles, bits 4-7 from its pairs moved to bits 4-5 (bits 6-7 there are the mask's
// zeros). The 16-bit shifts carry bits across bytes only into bits the AND or the select drops.
struct Q6KRepacked {
  static constexpr int kSub = 16;
  // Tiles prefetched ahead (420 bytes). Streamed from DRAM on one thread (thread CPU time, 4096-value
  // rows, medians of 6 runs): with 2, one token takes 0.99x the per-row kernel's time, 4 and 8 tokens
  // 0.87x and 0.82x no prefetch's (2 tokens 1.07x); with 4, one token takes 1.21x (BENCHMARKS.md).
  static constexpr int kAhead = 2;
  static constexpr int kSelect = 0xE4;  // ternary-logic truth table of (C ? A : B)
  static int64_t tiles(int64_t nb) { return nb; }
  static void unpack(const void* wv, int64_t, int64_t p, __m512i* wq, __m512& ws, __m512& wm) {
    const uint8_t* q = static_cast<const uint8_t*>(wv) + static_cast<size_t>(p) * sizeof(BlockQ6_K);
    // Every line of the tile kAhead tiles ahead: each tile's four prefetches start at its own first
    // byte and a tile is 210 bytes, so together they cover every line of the row.
    if constexpr (kAhead > 0) prefetch_lines<4>(q + kAhead * sizeof(BlockQ6_K));
    decode(q, wq, ws, wm);
  }
  static void decode(const uint8_t* q, __m512i* wq, __m512& ws, __m512& wm) {
    const __m512i l0 = load512(q), l1 = load512(q + 64), hb = load512(q + 128);
    const __m512i low4 = _mm512_set1_epi8(0x0F), pairs = _mm512_set1_epi8(0x33);
    const __m512i h02 = _mm512_and_si512(hb, pairs);                        // round 0 bits 0-1, round 2 bits 4-5
    const __m512i h13 = _mm512_and_si512(_mm512_srli_epi16(hb, 2), pairs);  // round 1 bits 0-1, round 3 bits 4-5
    wq[0] = _mm512_ternarylogic_epi32(l0, _mm512_slli_epi16(h02, 4), low4, kSelect);
    wq[1] = _mm512_ternarylogic_epi32(l1, _mm512_slli_epi16(h13, 4), low4, kSelect);
    wq[2] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l0, 4), h02, low4, kSelect);
    wq[3] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(l1, 4), h13, low4, kSelect);
    const uint8_t* h = q + 192;
    uint16_t d;
    std::memcpy(&d, h + 16, 2);
    ws = _mm512_mul_ps(floats_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), _mm512_set1_ps(half(d)));
    wm = _mm512_mul_ps(ws, _mm512_set1_ps(32.0f));
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
    prefetch_lines<2>(q + 8 * 110);
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
// (exact in any order: a lane sums at most 32 products of |level| <= 255 (Q8_0's w + 128; 63 for the
// K-quants) and |x| <= 128).
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

// micro<K, R, t> for t = T, T - 1, ..., 1 (the last group of tokens may be short).
template <typename K, int R, int T>
void micro_tokens(int t, const Slot<K>* const* rows, int64_t tiles, const uint8_t* x, size_t stride, float* y,
                  size_t y_stride) {
  if constexpr (T > 1)
    if (t < T) return micro_tokens<K, R, T - 1>(t, rows, tiles, x, stride, y, y_stride);
  micro<K, R, T>(rows, tiles, x, stride, y, y_stride);
}

// micro_tokens<K, r, T> for r = R, R - 1, ..., 1 (the last rows of a block may be fewer).
template <typename K, int R, int T>
void micro_rows(int r, int t, const Slot<K>* const* rows, int64_t tiles, const uint8_t* x, size_t stride, float* y,
                size_t y_stride) {
  if constexpr (R > 1)
    if (r < R) return micro_rows<K, R - 1, T>(r, t, rows, tiles, x, stride, y, y_stride);
  micro_tokens<K, R, T>(t, rows, tiles, x, stride, y, y_stride);
}

template <typename K, int R, int T>
void rows_kernel_rt(const uint8_t* w, size_t w_row_bytes, int64_t n_rows, int64_t nb, const uint8_t* x, size_t stride,
                    int64_t n_tok, float* y, size_t y_stride) {
  const int64_t tiles = K::tiles(nb);
  thread_local std::vector<Slot<K>> scratch;  // grows to R rows of the widest matrix, once per thread
  if (scratch.size() < static_cast<size_t>(R * tiles)) scratch.resize(static_cast<size_t>(R * tiles));
  const Slot<K>* rows[R];
  for (int k = 0; k < R; ++k) rows[k] = scratch.data() + k * tiles;
  // While the micro-kernels compute on one block of rows (no weight loads), the next block's rows are
  // prefetched into L2, a share per call, so that streaming them from DRAM overlaps the arithmetic
  // instead of stalling the next unpack (with few tokens per block, as in batched decode, the unpack had
  // taken a third of the kernel's time). The lines just past the last row (the next band's, or past the
  // matrix) are prefetched too: a prefetch never faults (the address is formed as an integer, since a
  // pointer past the end of the weights would not be a valid pointer).
  const size_t next_lines = (static_cast<size_t>(R) * w_row_bytes + 63) / 64;
  const int64_t calls = (n_tok + T - 1) / T;
  const size_t lines_per_call = (next_lines + static_cast<size_t>(calls) - 1) / static_cast<size_t>(calls);
  for (int64_t i = 0; i < n_rows; i += R) {
    const int nr = static_cast<int>(std::min<int64_t>(R, n_rows - i));
    for (int k = 0; k < nr; ++k) unpack_row<K>(w + static_cast<size_t>(i + k) * w_row_bytes, nb, scratch.data() + k * tiles);
    const uintptr_t next = reinterpret_cast<uintptr_t>(w) + static_cast<uintptr_t>(i + R) * w_row_bytes;
    size_t line = 0;
    for (int64_t t0 = 0; t0 < n_tok; t0 += T) {
      for (const size_t end = std::min(next_lines, line + lines_per_call); line < end; ++line)
        _mm_prefetch(reinterpret_cast<const char*>(next + 64 * line), _MM_HINT_T1);
      const int nt = static_cast<int>(std::min<int64_t>(T, n_tok - t0));
      micro_rows<K, R, T>(nr, nt, rows, tiles, x + static_cast<size_t>(t0) * stride, stride,
                          y + static_cast<size_t>(t0) * y_stride + static_cast<size_t>(i), y_stride);
    }
  }
}

// The many-token block: 4 rows x 3 tokens. Per round it loads 3 activation and 4 weight registers for
// 12 dpbusd (0.58 loads per product; 2 x 4 needed 0.75), and its 12 int32 sums, 12 float accumulators,
// 3 activations and a weight register fit the 32 registers. Measured against 2 x 4, 3 x 4 and 2 x 6 on
// one 4096 x 14336 matrix (moe_bench_kernels, 64 and 512 tokens): fastest in every round (BENCHMARKS.md).
constexpr int kMicroRows = 4, kMicroTokens = 3;

// Up to this many tokens a block of rows runs the group kernel (each row unpacked into registers);
// beyond it, the micro-kernel. The group kernels spill from 6 tokens on (moe_bench_kernels lanes_l2, 64
// rows: at 6 tokens Q4_K 14.1 and Q6_K 21.4 us per call against the micro-kernel's 13.3 and 17.5; at 5
// tokens 11.1 and 15.0 against 11.6 and 15.9; at 8, Q4_K 47.6 against 33.9 ns per tile and row).
constexpr int kRowsGroupMax = 5;

template <typename K>
void rows_kernel(const uint8_t* w, size_t w_row_bytes, int64_t n_rows, int64_t nb, const uint8_t* x, size_t stride,
                 int64_t n_tok, float* y, size_t y_stride) {
  if (n_tok <= kRowsGroupMax) {  // decode and small batches: unpack straight into registers, once per row
    const GroupKernel kernel = group_kernels<K>()[n_tok - 1];
    for (int64_t i = 0; i < n_rows; ++i) kernel(w + static_cast<size_t>(i) * w_row_bytes, nb, x, stride, y + i, y_stride);
    return;
  }
  rows_kernel_rt<K, kMicroRows, kMicroTokens>(w, w_row_bytes, n_rows, nb, x, stride, n_tok, y, y_stride);
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
    case GgmlType::Q8_0: return &rows_kernel_n<Q80>;
    case GgmlType::Q6_K: return &rows_kernel_n<Q6K>;
    default: return nullptr;
  }
}

DotTokensFn lanes_dot_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &dot_grouped<Q2K>;
    case GgmlType::Q3_K: return &dot_grouped<Q3K>;
    case GgmlType::Q4_K: return &dot_grouped<Q4K>;
    case GgmlType::Q8_0: return &dot_grouped<Q80>;
    case GgmlType::Q6_K: return &dot_grouped<Q6K>;
    default: return nullptr;
  }
}

LanesRowsFn lanes_rows_repacked_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &rows_kernel_n<Q2KRepacked>;
    case GgmlType::Q3_K: return &rows_kernel_n<Q3KRepacked>;
    case GgmlType::Q4_K: return &rows_kernel_n<Q4KRepacked>;
    case GgmlType::Q8_0: return &rows_kernel_n<Q80Repacked>;
    case GgmlType::Q6_K: return &rows_kernel_n<Q6KRepacked>;
    default: return nullptr;
  }
}

DotTokensFn lanes_dot_repacked_avx512(GgmlType type) {
  switch (type) {
    case GgmlType::Q2_K: return &dot_grouped<Q2KRepacked>;
    case GgmlType::Q3_K: return &dot_grouped<Q3KRepacked>;
    case GgmlType::Q4_K: return &dot_grouped<Q4KRepacked>;
    case GgmlType::Q8_0: return &dot_grouped<Q80Repacked>;
    case GgmlType::Q6_K: return &dot_grouped<Q6KRepacked>;
    default: return nullptr;
  }
}

}  // namespace moe::quant::detail
