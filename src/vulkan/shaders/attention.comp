// attention.comp: causal attention of one (token, query head) per workgroup over the paged KV cache
// (ops.h attention), with an online softmax over chunks of 64 positions so that no score matrix is
// ever stored: per chunk, each invocation scores one position (q . k in f32, then * scale), the chunk
// max and the sum of exp(s - m) are tree-reduced in shared memory, and each invocation rescales and
// accumulates its own dimensions of the output (d = lane, lane + 64, ...) over the chunk's V rows.
//
// Batch invariance: a workgroup's arithmetic depends only on its token (its q, its position, its
// table), never on how many tokens the dispatch holds. Grouped-query heads: query head h reads KV
// head h / (n_head / n_head_kv). head_dim is at most 512 (the host checks).
//
// The attention_mutated_* variants drop the accumulator's rescale when the running max grows (a
// classic online-softmax bug): the tests run them through the same comparison to show it fails.
// @variant attention_f32 -DKV_TYPE=0
// @variant attention_f16 -DKV_TYPE=1
// @variant attention_bf16 -DKV_TYPE=2
// @variant attention_q8_0 -DKV_TYPE=3
// @variant attention_mutated_f16 -DKV_TYPE=1 -DMUTATE_NO_RESCALE=1
#version 450
#define KV_READONLY 1
#include "kv_rows.glsl"

#define WG 64u
#define MAX_HEAD_DIM 512u
#define PER_LANE 8  // MAX_HEAD_DIM / WG output dimensions per invocation

layout(local_size_x = 64) in;
layout(std430, binding = 4) readonly buffer Q { float q[]; };     // [n_tok][n_head][head_dim]
layout(std430, binding = 5) writeonly buffer Out { float o[]; };  // [n_tok][n_head][head_dim]
layout(push_constant) uniform Push {
  KvLayout L;
  uint n_tok;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint tok0;  // first token of this dispatch (grids over 65535 tokens are split)
  float scale;
} pc;

shared float q_sh[MAX_HEAD_DIM];
shared float red[WG];
shared float p_sh[WG];
shared uint base_sh[WG];

void main() {
  uint lane = gl_LocalInvocationID.x;
  uint h = gl_WorkGroupID.x;
  uint t = pc.tok0 + gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
  if (h >= pc.n_head || t >= pc.n_tok) return;  // uniform over the workgroup
  uint hd = pc.head_dim;
  uint kv_first = (h / (pc.n_head / pc.n_head_kv)) * hd;  // the KV head's first value in a row
  uint qo = (t * pc.n_head + h) * hd;
  for (uint i = lane; i < hd; i += WG) q_sh[i] = q[qo + i];
  int start = table_start[t];
  int pos = positions[t];
  uint n_ctx = pos >= 0 ? uint(pos) + 1u : 0u;

  float acc[PER_LANE];
  for (int r = 0; r < PER_LANE; ++r) acc[r] = 0.0;
  float m = uintBitsToFloat(0xff800000u);  // -inf
  float l = 0.0;
  barrier();

  for (uint c0 = 0u; c0 < n_ctx; c0 += WG) {
    uint cn = min(WG, n_ctx - c0);
    // Score one position per invocation.
    float s = uintBitsToFloat(0xff800000u);
    uint base = 0u;
    bool valid = lane < cn && kv_row_base(pc.L, start, int(c0 + lane), base);
    if (valid) {
      uint krow = base + pc.L.k_offset;
      float d = 0.0;
      for (uint i = 0u; i < hd; ++i) d += q_sh[i] * kv_value(krow, kv_first + i);
      s = d * pc.scale;
    }
    base_sh[lane] = valid ? base : 0xffffffffu;
    red[lane] = s;
    barrier();
    for (uint w = WG / 2u; w > 0u; w >>= 1) {
      if (lane < w) red[lane] = max(red[lane], red[lane + w]);
      barrier();
    }
    float m_new = max(m, red[0]);
    barrier();
    // exp(-inf - finite) = 0 on the first chunk; a chunk of only invalid rows leaves m at -inf.
    float corr = m == m_new ? 1.0 : exp(m - m_new);
    float p = valid ? exp(s - m_new) : 0.0;
    p_sh[lane] = p;
    red[lane] = p;
    barrier();
    for (uint w = WG / 2u; w > 0u; w >>= 1) {
      if (lane < w) red[lane] += red[lane + w];
      barrier();
    }
    l = l * corr + red[0];
    // Each invocation's output dimensions over the chunk's V rows.
    for (int r = 0; r < PER_LANE; ++r) {
      uint d = lane + uint(r) * WG;
      if (d >= hd) break;
#ifndef MUTATE_NO_RESCALE
      float a = acc[r] * corr;
#else
      float a = acc[r];
#endif
      for (uint j = 0u; j < cn; ++j) {
        uint b = base_sh[j];
        if (b != 0xffffffffu) a += p_sh[j] * kv_value(b + pc.L.v_offset, kv_first + d);
      }
      acc[r] = a;
    }
    m = m_new;
    barrier();  // red, p_sh and base_sh are rewritten by the next chunk
  }

  float inv = l > 0.0 ? 1.0 / l : 0.0;
  for (int r = 0; r < PER_LANE; ++r) {
    uint d = lane + uint(r) * WG;
    if (d < hd) o[qo + d] = acc[r] * inv;
  }
}
