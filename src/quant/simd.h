// simd.h: the entry points of the SIMD dot-product kernels (quant/*_avx2.cpp, quant/*_avx512.cpp).
// quant.cpp's dispatcher calls these for active_isa(); each returns false for a type it has no kernel
// for, and the dispatcher then uses the scalar reference. Never call these on a CPU without the ISA.
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"

namespace moe::quant::detail {

// *out = sum over n elements of w (weight blocks) times x (activation_type(type) blocks, or floats).
bool vec_dot_avx2(GgmlType type, int64_t n, const void* w, const void* x, float* out);
bool vec_dot_avx512(GgmlType type, int64_t n, const void* w, const void* x, float* out);

// out[t * out_stride] = the dot product of w with token t's row x + t * x_stride, for t < n_tok, each
// bit-identical to vec_dot_* of that row alone; false for a type without a many-token kernel.
bool vec_dot_tokens_avx512(GgmlType type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                           float* out, size_t out_stride);

// The sub-block lane kernels (quant/lanes.h): x in the lane layout for lanes_sub_block(type).
bool vec_dot_lanes_avx512(GgmlType type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                          float* out, size_t out_stride);
bool lanes_rows_avx512(GgmlType type, int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x,
                       size_t x_stride, int64_t n_tok, float* y, size_t y_stride);

// Activation quantization (x floats -> act_type blocks); false when not provided for that type.
bool quantize_activations_avx2(GgmlType act_type, const float* x, void* dst, int64_t n);
bool quantize_activations_avx512(GgmlType act_type, const float* x, void* dst, int64_t n);

}  // namespace moe::quant::detail
