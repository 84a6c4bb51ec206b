// dot_ref.cpp: the scalar dot products of a weight row with a quantized activation row (or a float row
// for F32/F16/BF16 weights). They are the definition the SIMD kernels are compared with, so the shape of
// the arithmetic is fixed and simple to reproduce:
// - Within one block (legacy, 32 values) or super-block (K-quants, 256 values) every product of integer
//   levels, and its weighting by the integer sub-block scales, is summed exactly in int32 (the largest
//   possible magnitude, Q6_K: 16 sub-blocks * 128 * 16 * 32 * 127 = 1.3e8, fits).
// - That integer sum becomes float once per block and is scaled by the product of the two block scales,
//   computed in float: sum += (d_w * d_x) * float(isum). Formats with a min subtract
//   (dmin_w * d_x) * float(sum of min_j * activation block sums), legacy Q4_1/Q5_1 add m_w * s_x.
// - Blocks are accumulated in order into one float.
// Float weights: one float accumulator, sum += w[i] * x[i] in order (F16/BF16 widened exactly first).
#include <cstring>

#include "quant/blocks.h"
#include "quant/ref.h"
#include "util/error.h"
#include "util/fp16.h"

// The reference must round the same whatever the build flags: no fused multiply-add contraction even
// when compiled for a CPU that has it (-march=native), since GCC contracts by default in C++.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace moe::quant::ref {
namespace {

float h(uint16_t v) { return fp16_to_fp32(v); }

uint32_t load_u32le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// Sum over a legacy block of (nibble level + offset) * activation; low nibbles pair with x[0..16),
// high nibbles with x[16..32), the fifth bit (if any) from qh.
int legacy_isum(const uint8_t* qs, uint32_t qh, int offset, const int8_t* x) {
  int sum = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (qs[j] & 0x0F) | static_cast<int>((qh >> j) & 1u) << 4;
    const int hi = (qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    sum += (lo + offset) * x[j] + (hi + offset) * x[j + kQK / 2];
  }
  return sum;
}

float dot_q4_0(int64_t nb, const BlockQ4_0* w, const BlockQ8_0* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i)
    sum += (h(w[i].d) * h(x[i].d)) * static_cast<float>(legacy_isum(w[i].qs, 0, -8, x[i].qs));
  return sum;
}
float dot_q5_0(int64_t nb, const BlockQ5_0* w, const BlockQ8_0* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i)
    sum += (h(w[i].d) * h(x[i].d)) * static_cast<float>(legacy_isum(w[i].qs, load_u32le(w[i].qh), -16, x[i].qs));
  return sum;
}
// x = q*d + m: sum_j (q_j d + m) a_j d_x = d d_x sum q_j a_j + m (d_x sum a_j), the last factor being s.
float dot_q4_1(int64_t nb, const BlockQ4_1* w, const BlockQ8_1* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i)
    sum += (h(w[i].d) * h(x[i].d)) * static_cast<float>(legacy_isum(w[i].qs, 0, 0, x[i].qs)) + h(w[i].m) * h(x[i].s);
  return sum;
}
float dot_q5_1(int64_t nb, const BlockQ5_1* w, const BlockQ8_1* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i)
    sum += (h(w[i].d) * h(x[i].d)) * static_cast<float>(legacy_isum(w[i].qs, load_u32le(w[i].qh), 0, x[i].qs)) +
           h(w[i].m) * h(x[i].s);
  return sum;
}
template <typename WBlock>
float dot_q8(int64_t nb, const WBlock* w, const BlockQ8_0* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < kQK; ++j) isum += w[i].qs[j] * x[i].qs[j];
    sum += (h(w[i].d) * h(x[i].d)) * static_cast<float>(isum);
  }
  return sum;
}

float dot_q2_K(int64_t nb, const BlockQ2_K* w, const BlockQ8_K* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0, msum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int p = 16 * s; p < 16 * s + 16; ++p)
        sub += ((w[i].qs[(p / 128) * 32 + p % 32] >> (2 * ((p % 128) / 32))) & 3) * x[i].qs[p];
      isum += (w[i].scales[s] & 0x0F) * sub;
      msum += (w[i].scales[s] >> 4) * x[i].bsums[s];
    }
    sum += (h(w[i].d) * x[i].d) * static_cast<float>(isum) - (h(w[i].dmin) * x[i].d) * static_cast<float>(msum);
  }
  return sum;
}

float dot_q3_K(int64_t nb, const BlockQ3_K* w, const BlockQ8_K* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int scales[16];
    unpack_q3_K_scales(w[i].scales, scales);
    int isum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int p = 16 * s; p < 16 * s + 16; ++p) {
        const int low = (w[i].qs[(p / 128) * 32 + p % 32] >> (2 * ((p % 128) / 32))) & 3;
        const int high_clear = ((w[i].hmask[p % 32] >> (p / 32)) & 1) ? 0 : 4;
        sub += (low - high_clear) * x[i].qs[p];
      }
      isum += scales[s] * sub;
    }
    sum += (h(w[i].d) * x[i].d) * static_cast<float>(isum);
  }
  return sum;
}

