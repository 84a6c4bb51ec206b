// get_rows.comp: out[i] = the dequantized row ids[i] of a table (ops.h get_rows, the embedding lookup).
// One invocation per (row unit, id): it decodes 32 values with mm_dequant.glsl, the same decoder as the
// matrix products, so the values equal quant's scalar dequantization bit for bit.
//
// The host may split a table larger than one storage-buffer range into row ranges [row_lo, row_hi),
// one dispatch each with that range bound; an id outside the dispatch's range is left to the dispatch
// that holds it. Grid: x = units of a row / 64, y = ids (split by id0 when over the group limit).
//
// @variant get_rows_f32 -DTYPE=0
// @variant get_rows_f16 -DTYPE=1
// @variant get_rows_bf16 -DTYPE=30
// @variant get_rows_q4_0 -DTYPE=2
// @variant get_rows_q4_1 -DTYPE=3
// @variant get_rows_q5_0 -DTYPE=6
// @variant get_rows_q5_1 -DTYPE=7
// @variant get_rows_q8_0 -DTYPE=8
// @variant get_rows_q2_k -DTYPE=10
// @variant get_rows_q3_k -DTYPE=11
// @variant get_rows_q4_k -DTYPE=12
// @variant get_rows_q5_k -DTYPE=13
// @variant get_rows_q6_k -DTYPE=14
#version 450

layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer W { uint w_words[]; };  // the table's rows [row_lo, row_hi)
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };     // [n]
layout(std430, binding = 2) writeonly buffer Out { float outv[]; }; // [n][cols]

layout(push_constant) uniform Push {
  uint cols;
  uint row_bytes;
  uint w_byte0;  // byte offset of row row_lo in binding 0
  uint row_lo;
  uint row_hi;
  uint ids_off;  // int offset of the ids in binding 1
  uint out_off;  // float offset of out in binding 2
  uint n;        // ids
  uint id0;      // first id of this dispatch
} pc;

#include "mm_dequant.glsl"

void main() {
  const uint u = gl_GlobalInvocationID.x;
  const uint i = pc.id0 + gl_WorkGroupID.y;
  if (u >= units_of(pc.cols) || i >= pc.n) return;
  const uint r = uint(ids[pc.ids_off + i]);
  if (r < pc.row_lo || r >= pc.row_hi) return;
  float v[32];
  uint nv;
  decode_unit(pc.w_byte0 + (r - pc.row_lo) * pc.row_bytes, u, pc.cols, v, nv);
  const uint o = pc.out_off + i * pc.cols + 32u * u;
  for (uint k = 0u; k < 32u; ++k) {
    if (k < nv) outv[o + k] = v[k];
  }
}
