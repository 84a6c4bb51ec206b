// router_top_k.comp: the Mixtral router per token (ops.h router_top_k), one invocation per token:
// softmax over the n_expert logits (max subtracted, f32 sum), the top k by (probability descending,
// expert id ascending) — the CPU backend's "ties to the lower id" — and their probabilities
// renormalised to sum 1. n_expert is small (8 for Mixtral), so a serial loop per token is cheaper than
// any cooperation, and the selection recomputes each probability rather than holding n_expert of them.
#version 450
#define MAX_K 32u
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Logits { float logits[]; };  // [n_tok][n_expert]
layout(std430, binding = 1) writeonly buffer Ids { int ids[]; };         // [n_tok][k]
layout(std430, binding = 2) writeonly buffer Weights { float wts[]; };   // [n_tok][k]
layout(push_constant) uniform Push {
  uint n_tok;
  uint n_expert;
  uint k;
} pc;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint t = gl_GlobalInvocationID.x; t < pc.n_tok; t += stride) {
    uint base = t * pc.n_expert;
    float mx = logits[base];
    for (uint e = 1u; e < pc.n_expert; ++e) mx = max(mx, logits[base + e]);
    float sum = 0.0;
    for (uint e = 0u; e < pc.n_expert; ++e) sum += exp(logits[base + e] - mx);
    float chosen_p[MAX_K];
    float total = 0.0;
    float prev_p = 0.0;
    int prev_id = -1;
    for (uint j = 0u; j < pc.k; ++j) {
      int best = -1;
      float best_p = 0.0;
      for (uint e = 0u; e < pc.n_expert; ++e) {
        float p = exp(logits[base + e] - mx) / sum;
        // Still available: after the previous pick in (p descending, id ascending) order.
        bool after = prev_id < 0 || p < prev_p || (p == prev_p && int(e) > prev_id);
        if (after && (best < 0 || p > best_p)) {
          best = int(e);
          best_p = p;
        }
      }
      ids[t * pc.k + j] = best;
      chosen_p[j] = best_p;
      total += best_p;
      prev_p = best_p;
      prev_id = best;
    }
    for (uint j = 0u; j < pc.k; ++j) wts[t * pc.k + j] = chosen_p[j] / total;
  }
}
