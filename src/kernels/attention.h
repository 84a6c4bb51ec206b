// attention.h: causal scaled-dot-product attention of one query head over a paged KV cache, and the
// conversions between float rows and the cache's element types.
//
// The cache is described only by addresses (kv::PagedRows, built by kv::Cache::rows: the one place
// that knows the block layout), so this kernel knows nothing of how the cache is managed. The softmax is computed online, one chunk of
// positions at a time (running max and sum, rescaling the accumulator), so the scratch is a few
// head-sized rows whatever the context length.
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"
#include "kernels/matmul.h"
#include "kv/paged_rows.h"

namespace moe::kernels {

using kv::PagedRows;

// Cache element types this kernel reads and writes: the elements of kv/kv_types.h's table (F32, F16,
// BF16, Q8_0).
bool kv_element_supported(GgmlType type);
// Bytes of one row of n values (Q8_0 rounds up to whole 32-value blocks, the padding being zeros);
// kv::kv_row_bytes for the element's KV type.
size_t kv_row_bytes(GgmlType type, int64_t n);
// Encodes n floats into a row of `type` (dst holds kv_row_bytes(type, n)).
void store_kv_row(GgmlType type, const float* src, int64_t n, uint8_t* dst);
// Decodes values [first, first + n) of a row into dst.
void load_kv_values(GgmlType type, const uint8_t* row, int64_t first, int64_t n, float* dst);

// Scratch one attend_head call needs (per thread).
size_t attention_scratch_bytes(int64_t head_dim);

// out[0..head_dim) = sum_p softmax_p(scale * q.k_p) v_p over positions p in [0, n_ctx), where k_p and
// v_p are values [kv_first, kv_first + head_dim) of row p (the query's KV head). Exact precision
// accumulates in double, Fast in float.
void attend_head(const float* q, const PagedRows& k, const PagedRows& v, int64_t kv_first, int64_t head_dim,
                 int64_t n_ctx, float scale, float* out, void* scratch, Precision p);

}  // namespace moe::kernels
