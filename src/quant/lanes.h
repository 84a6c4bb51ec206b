// lanes.h: the "sub-block lane" layout and its AVX-512 kernels, matmul's path for Q2_K, Q3_K, Q4_K and
// Q6_K, Q8_0 (rows of a whole number of 256 values).
//
// Why: the per-row K-quant kernels (quant.h's vec_dot) turn every 64 products into an int32 sum and then
// apply that sub-block's 6-bit scale with a second VNNI instruction, so half the multiply throughput goes
// to scales. Here one 512-bit register holds 4 consecutive values of each of 16 DIFFERENT sub-blocks
// (lane s = sub-block s of a tile), so the dpbusd products of all rounds of a tile accumulate in the same
// int32 lane without any scaling; the 16 sub-block scales are applied once per tile, in float, as
//   acc += dy * (d*sc * isum - min_factor * bsum)          (per lane; 4 float instructions per tile).
// The weights stay as GGUF stores them (no repacking, used in place from the mmap): the kernel gathers
// each round's bytes with a permute, once per row and tile, and applies them to up to 8 tokens; for more
// tokens each row is unpacked once into per-thread scratch and a 4-row x 3-token micro-kernel reuses
// every load. The activations are written in the matching order when they are quantized (once per token
// per matmul).
//
// Tiles: sub-block size S = 32 (Q4_K: a tile is 2 super-blocks = 16 sub-blocks) or S = 16 (Q2_K, Q3_K,
// Q6_K: a tile is 1 super-block). A tile of activations is LaneTile<S>: q[r][4s + k] = the Q8_K level of
// value 4r + k of the tile's sub-block s (r < S / 4 rounds), dy[s] = that super-block's Q8_K scale,
// bs[s] = the sum of the sub-block's levels (exact, as float). A Q4_K row with an odd number of
// super-blocks ends in a half tile whose lanes 8..15 are zero.
//
// The levels are exactly quantize_activations(Q8_K)'s, so the function computed is the same as vec_dot's;
// only the float rounding differs (bounded in quant_simd_test.cpp's QuantLanes tests). Every path does
// the same per-(row, token) arithmetic (1 token is the group kernel with one member), so results do not
// depend on the batch (tested bit for bit).
//
// Q8_0 (S = 32, the sub-block is the 32-value block, so a tile is 16 blocks = 512 values, a half tile 8
// blocks): the activations are Q8_0 levels instead, exactly quantize_activations(Q8_0)'s, in the same
// LaneTile<32> (dy[s] = block s's fp16 scale as float, bs[s] = the sum of its levels); the two kinds of
// 32-value lane rows have the same size but different levels, so a matmul keys its reuse of quantized
// activations on both (kernels/matmul.cpp: activations_fit). dpbusd multiplies unsigned by signed bytes,
// so the kernels take the weight level w + 128 (w ^ 0x80, in 0..255) and move the 128 into the min term:
// ws = d_w, wm = 128 d_w, so ws * sum((w + 128) x) - wm * sum(x) = d_w * sum(w x) (Q3_K moves its 4 the
// same way). Q8_0 rows of other lengths keep the per-row kernel (use_lanes(type, cols) says which).
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"

