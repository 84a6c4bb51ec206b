// matmul.h: y[t][r] = sum_c W[r][c] * x[t][c] for a batch of tokens, W in any supported GGUF block
// format, threaded over output rows so each thread streams its own slice of the weights.
//
// Two precisions:
//  - Fast: the activations are quantized once per matmul to quant::activation_type(W) (8-bit blocks)
//    and each dot product is quant::vec_dot (integer SIMD), as llama.cpp computes it. On AVX-512 the
//    K-quants Q2_K/Q3_K/Q4_K/Q6_K and Q8_0 (rows of a multiple of 256 values) use the sub-block lane
//    kernels instead (quant/lanes.h: the same Q8_K or Q8_0 levels in another order, a 4-row x 3-token
//    micro-kernel for many tokens).
//  - Exact: the activations stay float; each weight row is dequantized into per-thread scratch and the
//    dot product is accumulated in double. This is the exact function of the dequantized weights up to
//    one float rounding of the result, used to verify logits against a float64 reference.
// F32/F16/BF16 weights use float activations in both.
//
// Batch invariance: y[t][r] depends only on row r and token t's own activations (per-token
// quantization; the many-token kernels compute each (t, r) with the single-token kernel's operations in
// its order), never on which other tokens share the batch.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/tensor.h"
#include "util/thread_pool.h"

namespace moe::kernels {

enum class Precision { Fast, Exact };

// Activations of n_tok tokens, cols values each: always the floats; in Fast precision for a block
// weight type also their quantized rows (qtype blocks, q_row_bytes per token).
struct Activations {
  const float* x = nullptr;  // [n_tok][cols]
  int64_t n_tok = 0;
  int64_t cols = 0;
  GgmlType qtype = GgmlType::F32;  // F32: not quantized
  const uint8_t* q = nullptr;      // [n_tok][q_row_bytes]
  size_t q_row_bytes = 0;
  int lanes_sub = 0;  // 16 or 32: q holds quant/lanes.h rows (qtype's levels in sub-block lane order)
};

// Bytes one token's quantized activation row of `cols` values can take, for any weight type (the
// largest of the Q8_0 / Q8_1 / Q8_K row sizes); workspaces are sized with it.
size_t max_activation_row_bytes(int64_t cols);

// Wraps x for a matmul with weights of `weight_type`: in Fast precision for a block type, quantizes
// each token's row into `buf` (at least n_tok * max_activation_row_bytes(cols) bytes).
Activations prepare_activations(const float* x, int64_t n_tok, int64_t cols, GgmlType weight_type, Precision p,
                                uint8_t* buf, size_t buf_bytes, ThreadPool& pool);

// True when `a` can feed a matmul with weights of `weight_type` in precision p without re-quantizing.
bool activations_fit(const Activations& a, GgmlType weight_type, Precision p);

// y[t][r] for t < a.n_tok, r < w.rows (y row stride w.rows). w must be one matrix (count 1) with
// w.cols == a.cols. `deq_scratch` holds pool.size() * w.cols floats (Exact precision only; may be null
// for Fast).
void matmul(const TensorView& w, const Activations& a, float* y, Precision p, ThreadPool& pool, float* deq_scratch);

// The loop over output rows that matmul hands to the pool, for ThreadPool::parallel_for_all to run
// several matmuls in one parallel region (each row computed exactly as matmul computes it). The loop
// holds copies of w and a; x, the quantized rows, y and the scratch must outlive its run. Checks and
// throws as matmul does, when called.
ThreadPool::Loop matmul_loop(const TensorView& w, const Activations& a, float* y, Precision p, float* deq_scratch);

// SwiGLU's two products fused: one loop over the shared output rows that computes rows [r0, r1) of
// gate and of up (each exactly as matmul_loop would, so the same bits) and then, while those rows are
// still in the core's cache, gate_y[t][r] = silu(gate_y[t][r]) * up_y[t][r] for every token. An expert's
// intermediate is thus finished by the thread that produced it, in the same parallel region, instead of
// a second pass over n_tok x rows floats on one thread. gate and up need the same shape (rows, cols);
// up_y keeps the raw up product. Results are silu_mul's of the unfused products, bit for bit.
ThreadPool::Loop gate_up_silu_loop(const TensorView& gate, const TensorView& up, const Activations& a, float* gate_y,
                                   float* up_y, Precision p, float* deq_scratch);

// The plain scalar definition (dequantize, accumulate in double), single-threaded: tests' reference.
void matmul_reference(const TensorView& w, const float* x, int64_t n_tok, double* y);

}  // namespace moe::kernels
