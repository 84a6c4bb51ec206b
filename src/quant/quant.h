// quant.h: the arithmetic of every GGUF block format: dequantize, quantize, and fused dot products
// against 8-bit-quantized activations. Each operation has a scalar reference (quant/*_ref.cpp) that is
// the definition; SIMD versions (*_avx2.cpp, *_avx512.cpp) must equal it and are chosen at run time
// through util/cpu.h (active_isa()).
//
// Dispatch happens once per operation: kernels_for(type, isa) validates the type and resolves the
// kernels of (weight type, ISA) into plain function pointers, which a matmul then calls per row or tile
// without further checks. The checked one-call entry points below (vec_dot, quantize_activations, ...)
// are the same kernels behind a per-call check, for tests and one-off uses.
//
// Block layouts are bit-exact with GGUF, so files quantized elsewhere load here and files written here
// load elsewhere.
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"
#include "util/cpu.h"

namespace moe::quant {

// The resolved kernels. Their arguments are already valid: n a whole number of the weight type's blocks
// (check_row), activation rows of the matching type.
// sum over n values of weight row w times activation row x.
using DotFn = float (*)(int64_t n, const void* w, const void* x);
// out[t * out_stride] = DotFn(n, w, x + t * x_stride) for t < n_tok, bit for bit.
using DotTokensFn = void (*)(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok, float* out,
                             size_t out_stride);
// Floats x[0..n) to one row of activation blocks at dst.
using QuantizeFn = void (*)(const float* x, void* dst, int64_t n);
// A block of a matmul in the lane layout (quant/lanes.h's lanes_rows, unchecked).
using LanesRowsFn = void (*)(int64_t n, const void* w, size_t w_row_bytes, int64_t n_rows, const void* x,
                             size_t x_stride, int64_t n_tok, float* y, size_t y_stride);

// Everything a matmul with weights of one type calls, resolved for one ISA.
struct Kernels {
  GgmlType weight_type = GgmlType::F32;
  GgmlType act_type = GgmlType::F32;  // activation_type(weight_type)
  Isa isa = Isa::Scalar;              // the ISA resolved for: the requested one capped at the CPU's
  QuantizeFn quantize = nullptr;      // a float row to act_type blocks (F32: a copy)
  DotFn dot = nullptr;                // one weight row . one activation row
  DotTokensFn dot_tokens = nullptr;   // one weight row . many rows; null: dot per token is the same
  LanesRowsFn lanes_rows = nullptr;   // the sub-block lane kernel (lanes.h), where use_lanes(weight_type)
  LanesRowsFn lanes_rows_repacked = nullptr;  // the same over repacked rows, where use_repacked(weight_type)

  // The many-token product through dot_tokens where there is one, else dot per token (same numbers).
  void dot_many(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok, float* out,
                size_t out_stride) const {
    if (dot_tokens != nullptr && n_tok > 1) return dot_tokens(n, w, x, x_stride, n_tok, out, out_stride);
    const auto* xb = static_cast<const uint8_t*>(x);
    for (int64_t t = 0; t < n_tok; ++t)
      out[static_cast<size_t>(t) * out_stride] = dot(n, w, xb + static_cast<size_t>(t) * x_stride);
  }
};

// The kernels of weight_type for `isa` (capped at what the CPU has): for each operation the best of the
// AVX-512, AVX2 and scalar implementations not above it. Throws moe::Error for a type without a dot
// product.
Kernels kernels_for(GgmlType weight_type, Isa isa);

// The activation quantizer for act_type (Q8_0, Q8_1, Q8_K, or F32 = copy) on `isa`; throws for another.
QuantizeFn activation_quantizer(GgmlType act_type, Isa isa);

// Throws moe::Error naming `what` unless n is a whole number of blocks of a type this module handles.
void check_row(const char* what, GgmlType type, int64_t n);

// True for the types this project can compute with (load, dequantize, dot):
// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_0/Q8_1/Q8_K
// as activation types).
bool is_supported(GgmlType type);
// True for the types quantize_row can produce.
bool can_quantize(GgmlType type);

// dst[0..n) = the values the blocks encode. n must be a multiple of the block size.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// Encodes n floats (a multiple of the block size) into blocks; returns bytes written
// (== row_bytes(type, n)). `importance` (n weights, may be null) biases the K-quant scale search.
size_t quantize_row(GgmlType type, const float* src, void* dst, int64_t n, const float* importance = nullptr);

// The activation block type a weight type's dot product consumes: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
// Q4_1/Q5_1 (they need the block sums), Q8_K for the K-quants, F32 for F32/F16/BF16.
GgmlType activation_type(GgmlType weight_type);

// Quantizes one activation row x[0..n) into activation_type blocks (dst sized row_bytes(act, n)).
// act_type F32 copies the floats, so callers can treat float-weight matmuls the same way.
void quantize_activations(GgmlType act_type, const float* x, void* dst, int64_t n);
// The same with an explicit ISA (capped at what the CPU has; tests compare each with Isa::Scalar).
void quantize_activations_isa(Isa isa, GgmlType act_type, const float* x, void* dst, int64_t n);

// sum_i w[i]*x[i] over n elements, w a row of `weight_type` blocks, x a row of
// activation_type(weight_type) blocks (or float for F32/F16/BF16). Uses active_isa().
float vec_dot(GgmlType weight_type, int64_t n, const void* w, const void* x);
// The same with an explicit ISA (tests compare each with Isa::Scalar).
float vec_dot_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x);

// Many tokens against one weight row: out[t * out_stride] = vec_dot(weight_type, n, w, x + t * x_stride)
// for t < n_tok, bit for bit, but with the row's blocks unpacked once for a group of tokens (the
// prefill and batched-decode path of matmul). x_stride is the byte distance between token rows.
// With an explicit ISA, checked per call (matmul calls Kernels::dot_many, resolved once).
void vec_dot_tokens_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride,
                        int64_t n_tok, float* out, size_t out_stride);

}  // namespace moe::quant
