// lanes.cpp: the portable half of the sub-block lane path (see lanes.h): which types have it, the
// activation layouts (permutations of quantize_activations' Q8_K or Q8_0 blocks), and the checked entry points of
// the AVX-512 kernels in lanes_avx512.cpp (matmul takes the kernel from quant::kernels_for instead), and
// the repacked weight layout (repack_row / unrepack_row, scalar: run once per weight at load).
#include "quant/lanes.h"

#include <algorithm>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/ref.h"
#include "quant/simd.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::quant {

int lanes_sub_block(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::Q4_K: return 32;
    case GgmlType::Q2_K: case GgmlType::Q3_K: return 16;
    case GgmlType::Q8_0: return 32;  // Q8_0 levels in its lanes (lanes.h)
    case GgmlType::Q6_K: return 16;
    default: return 0;
  }
}

bool use_lanes(GgmlType weight_type) { return lanes_sub_block(weight_type) != 0 && active_isa() >= Isa::AVX512; }

bool use_lanes(GgmlType weight_type, int64_t cols) { return use_lanes(weight_type) && cols > 0 && cols % kQKK == 0; }

namespace {

void check_lanes_row(const char* what, int sub, int64_t n) {
  if (sub != 16 && sub != 32) fail(what, ": sub-block size ", sub, " is not 16 or 32");
  if (n < 0 || n % kQKK != 0) fail(what, ": ", n, " values is not a whole number of 256-value super-blocks");
}

int64_t tiles_of(int sub, int64_t n) {
  const int64_t nb = n / kQKK;
  return sub == 32 ? (nb + 1) / 2 : nb;
}

// One tile from `blocks` (1 or 2) consecutive Q8_K blocks; lanes of a missing second block stay zero.
template <int kSub>
void write_tile(const BlockQ8_K* x, int blocks, detail::LaneTile<kSub>* tile) {
  std::memset(tile, 0, sizeof(*tile));
  constexpr int kPerBlock = kQKK / kSub;  // sub-blocks (lanes) per super-block: 8 or 16
  for (int s = 0; s < blocks * kPerBlock; ++s) {
    const BlockQ8_K& b = x[s / kPerBlock];
    const int j = s % kPerBlock;
    for (int r = 0; r < kSub / 4; ++r) std::memcpy(&tile->q[r][4 * s], &b.qs[j * kSub + 4 * r], 4);
    int sum = 0;
    for (int g = 0; g < kSub / 16; ++g) sum += b.bsums[j * (kSub / 16) + g];
    tile->dy[s] = b.d;
    tile->bs[s] = static_cast<float>(sum);
  }
}

// One Q8_0-level tile from `blocks` (16, or 8 for a half tile) consecutive Q8_0 blocks: lane s is block
// s, round r its values 4r..4r+3; the lanes of a missing second half stay zero.
void write_tile_q8_0(const BlockQ8_0* x, int blocks, detail::LaneTile<32>* tile) {
  std::memset(tile, 0, sizeof(*tile));
  for (int s = 0; s < blocks; ++s) {
    for (int r = 0; r < kQK / 4; ++r) std::memcpy(&tile->q[r][4 * s], &x[s].qs[4 * r], 4);
    int sum = 0;
    for (int v = 0; v < kQK; ++v) sum += x[s].qs[v];
    tile->dy[s] = fp16_to_fp32(x[s].d);
    tile->bs[s] = static_cast<float>(sum);
  }
}

}  // namespace

size_t lanes_row_bytes(int sub, int64_t n) {
  check_lanes_row("lanes_row_bytes", sub, n);
  return static_cast<size_t>(tiles_of(sub, n)) * (sub == 32 ? sizeof(detail::LaneTile<32>) : sizeof(detail::LaneTile<16>));
}

