// kv_store.comp: writes each token's K and V rows of one layer into its position's rows of the paged
// cache, in kernels::store_kv_row's encoding (ops.h kv_store). One invocation per (token, K or V,
// unit), a unit being one value (F32, F16, BF16) or one 32-value block (Q8_0: the block's absmax
// scale needs all 32 values; the tail block of a row is zero-padded as on the CPU).
// @variant kv_store_f32 -DKV_TYPE=0
// @variant kv_store_f16 -DKV_TYPE=1
// @variant kv_store_bf16 -DKV_TYPE=2
// @variant kv_store_q8_0 -DKV_TYPE=3
#version 450
#include "kv_rows.glsl"

layout(local_size_x = 256) in;
layout(std430, binding = 4) readonly buffer KSrc { float ksrc[]; };  // [n_tok][row_values]
layout(std430, binding = 5) readonly buffer VSrc { float vsrc[]; };  // [n_tok][row_values]
layout(push_constant) uniform Push {
  KvLayout L;
  uint n_tok;
  uint row_values;
  uint units;  // per row: row_values, or its 32-value blocks for Q8_0
} pc;

float src_value(bool is_v, uint i) { return is_v ? vsrc[i] : ksrc[i]; }

// quantize_ref.cpp's round_away_clamp(v, -127, 127).
int round_away_clamp127(float v) {
  if (!(v >= -127.0)) return -127;
  if (v >= 127.0) return 127;
  int t = int(v);
  float frac = v - float(t);
  return frac >= 0.5 ? t + 1 : (frac <= -0.5 ? t - 1 : t);
}

void main() {
  uint total = pc.n_tok * 2u * pc.units;
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint g = gl_GlobalInvocationID.x; g < total; g += stride) {
    uint unit = g % pc.units;
    uint part = (g / pc.units) % 2u;  // 0 K, 1 V
    uint t = g / (2u * pc.units);
    uint base;
    if (!kv_row_base(pc.L, table_start[t], positions[t], base)) continue;
    bool is_v = part == 1u;
    uint row = base + (is_v ? pc.L.v_offset : pc.L.k_offset);
    uint src = t * pc.row_values;
#if KV_TYPE == KV_F32
    kvw[(row >> 2) + unit] = floatBitsToUint(src_value(is_v, src + unit));
#elif KV_TYPE == KV_F16
    kv_put(row + 2u * unit, float_to_half_bits(src_value(is_v, src + unit)), 16u);
#elif KV_TYPE == KV_BF16
    kv_put(row + 2u * unit, float_to_bf16_bits(src_value(is_v, src + unit)), 16u);
#else
    uint first = unit * 32u;
    uint n = min(32u, pc.row_values - first);
    float amax = 0.0;
    for (uint j = 0u; j < n; ++j) {
      float a = abs(src_value(is_v, src + first + j));
      if (a > amax) amax = a;
    }
    float d = amax / 127.0;
    float id = d != 0.0 ? 1.0 / d : 0.0;
    uint blk = row + unit * 34u;
    kv_put(blk, float_to_half_bits(d), 16u);
    for (uint j = 0u; j < 32u; ++j) {
      float v = j < n ? src_value(is_v, src + first + j) : 0.0;
      kv_put(blk + 2u + j, uint(round_away_clamp127(v * id)) & 0xffu, 8u);
    }
#endif
  }
}
