// ref.h: the scalar reference of every block format, the definition the SIMD kernels are tested against.
// quant.cpp's kernels_for() starts from these (Isa::Scalar, and every type a SIMD file has no kernel for).
// They take already-validated arguments: n a multiple of the type's block size, a type that has the
// operation (the dispatcher checks and throws moe::Error first).
//
// Conventions a SIMD kernel must follow to equal these (see each function's comment in the .cpp):
// - Activation blocks: Q8_0 and Q8_1 use d = amax/127 stored as a half, q = roundf(x * (1/d)) with the
//   UNROUNDED float d (ties away from zero); Q8_1 adds s = half(d * sum(q)). Q8_K keeps d as a float and
//   takes its sign from the largest-magnitude element: d = -max/127 where |max| = amax, q = min(127,
//   round-half-even(x * (-127/max))), bsums[j] = sum of q[16j..16j+15].
// - Dot products: per block (legacy) or super-block (K-quants) the integer part is computed exactly in
//   int32, then turned into float once: sum += (d_w*d_x) * float(isum) [- (m_w*d_x) * float(msum)] (see
//   dot_ref.cpp for each type's exact expression), blocks accumulated in order into one float.
// - F32/F16/BF16 weights dot float activations: one float accumulator, elements in order.
#pragma once
#include <cstdint>

#include "gguf/ggml_types.h"
#include "quant/quant.h"

namespace moe::quant::ref {

// Decodes n values (n a multiple of the block size). Every type of is_supported().
void dequantize(GgmlType type, const void* src, float* dst, int64_t n);

// Encodes n values; importance may be null. Every type of can_quantize().
void quantize(GgmlType type, const float* src, void* dst, int64_t n, const float* importance);

// Activation quantizers (Q8_0, Q8_1, Q8_K).
void quantize_q8_0(const float* x, void* dst, int64_t n);
void quantize_q8_1(const float* x, void* dst, int64_t n);
void quantize_q8_K(const float* x, void* dst, int64_t n);

// The dot product of a weight row of `type` with an activation row (activation_type(type) blocks, or
// floats for F32/F16/BF16); null for a type without one.
DotFn dot_kernel(GgmlType type);

// Unpacking of the packed K-quant scales (shared by the decoders and the dot products).
// Q3_K: the sixteen signed scales (-32..31) of a super-block from its 12 packed bytes.
void unpack_q3_K_scales(const uint8_t* packed, int* scales);
// Q4_K/Q5_K: six-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
void unpack_k4_scale_min(const uint8_t* packed, int j, int* scale, int* min);
// The inverse: eight six-bit scales and mins (0..63) into the 12 packed bytes.
void pack_k4_scales(const int* scales, const int* mins, uint8_t* packed);

}  // namespace moe::quant::ref