void quantize_activations_lanes(int sub, const float* x, void* dst, int64_t n) {
  check_lanes_row("quantize_activations_lanes", sub, n);
  const QuantizeFn quantize_q8_K = activation_quantizer(GgmlType::Q8_K, active_isa());
  BlockQ8_K blocks[2];
  auto* out = static_cast<uint8_t*>(dst);
  const int64_t nb = n / kQKK;
  const int per_tile = sub == 32 ? 2 : 1;
  for (int64_t b = 0; b < nb; b += per_tile) {
    const int count = static_cast<int>(std::min<int64_t>(per_tile, nb - b));
    quantize_q8_K(x + b * kQKK, blocks, count * kQKK);
    if (sub == 32) {
      write_tile<32>(blocks, count, reinterpret_cast<detail::LaneTile<32>*>(out));
      out += sizeof(detail::LaneTile<32>);
    } else {
      write_tile<16>(blocks, count, reinterpret_cast<detail::LaneTile<16>*>(out));
      out += sizeof(detail::LaneTile<16>);
    }
  }
}

void quantize_activations_lanes(int sub, GgmlType levels, const float* x, void* dst, int64_t n) {
  if (levels == GgmlType::Q8_K) return quantize_activations_lanes(sub, x, dst, n);
  if (levels != GgmlType::Q8_0 || sub != 32)
    fail("quantize_activations_lanes: no ", sub, "-value lane layout of ", type_name(levels), " levels");
  check_lanes_row("quantize_activations_lanes", sub, n);
  const QuantizeFn quantize_q8_0 = activation_quantizer(GgmlType::Q8_0, active_isa());
  constexpr int64_t kTileValues = 16 * kQK;
  BlockQ8_0 blocks[16];
  auto* out = static_cast<detail::LaneTile<32>*>(dst);
  for (int64_t v = 0; v < n; v += kTileValues, ++out) {
    const int64_t count = std::min<int64_t>(kTileValues, n - v);  // 512, or 256 for a half tile
    quantize_q8_0(x + v, blocks, count);
    write_tile_q8_0(blocks, static_cast<int>(count / kQK), out);
  }
}

