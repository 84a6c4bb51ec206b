// quant.cpp: the public entry points of src/quant. Validates the arguments a caller (or a file) can get
// wrong, then picks the implementation: the SIMD kernel for the requested ISA when that file has one for
// the type (simd.h functions return false otherwise), falling back AVX-512 -> AVX2 -> scalar reference.
// Dequantization and weight quantization are scalar only: they run once per load or conversion, while
// dot products and activation quantization run in every matmul.
#include "quant/quant.h"

#include <cstring>

#include "quant/ref.h"
#include "quant/simd.h"
#include "util/error.h"

namespace moe::quant {
namespace {

// Elements per block of a type this module handles (0 for others). A switch, not the type table's
// search, because vec_dot checks it once per row of every matmul.
int64_t block_size(GgmlType type) {
  switch (type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
      return 1;
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1:
    case GgmlType::Q8_0: case GgmlType::Q8_1:
      return 32;
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::Q8_K:
      return 256;
    default:
      return 0;
  }
}

// Throws moe::Error unless n is a whole number of blocks of a type this module handles.
void check_row(const char* what, GgmlType type, int64_t n) {
  const int64_t bs = block_size(type);
  if (bs == 0) fail(what, ": unsupported tensor type ", type_name(type));
  if (n < 0 || n % bs != 0)
    fail(what, ": ", n, " elements is not a whole number of ", type_name(type), " blocks of ", bs);
}

// The best ISA not above the requested one that this CPU has (callers may ask for any).
Isa usable(Isa isa) { return isa_supported(isa) ? isa : detected_isa(); }

}  // namespace

bool is_supported(GgmlType type) { return block_size(type) != 0; }

bool can_quantize(GgmlType type) {
  switch (type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

GgmlType activation_type(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
      return GgmlType::F32;
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: case GgmlType::Q8_1:
      return GgmlType::Q8_0;
    case GgmlType::Q4_1: case GgmlType::Q5_1:
      return GgmlType::Q8_1;
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::Q8_K:
      return GgmlType::Q8_K;
    default:
      fail("no dot product for weights of type ", type_name(weight_type));
  }
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  check_row("dequantize", type, n);
  ref::dequantize(type, src, dst, n);
}

size_t quantize_row(GgmlType type, const float* src, void* dst, int64_t n, const float* importance) {
  if (!can_quantize(type)) fail("quantize: cannot produce tensor type ", type_name(type));
  check_row("quantize", type, n);
  ref::quantize(type, src, dst, n, importance);
  return static_cast<size_t>(*row_bytes(type, static_cast<uint64_t>(n)));
}

void quantize_activations(GgmlType act_type, const float* x, void* dst, int64_t n) {
  quantize_activations_isa(active_isa(), act_type, x, dst, n);
}

void quantize_activations_isa(Isa isa, GgmlType act_type, const float* x, void* dst, int64_t n) {
  check_row("quantize_activations", act_type, n);
  isa = usable(isa);
  if (isa >= Isa::AVX512 && detail::quantize_activations_avx512(act_type, x, dst, n)) return;
  if (isa >= Isa::AVX2 && detail::quantize_activations_avx2(act_type, x, dst, n)) return;
  switch (act_type) {
    case GgmlType::Q8_0: return ref::quantize_q8_0(x, dst, n);
    case GgmlType::Q8_1: return ref::quantize_q8_1(x, dst, n);
    case GgmlType::Q8_K: return ref::quantize_q8_K(x, dst, n);
    case GgmlType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float)); return;
    default: fail("quantize_activations: ", type_name(act_type), " is not an activation block type");
  }
}

float vec_dot_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x) {
  activation_type(weight_type);  // throws for a type without a dot product
  check_row("vec_dot", weight_type, n);
  isa = usable(isa);
  float out = 0;
  if (isa >= Isa::AVX512 && detail::vec_dot_avx512(weight_type, n, w, x, &out)) return out;
  if (isa >= Isa::AVX2 && detail::vec_dot_avx2(weight_type, n, w, x, &out)) return out;
  return ref::vec_dot(weight_type, n, w, x);
}

float vec_dot(GgmlType weight_type, int64_t n, const void* w, const void* x) {
  return vec_dot_isa(active_isa(), weight_type, n, w, x);
}

void vec_dot_tokens_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride,
                        int64_t n_tok, float* out, size_t out_stride) {
  activation_type(weight_type);
  check_row("vec_dot_tokens", weight_type, n);
  if (n_tok < 0) fail("vec_dot_tokens: negative token count ", n_tok);
  isa = usable(isa);
  if (n_tok > 1 && isa >= Isa::AVX512 &&
      detail::vec_dot_tokens_avx512(weight_type, n, w, x, x_stride, n_tok, out, out_stride))
    return;
  // No many-token kernel for this type and ISA: one dot product per token gives the same numbers.
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t t = 0; t < n_tok; ++t)
    out[static_cast<size_t>(t) * out_stride] = vec_dot_isa(isa, weight_type, n, w, xb + static_cast<size_t>(t) * x_stride);
}

void vec_dot_tokens(GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_tok,
                    float* out, size_t out_stride) {
  vec_dot_tokens_isa(active_isa(), weight_type, n, w, x, x_stride, n_tok, out, out_stride);
}

}  // namespace moe::quant
