// mm.comp: y[t][r] = sum_c W[r][c] * x[t][c] for one weight type (ops.h matmul and matmul_expert).
//
// A workgroup is ROWS rows x 32 lanes and covers NT tokens (or expert slots; NT is 1, 8 or 32). Lane l
// of a row walks the row's units (32 values, mm_dequant.glsl) u = l, l+32, l+64, ..., decodes each unit
// once and, for each of its NT tokens, accumulates the 32 products in order into that token's own
// accumulator with fma. The 32 lane partials of each (row, token) are then summed by a fixed tree in
// shared memory. So one output value is always the same sequence of operations whatever NT, the tile it
// lands in or the number of tokens of the call: the NT=1 variants (decode: a token per group, no wasted
// registers) and the tiled variants (8 or 32 tokens share every decoded weight, so a prompt reads each
// weight once per tile instead of once per token) give bit-identical results — batch invariance by
// construction (ops.h). `precise` keeps the compiler from fusing or reordering the accumulation
// differently in the variants.
//
// Modes (push constant): 0 = plain product over n_tok tokens; 1 = expert slots, x rows by token
// (slot_tokens[s]); 2 = expert slots, x rows by slot. In modes 1 and 2 the slots of `expert` are
// [offsets[e], offsets[e+1]) and groups past them exit (the grid is sized by the largest expert).
//
// Grid: x = row groups (the host splits rows over several dispatches: at most 65535 groups and one
// storage-buffer range per dispatch), y = token tiles (split likewise, tile0 = first tile).
//
// @variant mm_f32 -DTYPE=0 -DNT=1
// @variant mm_f32_tiled -DTYPE=0 -DNT=8
// @variant mm_f32_tiled32 -DTYPE=0 -DNT=32
// @variant mm_f16 -DTYPE=1 -DNT=1
// @variant mm_f16_tiled -DTYPE=1 -DNT=8
// @variant mm_f16_tiled32 -DTYPE=1 -DNT=32
// @variant mm_bf16 -DTYPE=30 -DNT=1
// @variant mm_bf16_tiled -DTYPE=30 -DNT=8
// @variant mm_bf16_tiled32 -DTYPE=30 -DNT=32
// @variant mm_q4_0 -DTYPE=2 -DNT=1
// @variant mm_q4_0_tiled -DTYPE=2 -DNT=8
// @variant mm_q4_0_tiled32 -DTYPE=2 -DNT=32
// @variant mm_q4_1 -DTYPE=3 -DNT=1
// @variant mm_q4_1_tiled -DTYPE=3 -DNT=8
// @variant mm_q4_1_tiled32 -DTYPE=3 -DNT=32
// @variant mm_q5_0 -DTYPE=6 -DNT=1
// @variant mm_q5_0_tiled -DTYPE=6 -DNT=8
// @variant mm_q5_0_tiled32 -DTYPE=6 -DNT=32
// @variant mm_q5_1 -DTYPE=7 -DNT=1
// @variant mm_q5_1_tiled -DTYPE=7 -DNT=8
// @variant mm_q5_1_tiled32 -DTYPE=7 -DNT=32
// @variant mm_q8_0 -DTYPE=8 -DNT=1
// @variant mm_q8_0_tiled -DTYPE=8 -DNT=8
// @variant mm_q8_0_tiled32 -DTYPE=8 -DNT=32
// @variant mm_q2_k -DTYPE=10 -DNT=1
// @variant mm_q2_k_tiled -DTYPE=10 -DNT=8
// @variant mm_q2_k_tiled32 -DTYPE=10 -DNT=32
// @variant mm_q3_k -DTYPE=11 -DNT=1
// @variant mm_q3_k_tiled -DTYPE=11 -DNT=8
// @variant mm_q3_k_tiled32 -DTYPE=11 -DNT=32
// @variant mm_q4_k -DTYPE=12 -DNT=1
// @variant mm_q4_k_tiled -DTYPE=12 -DNT=8
// @variant mm_q4_k_tiled32 -DTYPE=12 -DNT=32
// @variant mm_q5_k -DTYPE=13 -DNT=1
// @variant mm_q5_k_tiled -DTYPE=13 -DNT=8
// @variant mm_q5_k_tiled32 -DTYPE=13 -DNT=32
// @variant mm_q6_k -DTYPE=14 -DNT=1
// @variant mm_q6_k_tiled -DTYPE=14 -DNT=8
// @variant mm_q6_k_tiled32 -DTYPE=14 -DNT=32
// @variant mm_q3_k_mutant -DTYPE=11 -DNT=1 -DMM_MUTANT=1
#version 450

#define ROWS 4u
#define LANES 32u
layout(local_size_x = 32, local_size_y = 4) in;

