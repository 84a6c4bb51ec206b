// quant.cpp: the dispatcher of src/quant. kernels_for() validates a type once and resolves each of its
// operations to one function pointer: the scalar reference (quant/ref.h), replaced by the AVX2 kernel
// and then the AVX-512 kernel where those files have one (simd.h) and the ISA allows. matmul calls it once
// per operation; the checked entry points (vec_dot, quantize_activations, ...) go through it per call.
// Dequantization and weight quantization are scalar only: they run once per load or conversion, while
// dot products and activation quantization run in every matmul.
#include "quant/quant.h"

#include <cstring>

#include "quant/lanes.h"
#include "quant/ref.h"
#include "quant/simd.h"
#include "util/error.h"

namespace moe::quant {
namespace {

// Elements per block of a type this module handles (0 for others). A switch, not the type table's
// search: the checked entry points call it on every call.
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

// The best ISA not above the requested one that this CPU has (callers may ask for any).
Isa usable(Isa isa) { return isa_supported(isa) ? isa : detected_isa(); }

void copy_floats(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float)); }

// The single-row dot product of a type that has one, for an ISA this CPU has: the scalar reference,
// replaced by each SIMD file's kernel up to that ISA.
DotFn dot_kernel(GgmlType weight_type, Isa isa) {
  DotFn dot = ref::dot_kernel(weight_type);
  if (isa >= Isa::AVX2)
    if (DotFn f = detail::dot_avx2(weight_type)) dot = f;
  if (isa >= Isa::AVX512)
    if (DotFn f = detail::dot_avx512(weight_type)) dot = f;
  return dot;
}

}  // namespace

void check_row(const char* what, GgmlType type, int64_t n) {
  const int64_t bs = block_size(type);
  if (bs == 0) fail(what, ": unsupported tensor type ", type_name(type));
  if (n < 0 || n % bs != 0)
    fail(what, ": ", n, " elements is not a whole number of ", type_name(type), " blocks of ", bs);
}

QuantizeFn activation_quantizer(GgmlType act_type, Isa isa) {
  QuantizeFn q = nullptr;
  switch (act_type) {
    case GgmlType::Q8_0: q = ref::quantize_q8_0; break;
    case GgmlType::Q8_1: q = ref::quantize_q8_1; break;
    case GgmlType::Q8_K: q = ref::quantize_q8_K; break;
    case GgmlType::F32: return copy_floats;
    default: fail("quantize_activations: ", type_name(act_type), " is not an activation block type");
  }
  isa = usable(isa);
  if (isa >= Isa::AVX2)
    if (QuantizeFn f = detail::quantizer_avx2(act_type)) q = f;
  if (isa >= Isa::AVX512)
    if (QuantizeFn f = detail::quantizer_avx512(act_type)) q = f;
  return q;
}

Kernels kernels_for(GgmlType weight_type, Isa isa) {
  Kernels k;
  k.weight_type = weight_type;
  k.act_type = activation_type(weight_type);  // throws for a type without a dot product
  k.isa = usable(isa);
  k.quantize = activation_quantizer(k.act_type, k.isa);
  k.dot = dot_kernel(weight_type, k.isa);
  // Each ISA's many-token kernels match that ISA's single-token kernels bit for bit, so AVX-512 replaces
  // AVX2's outright (null where AVX-512 has none: its lanes or its own per-row kernel serve those types).
  if (k.isa >= Isa::AVX2) k.dot_tokens = detail::dot_tokens_avx2(weight_type);
  if (k.isa >= Isa::AVX512) {
    k.dot_tokens = detail::dot_tokens_avx512(weight_type);
    if (lanes_sub_block(weight_type) != 0) k.lanes_rows = detail::lanes_rows_avx512(weight_type);
    if (can_repack(weight_type)) k.lanes_rows_repacked = detail::lanes_rows_repacked_avx512(weight_type);
  }
  return k;
}

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
  activation_quantizer(act_type, isa)(x, dst, n);
}

float vec_dot_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x) {
  activation_type(weight_type);  // throws for a type without a dot product
  check_row("vec_dot", weight_type, n);
  return dot_kernel(weight_type, usable(isa))(n, w, x);
}

float vec_dot(GgmlType weight_type, int64_t n, const void* w, const void* x) {
  return vec_dot_isa(active_isa(), weight_type, n, w, x);
}

void vec_dot_tokens_isa(Isa isa, GgmlType weight_type, int64_t n, const void* w, const void* x, size_t x_stride,
                        int64_t n_tok, float* out, size_t out_stride) {
  const Kernels k = kernels_for(weight_type, isa);
  check_row("vec_dot_tokens", weight_type, n);
  if (n_tok < 0) fail("vec_dot_tokens: negative token count ", n_tok);
  k.dot_many(n, w, x, x_stride, n_tok, out, out_stride);
}

}  // namespace moe::quant