void vec_dot_lanes(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                   float* out, size_t out_stride) {
  if (!use_lanes(weight_type)) fail("vec_dot_lanes: no lane kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("vec_dot_lanes", lanes_sub_block(weight_type), n);
  if (n_tok < 0) fail("vec_dot_lanes: negative token count ", n_tok);
  detail::lanes_dot_avx512(weight_type)(n, w, x, x_stride, n_tok, out, out_stride);
}

void lanes_rows(GgmlType weight_type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x,
                size_t x_stride, int64_t n_tok, float* y, size_t y_stride) {
  if (!use_lanes(weight_type)) fail("lanes_rows: no lane kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("lanes_rows", lanes_sub_block(weight_type), n);
  if (n_tok < 0 || n_rows < 0) fail("lanes_rows: negative count");
  if (n_tok == 0 || n_rows == 0) return;
  detail::lanes_rows_avx512(weight_type)(n, w, w_row_bytes, n_rows, x, x_stride, n_tok, y, y_stride);
}

// ---- repacked weights (layout in lanes.h) ----

bool can_repack(GgmlType weight_type) {
  return weight_type == GgmlType::Q4_K || weight_type == GgmlType::Q2_K || weight_type == GgmlType::Q3_K ||
         weight_type == GgmlType::Q6_K || weight_type == GgmlType::Q8_0;
}

bool use_repacked(GgmlType weight_type) { return can_repack(weight_type) && use_lanes(weight_type); }

namespace {

constexpr size_t kQ2KTileLevels = 64, kQ2KTileHeader = 20;   // a Q2_K tile: 1 block's levels, scales
constexpr size_t kQ8TileBytes = 16 * sizeof(BlockQ8_0);        // a Q8_0 tile: 16 blocks' levels, then scales
// A Q6_K tile (lanes.h): two registers of low nibbles, one of high bit pairs, then scales[16] and d.
constexpr size_t kQ6KNibbles = 128, kQ6KHighBits = 64, kQ6KTile = sizeof(BlockQ6_K);

void check_repack(const char* what, GgmlType type, int64_t n) {
  if (!can_repack(type)) fail(what, ": ", type_name(type), " has no repacked layout");
  if (n < 0 || n % kQKK != 0) fail(what, ": ", n, " values is not a whole number of 256-value super-blocks");
}

// Q4_K: level of value v (< 32) of sub-block j (< 8) of a block.
int q4k_level(const BlockQ4_K& b, int j, int v) {
  const uint8_t byte = b.qs[32 * (j / 2) + v];
  return j % 2 == 0 ? byte & 0x0F : byte >> 4;
}
void set_q4k_level(BlockQ4_K& b, int j, int v, int level) {
  uint8_t& byte = b.qs[32 * (j / 2) + v];
  byte = j % 2 == 0 ? static_cast<uint8_t>((byte & 0xF0) | level) : static_cast<uint8_t>((byte & 0x0F) | (level << 4));
}

// Q2_K: sub-block s = 8n + 2j + h holds values 128n + 32j + 16h + l, bits 2j of qs[32n + 16h + l].
int q2k_level(const BlockQ2_K& b, int s, int l) {
  const int n = s / 8, j = (s % 8) / 2, h = s % 2;
  return (b.qs[32 * n + 16 * h + l] >> (2 * j)) & 3;
}
void set_q2k_level(BlockQ2_K& b, int s, int l, int level) {
  const int n = s / 8, j = (s % 8) / 2, h = s % 2;
  uint8_t& byte = b.qs[32 * n + 16 * h + l];
  byte = static_cast<uint8_t>((byte & ~(3 << (2 * j))) | (level << (2 * j)));
}

// Q6_K: the 6-bit level (0..63, before the - 32) of value v (< 256) of a block: value 128n + 32k + l
// has its low nibble in ql[64n + 32 (k % 2) + l] (the high nibble for k >= 2) and its top two bits at
// bit 2k of qh[32n + l] (quant/dequant_ref.cpp).
int q6k_level(const BlockQ6_K& b, int v) {
  const int n = v / 128, k = (v % 128) / 32, l = v % 32;
  const int low = (b.ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
  return low | (((b.qh[32 * n + l] >> (2 * k)) & 3) << 4);
}
void set_q6k_level(BlockQ6_K& b, int v, int level) {
  const int n = v / 128, k = (v % 128) / 32, l = v % 32;
  uint8_t& lo = b.ql[64 * n + 32 * (k % 2) + l];
  const int ls = 4 * (k / 2);
  lo = static_cast<uint8_t>((lo & ~(0x0F << ls)) | ((level & 0x0F) << ls));
  uint8_t& hi = b.qh[32 * n + l];
  hi = static_cast<uint8_t>((hi & ~(3 << (2 * k))) | ((level >> 4) << (2 * k)));
}

// ---- Q3_K (layout in lanes.h): a tile is one block, 110 bytes: the low two bits as a Q2_K tile's
// levels (byte 4s + i, bits 2r..2r+1 = value 4r + i of lane s), then round r's 64 third bits at
// 64 + 8r (bit k % 8 of byte k / 8 = byte lane k = 4s + i of the round's register), then the block's 12
// scale bytes and d, unchanged.
constexpr size_t kQ3KTile = 110, kQ3KHigh = 64, kQ3KHeader = 96;
static_assert(kQ3KTile == sizeof(BlockQ3_K) && kQ3KHeader + 12 + 2 == kQ3KTile);  // the GGUF row's size

// Value v (< 256) of a Q3_K block: its low two bits sit where Q2_K's do (qs[32 (v / 128) + v % 32],
// bits 2 ((v % 128) / 32)), its third bit is bit v / 32 of hmask[v % 32] (quant/dequant_ref.cpp).
int q3k_low(const BlockQ3_K& b, int v) { return (b.qs[32 * (v / 128) + v % 32] >> (2 * ((v % 128) / 32))) & 3; }
int q3k_high(const BlockQ3_K& b, int v) { return (b.hmask[v % 32] >> (v / 32)) & 1; }

void repack_q3k(const BlockQ3_K* w, uint8_t* out, int64_t nb) {
  for (int64_t p = 0; p < nb; ++p) {
    const BlockQ3_K& b = w[p];
    uint8_t* q = out + static_cast<size_t>(p) * kQ3KTile;
    std::memset(q + kQ3KHigh, 0, kQ3KHeader - kQ3KHigh);
    for (int s = 0; s < 16; ++s)
      for (int i = 0; i < 4; ++i) {
        const int k = 4 * s + i;  // byte lane of every round's register
        int byte = 0;
        for (int r = 0; r < 4; ++r) {
          const int v = 16 * s + 4 * r + i;
          byte |= q3k_low(b, v) << (2 * r);
          q[kQ3KHigh + 8 * r + k / 8] = static_cast<uint8_t>(q[kQ3KHigh + 8 * r + k / 8] | q3k_high(b, v) << (k % 8));
        }
        q[k] = static_cast<uint8_t>(byte);
      }
    std::memcpy(q + kQ3KHeader, b.scales, 12);
    std::memcpy(q + kQ3KHeader + 12, &b.d, 2);
  }
}

void unrepack_q3k(const uint8_t* in, BlockQ3_K* w, int64_t nb) {
  for (int64_t p = 0; p < nb; ++p) {
    BlockQ3_K& b = w[p];
    const uint8_t* q = in + static_cast<size_t>(p) * kQ3KTile;
    std::memset(b.qs, 0, sizeof(b.qs));
    std::memset(b.hmask, 0, sizeof(b.hmask));
    for (int s = 0; s < 16; ++s)
      for (int i = 0; i < 4; ++i)
        for (int r = 0; r < 4; ++r) {
          const int k = 4 * s + i, v = 16 * s + 4 * r + i;
          const int low = (q[k] >> (2 * r)) & 3, high = (q[kQ3KHigh + 8 * r + k / 8] >> (k % 8)) & 1;
          uint8_t& qs = b.qs[32 * (v / 128) + v % 32];
          qs = static_cast<uint8_t>(qs | low << (2 * ((v % 128) / 32)));
          uint8_t& hm = b.hmask[v % 32];
          hm = static_cast<uint8_t>(hm | high << (v / 32));
        }
    std::memcpy(b.scales, q + kQ3KHeader, 12);
    std::memcpy(&b.d, q + kQ3KHeader + 12, 2);
  }
}

}  // namespace

size_t repacked_row_bytes(GgmlType weight_type, int64_t n) {
  check_repack("repacked_row_bytes", weight_type, n);
  const auto nb = static_cast<size_t>(n / kQKK);
  if (weight_type == GgmlType::Q8_0) return nb * 8 * sizeof(BlockQ8_0);
  if (weight_type == GgmlType::Q6_K) return nb * sizeof(BlockQ6_K);
  if (weight_type == GgmlType::Q3_K) return nb * sizeof(BlockQ3_K);  // a 110-byte tile per block
  return nb * (weight_type == GgmlType::Q4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ2_K));
}

namespace {

// Q4_K: where tile p's levels and header start in a repacked row of nb blocks (lanes.h). A full tile
// is 4 x 64 bytes of levels then a 32-byte header, the half tile (odd nb, the last) 4 x 32 and 16.
size_t q4k_levels_at(int64_t p) { return static_cast<size_t>(p) * 288; }
size_t q4k_header_at(int64_t nb, int64_t p) { return q4k_levels_at(p) + (2 * p + 1 < nb ? 256 : 128); }

// Q8_0 (lanes.h): tile p of a row of nb super-blocks holds blocks 16p.. (16, or 8 in a last half tile);
// round r of lane s is byte width * r + 4s of the tile (width 64, or 32 for the half tile), stored w ^ 0x80,
// and the blocks' scales follow the 8 rounds.
void repack_q8_0(const BlockQ8_0* w, uint8_t* out, int64_t nb) {
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    const int blocks = 2 * p + 1 < nb ? 16 : 8;
    const int width = 4 * blocks;
    uint8_t* q = out + static_cast<size_t>(p) * kQ8TileBytes;
    for (int s = 0; s < blocks; ++s) {
      const BlockQ8_0& b = w[16 * p + s];
      for (int v = 0; v < kQK; ++v)
        q[width * (v / 4) + 4 * s + v % 4] = static_cast<uint8_t>(static_cast<uint8_t>(b.qs[v]) ^ 0x80);
      std::memcpy(q + 8 * width + 2 * s, &b.d, 2);
    }
  }
}
void unrepack_q8_0(const uint8_t* in, BlockQ8_0* w, int64_t nb) {
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    const int blocks = 2 * p + 1 < nb ? 16 : 8;
    const int width = 4 * blocks;
    const uint8_t* q = in + static_cast<size_t>(p) * kQ8TileBytes;
    for (int s = 0; s < blocks; ++s) {
      BlockQ8_0& b = w[16 * p + s];
      for (int v = 0; v < kQK; ++v) b.qs[v] = static_cast<int8_t>(q[width * (v / 4) + 4 * s + v % 4] ^ 0x80);
      std::memcpy(&b.d, q + 8 * width + 2 * s, 2);
    }
  }
}

}  // namespace

