// ops.h: the operations of a Llama/Mixtral forward pass as Vulkan compute kernels, each recorded into a
// Stream (context.h). Agnostic of the model: they take buffer ranges and sizes, never a layer or a
// tensor name. Each has a CPU scalar reference it is tested against on fresh random inputs
// (src/kernels for the element-wise ops and attention, quant's dequantization for the matrix products).
//
// Conventions:
//  - Activations are f32, row-major: "[n][cols]" means n rows of cols floats, rows packed.
//  - Index buffers are int32 (or uint32 where said).
//  - Every op reads its inputs after the last Stream::barrier() and writes only its outputs; callers put
//    a barrier() between an op and the next op that reads its output.
//  - Batch invariance: every output value of a token depends only on that token's own inputs, computed
//    with the same operations in the same order whatever the number of tokens in the call (a tile of
//    tokens shares the loads of a weight, never the reduction order). So a token's logits are
//    bit-identical alone or in any batch on the same device.
#pragma once
#include <cstdint>

#include "gguf/ggml_types.h"
#include "vulkan/context.h"

namespace moe::vk {

// ---- matrix products (ops_matmul.cpp) -------------------------------------------------------------

// A matrix in device memory: `rows` rows of `cols` values in a GGUF block format, each row
// row_bytes(type, cols) bytes, rows packed (exactly the bytes of the GGUF tensor).
struct DeviceMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  BufferRef data;
};

// The weight types the matrix products and get_rows take: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool matmul_supported(GgmlType type);

// y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tok: x [n_tok][w.cols], y [n_tok][w.rows].
// Decode (n_tok small) and prompt/batch (tiled over tokens) shapes share one reduction order per value.
void matmul(Stream& s, const DeviceMatrix& w, const BufferRef& x, const BufferRef& y, int64_t n_tok);

// One expert's product over the slots routed to it (see group_by_expert): for each slot s in
// [offsets[e], offsets[e+1]): y[s][r] = sum_c W[r][c] * x[row(s)][c], where row(s) = slot_tokens[s] when
// x_by_token (x [n_tok][cols], the FFN input) and row(s) = s otherwise (x [n_slots][cols], e.g. the
// SwiGLU output feeding the down projection). y [n_slots][w.rows]. `max_slots` bounds the slots any
// expert can have (the token count of the step); the grid is sized by it and idle groups exit.
void matmul_expert(Stream& s, const DeviceMatrix& w, int32_t expert, const BufferRef& x, bool x_by_token,
                   const BufferRef& slot_tokens, const BufferRef& expert_offsets, int64_t max_slots,
                   const BufferRef& y);

// out[i][c] = dequantized row ids[i] of `table` (the embedding lookup): ids int32 [n], out [n][table.cols].
// Ids are checked on the host before they reach the device.
void get_rows(Stream& s, const DeviceMatrix& table, const BufferRef& ids, const BufferRef& out, int64_t n);

// ---- element-wise and row ops (ops_elementwise.cpp) -----------------------------------------------

// y[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w for n_rows rows of n values (y may be x).
void rms_norm(Stream& s, const BufferRef& x, const BufferRef& w, const BufferRef& y, int64_t n_rows, int64_t n,
              float eps);

// RoPE in place on x [n_tok][n_heads][head_dim] at positions pos (int32 [n_tok]), rotating n_rot values
// of each head: adjacent pairs (kernels::rope_apply) or, with rotate_half, pairs (i, i + n_rot/2)
// (kernels::rope_apply_rotate_half); theta_i = pos * base^(-2i / n_rot).
void rope(Stream& s, const BufferRef& x, const BufferRef& pos, int64_t n_tok, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float freq_base, bool rotate_half);

// gate[i] = silu(gate[i]) * up[i] for i < n.
void swiglu(Stream& s, const BufferRef& gate, const BufferRef& up, int64_t n);

// y[i] += x[i] for i < n.
void add(Stream& s, const BufferRef& y, const BufferRef& x, int64_t n);

