// ops.h: the element-wise and row-wise operations of a Llama/Mixtral layer: RMSNorm, rotary position
// embedding, softmax, MoE routing, SwiGLU, residual add. Scalar code whose reductions run in double: these ops are
// a small share of the time next to the matmuls, and double keeps them exact enough that the
// verification path's error comes from the weights, not from here.
#pragma once
#include <cstdint>

namespace moe::kernels {

// y = x / sqrt(mean(x^2) + eps) * w over n values (y may alias x).
void rmsnorm(const float* x, const float* w, float eps, int64_t n, float* y);

// The rotation of RoPE at one position, n_rot / 2 pairs: cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i)
// with theta_i = pos * base^(-2i / n_rot).
void rope_table(int64_t pos, int64_t n_rot, double base, float* cs);
// Rotates, in each of n_heads heads of head_dim values, the adjacent pairs (x[2i], x[2i+1]) for
// 2i < n_rot (the GGUF `llama` convention: the converter permuted Q/K rows to match it).
void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs);
// The same rotation on Hugging Face's row order: the pairs (x[i], x[i + n_rot/2]) for i < n_rot/2 (the
// "rotate half" form). On rows in HF order it gives exactly what rope_apply gives on the GGUF-permuted
// rows, so HF weights are used as stored, without a permuted copy.
void rope_apply_rotate_half(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs);

// In-place softmax over n values (max subtracted; double sum).
void softmax(float* x, int64_t n);

// Mixtral's router for one token: softmax of the n_exp logits (in place: `logits` holds the
// probabilities after), the k most probable experts in ids[0..k) (ties to the lower expert id), and
// their probabilities renormalised to sum 1 in ws[0..k). Needs 1 <= k <= n_exp.
void route_top_k(float* logits, int64_t n_exp, int64_t k, int32_t* ids, float* ws);

// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
void silu_mul(float* gate, const float* up, int64_t n);

// y[i] += x[i].
void add(float* y, const float* x, int64_t n);

}  // namespace moe::kernels