void repack_row(GgmlType weight_type, const void* src, void* dst, int64_t n) {
  check_repack("repack_row", weight_type, n);
  const int64_t nb = n / kQKK;
  auto* out = static_cast<uint8_t*>(dst);
  if (weight_type == GgmlType::Q8_0) return repack_q8_0(static_cast<const BlockQ8_0*>(src), out, nb);
  if (weight_type == GgmlType::Q3_K) return repack_q3k(static_cast<const BlockQ3_K*>(src), out, nb);
  if (weight_type == GgmlType::Q4_K) {
    const auto* w = static_cast<const BlockQ4_K*>(src);
    for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
      const int halves = 2 * p + 1 < nb ? 2 : 1;  // blocks in this tile
      const int width = 32 * halves;              // bytes of each register stored
      uint8_t* q = out + q4k_levels_at(p);
      for (int k = 0; k < 4; ++k)
        for (int s = 0; s < 8 * halves; ++s)
          for (int i = 0; i < 4; ++i) {
            const BlockQ4_K& blk = w[2 * p + s / 8];
            const int lo = q4k_level(blk, s % 8, 4 * k + i), hi = q4k_level(blk, s % 8, 16 + 4 * k + i);
            q[width * k + 4 * s + i] = static_cast<uint8_t>(lo | (hi << 4));
          }
      // Header (lanes.h): the lanes' low scale/min nibbles, their top two bits, then d and dmin.
      uint8_t* h = out + q4k_header_at(nb, p);
      int sc[16] = {}, mn[16] = {};
      for (int s = 0; s < 8 * halves; ++s) ref::unpack_k4_scale_min(w[2 * p + s / 8].scales, s % 8, &sc[s], &mn[s]);
      for (int s = 0; s < 8 * halves; ++s) h[s] = static_cast<uint8_t>((sc[s] & 0x0F) | (mn[s] & 0x0F) << 4);
      for (int b = 0; b < halves; ++b)
        for (int j = 0; j < 4; ++j) {
          const int s = 8 * b + j;
          h[8 * halves + 4 * b + j] =
              static_cast<uint8_t>(sc[s] >> 4 | (sc[s + 4] >> 4) << 2 | (mn[s] >> 4) << 4 | (mn[s + 4] >> 4) << 6);
        }
      for (int b = 0; b < halves; ++b) {
        std::memcpy(h + 12 * halves + 2 * b, &w[2 * p + b].d, 2);
        std::memcpy(h + 12 * halves + 2 * halves + 2 * b, &w[2 * p + b].dmin, 2);
      }
    }
    return;
  }
  if (weight_type == GgmlType::Q6_K) {
    // Lane s, round r, byte i is value 16s + 4r + i: its low nibble goes to register r % 2, in the low
    // nibble for r < 2 and the high one for r >= 2; its top two bits to bits 2r of the third register.
    const auto* w = static_cast<const BlockQ6_K*>(src);
    for (int64_t p = 0; p < nb; ++p) {
      uint8_t* q = out + static_cast<size_t>(p) * kQ6KTile;
      for (int s = 0; s < 16; ++s)
        for (int i = 0; i < 4; ++i) {
          int lev[4];
          for (int r = 0; r < 4; ++r) lev[r] = q6k_level(w[p], 16 * s + 4 * r + i);
          for (int j = 0; j < 2; ++j) q[64 * j + 4 * s + i] = static_cast<uint8_t>((lev[j] & 0x0F) | ((lev[j + 2] & 0x0F) << 4));
          int high = 0;
          for (int r = 0; r < 4; ++r) high |= (lev[r] >> 4) << (2 * r);
          q[kQ6KNibbles + 4 * s + i] = static_cast<uint8_t>(high);
        }
      std::memcpy(q + kQ6KNibbles + kQ6KHighBits, w[p].scales, 16);
      std::memcpy(q + kQ6KNibbles + kQ6KHighBits + 16, &w[p].d, 2);
    }
    return;
  }
  const auto* w = static_cast<const BlockQ2_K*>(src);
  for (int64_t p = 0; p < nb; ++p) {
    uint8_t* q = out + static_cast<size_t>(p) * (kQ2KTileLevels + kQ2KTileHeader);
    for (int s = 0; s < 16; ++s)
      for (int i = 0; i < 4; ++i) {
        int byte = 0;
        for (int r = 0; r < 4; ++r) byte |= q2k_level(w[p], s, 4 * r + i) << (2 * r);
        q[4 * s + i] = static_cast<uint8_t>(byte);
      }
    uint8_t* h = q + kQ2KTileLevels;
    std::memcpy(h, w[p].scales, 16);
    std::memcpy(h + 16, &w[p].d, 2);
    std::memcpy(h + 18, &w[p].dmin, 2);
  }
}