// out[i] = x[idx[i]] for n rows of cols floats (idx int32 [n]): the rows whose logits are wanted.
void gather_rows(Stream& s, const BufferRef& x, const BufferRef& idx, const BufferRef& out, int64_t n, int64_t cols);

// ---- mixture of experts (ops_moe.cpp) --------------------------------------------------------------

// Router: for each token, softmax over logits [n_tok][n_expert], the top k experts (ties to the lower
// id, highest weight first) and their weights renormalised to sum 1 (Mixtral):
// ids int32 [n_tok][k], weights f32 [n_tok][k].
void router_top_k(Stream& s, const BufferRef& logits, int64_t n_tok, int64_t n_expert, int64_t k,
                  const BufferRef& ids, const BufferRef& weights);

// Slots: the n_tok * k (token, choice) pairs ordered by expert, then by token. Writes
// expert_offsets uint32 [n_expert + 1] (expert e owns slots [offsets[e], offsets[e+1])),
// slot_tokens int32 [n_tok * k] (each slot's token) and token_slots int32 [n_tok][k] (the slot of each
// of ids[t][j]). One workgroup: the order is deterministic.
void group_by_expert(Stream& s, const BufferRef& ids, int64_t n_tok, int64_t k, int64_t n_expert,
                     const BufferRef& expert_offsets, const BufferRef& slot_tokens, const BufferRef& token_slots);

// x[t] += sum over the token's k choices in increasing expert id of weights[t][j] * y[token_slots[t][j]]
// (y [n_slots][n], x [n_tok][n]): the weighted expert outputs added to the residual, in the CPU
// backend's order (expert order).
void moe_combine(Stream& s, const BufferRef& y, const BufferRef& ids, const BufferRef& weights,
                 const BufferRef& token_slots, int64_t n_tok, int64_t k, int64_t n, const BufferRef& x);

// ---- attention over the paged KV cache (ops_attention.cpp) -----------------------------------------

// The device copy of a kv::Cache's blocks (kv/cache.h's layout, the same block ids): each block is
// block_bytes; within it, layer l's K rows start at k_offset and its V rows at v_offset, block_tokens
// rows of row_bytes each (one token's n_head_kv * head_dim values of `element`: F32, F16, BF16 or Q8_0).
struct PagedKv {
  BufferRef data;  // all blocks
  GgmlType element = GgmlType::F16;
  uint64_t block_bytes = 0;
  uint64_t row_bytes = 0;
  uint64_t k_offset = 0;  // of the layer being run
  uint64_t v_offset = 0;
  int64_t block_tokens = 16;
};

// Where each token of a step lives: tables int32 (the block tables of the step's sequences, one after
// another), table_start int32 [n_tok] (where the token's sequence table starts in `tables`) and
// positions int32 [n_tok].
struct TokenPages {
  BufferRef tables;
  BufferRef table_start;
  BufferRef positions;
  int64_t n_tok = 0;
};

// Writes each token's K and V rows (k, v: f32 [n_tok][row_values]) into its position's rows of the
// layer (kernels::store_kv_row's encoding).
void kv_store(Stream& s, const PagedKv& kv, const TokenPages& pages, const BufferRef& k, const BufferRef& v,
              int64_t row_values);

// Causal attention: for token t at position p, head h, out[t][h] = sum over positions i <= p of its
// sequence of softmax_i(scale * q[t][h] . k_i) v_i, with k_i, v_i the KV head h / (n_head / n_head_kv)
// of row i. q, out: f32 [n_tok][n_head][head_dim]. Online softmax over chunks of positions: never an
// n x n score matrix. Run kv_store (and a barrier) first: a token attends to its own row.
void attention(Stream& s, const PagedKv& kv, const TokenPages& pages, const BufferRef& q, const BufferRef& out,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale);

// ---- measurement (ops_copy.cpp) ---------------------------------------------------------------------

// dst = src (uint32 words, n_bytes a multiple of 16) with a streaming compute shader: the copy that
// measures the device's memory bandwidth for the roofline (moe bench --device).
void copy_words(Stream& s, const BufferRef& src, const BufferRef& dst, uint64_t n_bytes);

}  // namespace moe::vk
