// vec_kernels.h: the kernels written once over vector width: the three activation quantizers (Q8_0, Q8_1,
// Q8_K) and the float-weight dot products (F32, F16, BF16). V is a vector wrapper of one-instruction
// operations (quant/vec.h: Vec8 for AVX2, Vec16 for AVX-512); each SIMD file includes both headers and
// hands out these kernels instantiated with its width. The block
// formats' integer dot products are NOT here: their AVX2 (maddubs) and AVX-512 (VNNI dpbusd/dpwssd)
// kernels are different algorithms, each tuned for its instructions.
//
// Everything is in an anonymous namespace: each including file gets its own copy compiled for its ISA.
// (row_dot at the end adapts the per-ISA block kernels to the dispatcher's DotFn.)
//
// Quantizers: bit-identical to quant/quantize_ref.cpp, the same float operations on the same values (IEEE
// mul and div are exactly rounded in any width; max, clamping and rounding to integers are exact), with
// its NaN rules. Float dots: L-wide accumulators, so they differ from the reference only in summation
// order (quant_simd_test.cpp bounds it).
#pragma once
#include <cstdint>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "util/fp16.h"

namespace moe::quant::detail {
namespace {

// ------------------------------------------------------------------------------ activation quantizers

// Largest |x| over n (a multiple of the width) floats, ignoring NaN as the reference's "a > amax" does:
// the max keeps its second operand (the running maximum) when the first is NaN.
template <class V>
float abs_max(const float* x, int n) {
  typename V::F m = V::zero();
  for (int i = 0; i < n; i += V::kLanes) m = V::max(V::abs(V::load(x + i)), m);
  return V::reduce_max(m);
}

// Clamp to [lo, hi] with NaN -> lo (the max returns its second operand, lo, for a NaN first operand).
template <class V>
typename V::F clamp(typename V::F v, float lo, float hi) {
  return V::min(V::max(v, V::splat(lo)), V::splat(hi));
}

// C roundf (ties away from zero): truncate, then step away from zero when the dropped part is >= 0.5
// (v - trunc(v) is exact). Adding 0.5 first would be wrong for 0.49999997.
template <class V>
typename V::I round_away(typename V::F v) {
  const typename V::F t = V::trunc(v);
  return V::to_int(V::add_where_ge(t, V::abs(V::sub(v, t)), 0.5f, V::sign_one(v)));
}

// One Q8_0/Q8_1 block: qs = roundf(x * id) clamped to +-127, with d = amax / 127 unrounded (returned);
// *sum = the sum of the levels (Q8_1's s).
template <class V>
float quantize_q8_block(const float* x, int8_t* qs, uint16_t* d_half, int* sum) {
  const float amax = abs_max<V>(x, kQK);
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  *d_half = fp32_to_fp16(d);
  const typename V::F vid = V::splat(id);
  typename V::I total = V::zero_i();
  for (int k = 0; k < kQK; k += V::kLanes) {
    const typename V::I q = round_away<V>(clamp<V>(V::mul(V::load(x + k), vid), -127.0f, 127.0f));
    V::store_i8(qs + k, q);
    total = V::add_i(total, q);
  }
  *sum = V::reduce_add_i(total);
  return d;
}

template <class V>
void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  int sum;
  for (int64_t i = 0; i < n / kQK; ++i) quantize_q8_block<V>(x + kQK * i, y[i].qs, &y[i].d, &sum);
}

template <class V>
void quantize_q8_1(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i) {
    int sum;
    const float d = quantize_q8_block<V>(x + kQK * i, y[i].qs, &y[i].d, &sum);
    y[i].s = fp32_to_fp16(static_cast<float>(sum) * d);
  }
}