namespace moe::quant {

// 32 for Q4_K, 16 for Q2_K, Q3_K and Q6_K, 0 for every other type (no lane kernel). Q6_K was left out
// once: its in-place lane unpack (two permutes and four shifts per round) made single-token decode,
// which must use the same arithmetic, ~8 % slower on the 4-layer Mixtral Q4_K_M than the per-row
// kernel. Its rows are now repacked at load (below), which needs no permutes; the in-place kernel
// remains for rows that are not (--no-repack), with the same results (BENCHMARKS.md, "Q6_K on the
// repacked lane path").
// Q8_0 has 32 too (its own levels: see the top of this file).
int lanes_sub_block(GgmlType weight_type);

// True when matmul should use the lane kernels for this weight type: a lane kernel exists and the active
// ISA (util/cpu.h, MOE_ISA respected) is AVX-512.
bool use_lanes(GgmlType weight_type);
// The same for a matrix of `cols` columns: the lane layouts need a whole number of 256 values (every
// K-quant row has it; a Q8_0 row of another length stays on the per-row kernel).
bool use_lanes(GgmlType weight_type, int64_t cols);

// Bytes of one token's activation row of n values (n a multiple of 256) in the layout for sub-block size
// `sub` (16 or 32).
size_t lanes_row_bytes(int sub, int64_t n);

// Quantizes x[0..n) to Q8_K levels and writes them in the lane layout for `sub` (dst: lanes_row_bytes).
void quantize_activations_lanes(int sub, const float* x, void* dst, int64_t n);
// The same with the levels of `levels`: Q8_K (any sub), or Q8_0 (sub 32: the Q8_0 weights' layout).
// The layout a weight type reads is lanes_sub_block(type) with levels activation_type(type).
void quantize_activations_lanes(int sub, GgmlType levels, const float* x, void* dst, int64_t n);

// out[t * out_stride] = sum over n values of weight row w times token t's lane-layout activations
// (x + t * x_stride), for t < n_tok. Requires use_lanes(weight_type).
void vec_dot_lanes(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                   float* out, size_t out_stride);

// A block of a matmul: y[t * y_stride + i] = row i of w (n_rows rows, w_row_bytes apart) times token t's
// lane-layout activations, for t < n_tok. The same numbers as vec_dot_lanes row by row, bit for bit;
// for n_tok > 1 faster (each row unpacked once, a register-blocked 4-row x 3-token micro-kernel).
void lanes_rows(GgmlType weight_type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x,
                size_t x_stride, int64_t n_tok, float* y, size_t y_stride);

// ---- repacked weights: the lane order stored, so the kernels need no permutes ----
// The lane kernels above gather each round's bytes out of GGUF blocks with a permute per round (the
// largest part of a one-token tile's instructions). A repacked row holds the same levels, scales and
// super-block scales already in round order, made once at load (model/repack.h) into a buffer the
// weights own. A round is then one 512-bit load feeding a dpbusd for every token of a group, after an
// AND (and a shift) that needs no lane crossing:
//  - Q4_K (tiles of 2 super-blocks, T = ceil(nb / 2), 288 bytes each): 256 bytes of levels, register k
//    (k < 4) holding round k in its low nibbles and round k + 4 in its high nibbles (byte 4s + i =
//    values 4k + i and 16 + 4k + i of lane s), then a 32-byte header laid out for SIMD decoding: byte s
//    (< 16) = lane s's six-bit scale's low nibble | its min's low nibble << 4; two dwords of top bits,
//    one per block, byte j of block b's holding bit pairs (scale of lane 8b + j, of 8b + j + 4, min of
//    8b + j, of 8b + j + 4) >> 4; then d[2], dmin[2] (fp16). (GGUF's 12-byte packing took ~30 scalar
//    instructions per tile to unpack.) An odd last block is a half tile stored at half width (4 x 32
//    bytes of lanes 0..7; a 16-byte header: 8 nibble bytes, one top-bit dword, d, dmin), loaded with
//    zeros above: its activations there are zero too, so the result is the unrepacked kernel's.
//  - Q2_K (a tile is one super-block, 84 bytes): 64 bytes of levels, byte 4s + i holding the levels of
//    values 4r + i of lane s in bits 2r..2r+1 (r < 4 rounds), then 20 bytes: scales[16], d, dmin.
//  - Q8_0 (a tile is 16 blocks, 544 bytes): 8 x 64 bytes of levels, round r holding bytes 4r..4r+3 of
//    block s at 4s..4s+3, each stored as w ^ 0x80 (the unsigned w + 128 the kernel multiplies), then
//    the 16 blocks' fp16 scales d (32 bytes). A last half tile (n / 256 odd) is 8 blocks stored at half
//    width: 8 x 32 bytes of levels, 16 bytes of scales; the kernel loads zeros above.
//  - Q6_K (a tile is one super-block, 210 bytes): two registers of low nibbles, register j (j < 2)
//    holding round j in its low nibbles and round j + 2 in its high nibbles (byte 4s + i = values
//    4j + i and 8 + 4j + i of lane s), a register of the levels' top two bits (byte 4s + i: those of
//    value 4r + i in bits 2r..2r+1, as Q2_K), then 18 bytes: scales[16] (int8), d. The levels are the
//    unsigned 6-bit q (the - 32 is in the kernels' min term).
//  - Q3_K (a tile is one super-block, 110 bytes): 64 bytes of the low two bits as Q2_K's, then 32 bytes
//    of third bits, round r's 64 at byte 64 + 8r (bit k % 8 of byte k / 8 for byte lane k = 4s + i: one
//    64-bit mask, so the round is its low bits OR 4 where the mask is set), then 14 bytes: the 12
//    packed scale bytes and d, as in the block.
// Each tile's levels and header are contiguous and tiles follow each other, so a row is read as one
// ascending stream (levels and headers in two regions of the row streamed at 0.6-0.8x the speed from
// DRAM: the prefetchers follow one stream per page better than two interleaved ones).
// The numbers computed are exactly the unrepacked lane kernels' (same integer sums, same float steps):
// repacking changes speed, never a result bit. The other types are not repacked.

// True for the types repack_row handles (Q2_K, Q3_K, Q4_K, Q6_K, Q8_0); use_repacked also needs the
// AVX-512 lane kernels (and, for a matrix, use_lanes(type, cols): model/repack.cpp checks the row length).
bool can_repack(GgmlType weight_type);
bool use_repacked(GgmlType weight_type);

// Bytes of one repacked row of n values (n a multiple of 256): the GGUF row's size, so a repacked copy
// that replaces the mapped pages (model/repack.h) leaves the memory plan as it was.
size_t repacked_row_bytes(GgmlType weight_type, int64_t n);

// GGUF row (row_bytes(type, n)) -> repacked row (repacked_row_bytes), and back. Scalar; unrepack_row is
// the definition the tests check the repacked kernels against, and the exact matmul path's first step.
void repack_row(GgmlType weight_type, const void* src, void* dst, int64_t n);
void unrepack_row(GgmlType weight_type, const void* src, void* dst, int64_t n);

// vec_dot_lanes and lanes_rows for repacked rows: the same results, bit for bit.
void vec_dot_lanes_repacked(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride,
                            int64_t n_tok, float* out, size_t out_stride);
void lanes_rows_repacked(GgmlType weight_type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows,
                         const void* x, size_t x_stride, int64_t n_tok, float* y, size_t y_stride);

namespace detail {
template <int kSub>
struct LaneTile {
  int8_t q[kSub / 4][64];  // [round][lane * 4 + k]
  float dy[16];            // Q8_K scale of each lane's super-block (Q8_0 levels: of the lane's block)
  float bs[16];            // sum of each lane's sub-block levels
};
static_assert(sizeof(LaneTile<32>) == 640 && sizeof(LaneTile<16>) == 384);
}  // namespace detail

}  // namespace moe::quant