layout(std430, binding = 0) readonly buffer W { uint w_words[]; };        // the weight rows, raw bytes
layout(std430, binding = 1) readonly buffer X { float x[]; };             // [tokens or slots][cols]
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };            // the same, by 4 (when x_vec4)
layout(std430, binding = 2) writeonly buffer Y { float y[]; };            // [tokens or slots][y_stride]
layout(std430, binding = 3) readonly buffer SlotTokens { int slot_tokens[]; };  // [slots]
layout(std430, binding = 4) readonly buffer Offsets { uint offsets[]; };  // [n_expert + 1]

layout(push_constant) uniform Push {
  uint row0;      // first row of this dispatch
  uint row_end;   // one past the last row of this dispatch
  uint cols;      // values per row
  uint row_bytes; // bytes per row
  uint w_byte0;   // byte offset of row row0 in binding 0
  uint x_off;     // float offset of x in binding 1
  uint y_off;     // float offset of y in binding 2
  uint y_stride;  // floats per y row (the matrix's rows)
  uint n_tok;     // mode 0: tokens
  uint tile0;     // first token tile of this dispatch
  uint mode;      // 0 plain, 1 expert x by token, 2 expert x by slot
  uint expert;
  uint slot_off;  // int offset of slot_tokens in binding 3
  uint offs_off;  // uint offset of the expert offsets in binding 4
  uint x_vec4;    // 1 when x_off and cols are multiples of 4: x is read as vec4 (same values, same order)
} pc;

#include "mm_dequant.glsl"

shared float partial[ROWS][NT][LANES];

void main() {
  const uint lane = gl_LocalInvocationID.x, ry = gl_LocalInvocationID.y;
  const uint r = pc.row0 + gl_WorkGroupID.x * ROWS + ry;
  const uint tile = pc.tile0 + gl_WorkGroupID.y;

  // The tokens (slots) of this tile: [first, first + nt). Uniform over the workgroup.
  uint first, end;
  if (pc.mode == 0u) {
    first = tile * NT;
    end = pc.n_tok;
  } else {
    first = offsets[pc.offs_off + pc.expert] + tile * NT;
    end = offsets[pc.offs_off + pc.expert + 1u];
  }
  if (first >= end) return;  // the whole workgroup leaves together
  const uint nt = min(NT, end - first);

  uint xrow[NT];
  for (uint t = 0u; t < NT; ++t) {
    uint s = first + min(t, nt - 1u);
    xrow[t] = pc.x_off + (pc.mode == 1u ? uint(slot_tokens[pc.slot_off + s]) : s) * pc.cols;
  }

  precise float acc[NT];
  for (uint t = 0u; t < NT; ++t) acc[t] = 0.0;

  const bool row_valid = r < pc.row_end;
  if (row_valid) {
    const uint rb = pc.w_byte0 + (r - pc.row0) * pc.row_bytes;
    const uint n_units = units_of(pc.cols);
    for (uint u = lane; u < n_units; u += LANES) {
      float v[32];
      uint nv;
      decode_unit(rb, u, pc.cols, v, nv);
      const uint c0 = 32u * u;
      if (pc.x_vec4 != 0u && nv == 32u) {
        // Four values per load; the fma chain is the one of the scalar loop below, value by value.
        for (uint i = 0u; i < 8u; ++i) {
          for (uint t = 0u; t < NT; ++t) {
            if (t < nt) {
              const vec4 xv = x4[(xrow[t] + c0) / 4u + i];
              acc[t] = fma(v[4u * i], xv.x, acc[t]);
              acc[t] = fma(v[4u * i + 1u], xv.y, acc[t]);
              acc[t] = fma(v[4u * i + 2u], xv.z, acc[t]);
              acc[t] = fma(v[4u * i + 3u], xv.w, acc[t]);
            }
          }
        }
      } else {
        for (uint i = 0u; i < 32u; ++i) {
          if (i < nv) {
            for (uint t = 0u; t < NT; ++t) {
              if (t < nt) acc[t] = fma(v[i], x[xrow[t] + c0 + i], acc[t]);
            }
          }
        }
      }
    }
  }

  for (uint t = 0u; t < NT; ++t) partial[ry][t][lane] = acc[t];
  barrier();
  for (uint stride = LANES / 2u; stride > 0u; stride >>= 1) {
    if (lane < stride) {
      for (uint t = 0u; t < NT; ++t) partial[ry][t][lane] += partial[ry][t][lane + stride];
    }
    barrier();
  }
  if (row_valid && lane < nt) y[pc.y_off + (first + lane) * pc.y_stride + r] = partial[ry][lane][0];
}