// Q8_K: d = 1 / iscale with iscale = -127 / max, max the first value of largest magnitude; levels
// round half to even, clamped to [-128, 127] (NaN -> -128); bsums of each 16.
template <class V>
void quantize_q8_K(const float* x, void* dst, int64_t n) {
  static_assert(16 % V::kLanes == 0, "a bsum group of 16 values must be whole registers");
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    const float amax = abs_max<V>(x, kQKK);
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    int first = 0;  // the first index with |x| == amax (the reference keeps the first on ties)
    for (int k = 0; k < kQKK; k += V::kLanes) {
      const unsigned hit = V::eq_mask(V::abs(V::load(x + k)), V::splat(amax));
      if (hit) {
        first = k + __builtin_ctz(hit);
        break;
      }
    }
    const float iscale = -127.0f / x[first];
    const typename V::F vs = V::splat(iscale);
    for (int g = 0; g < kQKK / 16; ++g) {
      typename V::I sum = V::zero_i();
      for (int k = 16 * g; k < 16 * g + 16; k += V::kLanes) {
        const typename V::I q = V::to_int(V::nearest_even(clamp<V>(V::mul(vs, V::load(x + k)), -128.0f, 127.0f)));
        V::store_i8(y[i].qs + k, q);
        sum = V::add_i(sum, q);
      }
      y[i].bsums[g] = static_cast<int16_t>(V::reduce_add_i(sum));
    }
    y[i].d = 1.0f / iscale;
  }
}

// The quantizer producing act_type blocks, or null for a type that is not an activation block type.
template <class V>
QuantizeFn activation_quantizer(GgmlType act_type) {
  switch (act_type) {
    case GgmlType::Q8_0: return &quantize_q8_0<V>;
    case GgmlType::Q8_1: return &quantize_q8_1<V>;
    case GgmlType::Q8_K: return &quantize_q8_K<V>;
    default: return nullptr;
  }
}

// --------------------------------------------------------------------------------------- float weights

// sum of w[i] * x[i]: four independent accumulators of V::kLanes, then one. The last n % kLanes
// values: on 512-bit vectors through a zero-padded register (zero lanes add nothing); on 256-bit vectors
// one by one after the reduction, the order the AVX2 kernel has always used, so that F32/F16/BF16 logits
// stay bit-identical to earlier builds on AVX2-only CPUs (tests/logits_checksums.txt holds them to it).
template <class V, typename W, typename V::F (*Load)(const W*), float (*Scalar)(W)>
float dot_float(int64_t n, const void* wv, const void* xv) {
  constexpr int L = V::kLanes;
  const auto* w = static_cast<const W*>(wv);
  const auto* x = static_cast<const float*>(xv);
  typename V::F acc[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L)
    for (int k = 0; k < 4; ++k) acc[k] = V::fmadd(Load(w + i + L * k), V::load(x + i + L * k), acc[k]);
  for (; i + L <= n; i += L) acc[0] = V::fmadd(Load(w + i), V::load(x + i), acc[0]);
  if constexpr (!V::k512) {
    float sum = V::reduce_add(V::add(V::add(acc[0], acc[1]), V::add(acc[2], acc[3])));
    for (; i < n; ++i) sum += Scalar(w[i]) * x[i];
    return sum;
  }
  if (i < n) {
    W w_tail[L] = {};
    float x_tail[L] = {};
    std::memcpy(w_tail, w + i, static_cast<size_t>(n - i) * sizeof(W));
    std::memcpy(x_tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
    acc[1] = V::fmadd(Load(w_tail), V::load(x_tail), acc[1]);
  }
  return V::reduce_add(V::add(V::add(acc[0], acc[1]), V::add(acc[2], acc[3])));
}

inline float scalar_f32(float v) { return v; }

// The float-weight dot product of weight_type, or null for a block type.
template <class V>
DotFn float_dot(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::F32: return &dot_float<V, float, &V::load, &scalar_f32>;
    case GgmlType::F16: return &dot_float<V, uint16_t, &V::load_f16, &fp16_to_fp32>;
    case GgmlType::BF16: return &dot_float<V, uint16_t, &V::load_bf16, &bf16_to_fp32>;
    default: return nullptr;
  }
}

// ------------------------------------------------------------------------------------------- adapters

// A block-format kernel over nb blocks of kBlock values as a DotFn over n values (what the SIMD files
// hand to quant.cpp's dispatcher).
template <int kBlock, float (*Kernel)(const void*, const void*, int64_t)>
float row_dot(int64_t n, const void* w, const void* x) {
  return Kernel(w, x, n / kBlock);
}

}  // namespace
}  // namespace moe::quant::detail