void unrepack_row(GgmlType weight_type, const void* src, void* dst, int64_t n) {
  check_repack("unrepack_row", weight_type, n);
  const int64_t nb = n / kQKK;
  const auto* in = static_cast<const uint8_t*>(src);
  if (weight_type == GgmlType::Q8_0) return unrepack_q8_0(in, static_cast<BlockQ8_0*>(dst), nb);
  if (weight_type == GgmlType::Q3_K) return unrepack_q3k(in, static_cast<BlockQ3_K*>(dst), nb);
  if (weight_type == GgmlType::Q4_K) {
    auto* w = static_cast<BlockQ4_K*>(dst);
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t p = b / 2;
      const int half = static_cast<int>(b % 2);  // lanes 0..7 or 8..15 of the tile
      const int halves = 2 * p + 1 < nb ? 2 : 1;
      const int width = 32 * halves;
      const uint8_t* q = in + q4k_levels_at(p);
      const uint8_t* h = in + q4k_header_at(nb, p);
      BlockQ4_K& blk = w[b];
      int sc[8], mn[8];
      for (int j = 0; j < 8; ++j) {
        const uint8_t top = h[8 * halves + 4 * half + j % 4];  // bit pairs: sc[j], sc[j + 4], mn[j], mn[j + 4]
        sc[j] = (h[8 * half + j] & 0x0F) | ((top >> (2 * (j / 4))) & 3) << 4;
        mn[j] = (h[8 * half + j] >> 4) | ((top >> (4 + 2 * (j / 4))) & 3) << 4;
      }
      ref::pack_k4_scales(sc, mn, blk.scales);
      std::memcpy(&blk.d, h + 12 * halves + 2 * half, 2);
      std::memcpy(&blk.dmin, h + 12 * halves + 2 * halves + 2 * half, 2);
      for (int j = 0; j < 8; ++j)
        for (int k = 0; k < 4; ++k)
          for (int i = 0; i < 4; ++i) {
            const uint8_t byte = q[width * k + 4 * (8 * half + j) + i];
            set_q4k_level(blk, j, 4 * k + i, byte & 0x0F);
            set_q4k_level(blk, j, 16 + 4 * k + i, byte >> 4);
          }
    }
    return;
  }
  if (weight_type == GgmlType::Q6_K) {
    auto* w = static_cast<BlockQ6_K*>(dst);
    for (int64_t p = 0; p < nb; ++p) {
      const uint8_t* q = in + static_cast<size_t>(p) * kQ6KTile;
      std::memcpy(w[p].scales, q + kQ6KNibbles + kQ6KHighBits, 16);
      std::memcpy(&w[p].d, q + kQ6KNibbles + kQ6KHighBits + 16, 2);
      for (int s = 0; s < 16; ++s)
        for (int i = 0; i < 4; ++i) {
          const int high = q[kQ6KNibbles + 4 * s + i];
          for (int r = 0; r < 4; ++r) {
            const int nibble = (q[64 * (r % 2) + 4 * s + i] >> (4 * (r / 2))) & 0x0F;
            set_q6k_level(w[p], 16 * s + 4 * r + i, nibble | (((high >> (2 * r)) & 3) << 4));
          }
        }
    }
    return;
  }
  auto* w = static_cast<BlockQ2_K*>(dst);
  for (int64_t p = 0; p < nb; ++p) {
    const uint8_t* q = in + static_cast<size_t>(p) * (kQ2KTileLevels + kQ2KTileHeader);
    const uint8_t* h = q + kQ2KTileLevels;
    std::memcpy(w[p].scales, h, 16);
    std::memcpy(&w[p].d, h + 16, 2);
    std::memcpy(&w[p].dmin, h + 18, 2);
    for (int s = 0; s < 16; ++s)
      for (int i = 0; i < 4; ++i)
        for (int r = 0; r < 4; ++r) set_q2k_level(w[p], s, 4 * r + i, (q[4 * s + i] >> (2 * r)) & 3);
  }
}

void vec_dot_lanes_repacked(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride,
                            int64_t n_tok, float* out, size_t out_stride) {
  if (!use_repacked(weight_type)) fail("vec_dot_lanes_repacked: no repacked kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("vec_dot_lanes_repacked", lanes_sub_block(weight_type), n);
  if (n_tok < 0) fail("vec_dot_lanes_repacked: negative token count ", n_tok);
  detail::lanes_dot_repacked_avx512(weight_type)(n, w, x, x_stride, n_tok, out, out_stride);
}

void lanes_rows_repacked(GgmlType weight_type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows,
                         const void* x, size_t x_stride, int64_t n_tok, float* y, size_t y_stride) {
  if (!use_repacked(weight_type)) fail("lanes_rows_repacked: no repacked kernel for ", type_name(weight_type), " on this CPU");
  check_lanes_row("lanes_rows_repacked", lanes_sub_block(weight_type), n);
  if (n_tok < 0 || n_rows < 0) fail("lanes_rows_repacked: negative count");
  if (n_tok == 0 || n_rows == 0) return;
  detail::lanes_rows_repacked_avx512(weight_type)(n, w, w_row_bytes, n_rows, x, x_stride, n_tok, y, y_stride);
}

}  // namespace moe::quant