// Q4_K/Q5_K: the 32-value sub-block j uses activation block sums 2j and 2j+1 for its min.
template <typename Block, bool kFifthBit>
float dot_k4(int64_t nb, const Block* w, const BlockQ8_K* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      unpack_k4_scale_min(w[i].scales, j, &sc, &m);
      const uint8_t* q = w[i].qs + 32 * (j / 2);
      int sub = 0;
      for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> (4 * (j % 2))) & 0x0F;
        if constexpr (kFifthBit) v |= ((w[i].qh[l] >> j) & 1) << 4;
        sub += v * x[i].qs[32 * j + l];
      }
      isum += sc * sub;
      msum += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    sum += (h(w[i].d) * x[i].d) * static_cast<float>(isum) - (h(w[i].dmin) * x[i].d) * static_cast<float>(msum);
  }
  return sum;
}

float dot_q6_K(int64_t nb, const BlockQ6_K* w, const BlockQ8_K* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int p = 16 * s; p < 16 * s + 16; ++p) {
        const int n = p / 128, k = (p % 128) / 32, l = p % 32;
        const int low = (w[i].ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
        const int high = (w[i].qh[32 * n + l] >> (2 * k)) & 3;
        sub += ((low | high << 4) - 32) * x[i].qs[p];
      }
      isum += w[i].scales[s] * sub;
    }
    sum += (h(w[i].d) * x[i].d) * static_cast<float>(isum);
  }
  return sum;
}

float dot_q8_K(int64_t nb, const BlockQ8_K* w, const BlockQ8_K* x) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < kQKK; ++j) isum += w[i].qs[j] * x[i].qs[j];
    sum += (w[i].d * x[i].d) * static_cast<float>(isum);
  }
  return sum;
}

float dot_f32(int64_t n, const float* w, const float* x) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

template <float (*Widen)(uint16_t)>
float dot_half(int64_t n, const uint16_t* w, const float* x) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += Widen(w[i]) * x[i];
  return sum;
}

// A kernel over nb blocks of kBlock values as a DotFn over n values.
template <typename WB, typename XB, int kBlock, float (*Kernel)(int64_t, const WB*, const XB*)>
float row_dot(int64_t n, const void* w, const void* x) {
  return Kernel(n / kBlock, static_cast<const WB*>(w), static_cast<const XB*>(x));
}

}  // namespace

DotFn dot_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return &row_dot<float, float, 1, dot_f32>;
    case GgmlType::F16: return &row_dot<uint16_t, float, 1, dot_half<fp16_to_fp32>>;
    case GgmlType::BF16: return &row_dot<uint16_t, float, 1, dot_half<bf16_to_fp32>>;
    case GgmlType::Q4_0: return &row_dot<BlockQ4_0, BlockQ8_0, kQK, dot_q4_0>;
    case GgmlType::Q4_1: return &row_dot<BlockQ4_1, BlockQ8_1, kQK, dot_q4_1>;
    case GgmlType::Q5_0: return &row_dot<BlockQ5_0, BlockQ8_0, kQK, dot_q5_0>;
    case GgmlType::Q5_1: return &row_dot<BlockQ5_1, BlockQ8_1, kQK, dot_q5_1>;
    case GgmlType::Q8_0: return &row_dot<BlockQ8_0, BlockQ8_0, kQK, dot_q8<BlockQ8_0>>;
    case GgmlType::Q8_1: return &row_dot<BlockQ8_1, BlockQ8_0, kQK, dot_q8<BlockQ8_1>>;
    case GgmlType::Q2_K: return &row_dot<BlockQ2_K, BlockQ8_K, kQKK, dot_q2_K>;
    case GgmlType::Q3_K: return &row_dot<BlockQ3_K, BlockQ8_K, kQKK, dot_q3_K>;
    case GgmlType::Q4_K: return &row_dot<BlockQ4_K, BlockQ8_K, kQKK, dot_k4<BlockQ4_K, false>>;
    case GgmlType::Q5_K: return &row_dot<BlockQ5_K, BlockQ8_K, kQKK, dot_k4<BlockQ5_K, true>>;
    case GgmlType::Q6_K: return &row_dot<BlockQ6_K, BlockQ8_K, kQKK, dot_q6_K>;
    case GgmlType::Q8_K: return &row_dot<BlockQ8_K, BlockQ8_K, kQKK, dot_q8_K>;
    default: return nullptr;
  }
}

}  // namespace moe::quant::ref
