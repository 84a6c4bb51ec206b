// dequant_ref.cpp: the scalar decoders of every supported block format. They are the definition of what
// a block means, bit-exact with llama.cpp and gguf-py: each value is computed with the same float
// operations in the same order (for the K-quants the sub-block factors d*sc and dmin*m are rounded to
// float first, then value = (d*sc)*q - dmin*m). Those products are exact in float (11-bit halves times
// small integers), and contraction into fused multiply-adds is disabled below in any case, so no build
// flag can change a rounding (the golden test would see it).
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

void dequant_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((b[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d), m = h(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(b[i].qs[j] & 0x0F) * d + m;
      y[j + kQK / 2] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

uint32_t load_u32le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// The 5-bit value of element j of a Q5_0/Q5_1 block (0..31).
int q5_value(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < kQK / 2 ? (qs[j] & 0x0F) : (qs[j - kQK / 2] >> 4);
  return low | static_cast<int>((qh >> j) & 1u) << 4;
}

void dequant_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d);
    const uint32_t qh = load_u32le(b[i].qh);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_value(b[i].qs, qh, j) - 16) * d;
  }
}

void dequant_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d), m = h(b[i].m);
    const uint32_t qh = load_u32le(b[i].qh);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_value(b[i].qs, qh, j)) * d + m;
  }
}

void dequant_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

void dequant_q8_1(const BlockQ8_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = h(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

// Q2_K: element p of a super-block lives in qs[(p/128)*32 + p%32] at bit 2*((p%128)/32); sub-block p/16.
void dequant_q2_K(const BlockQ2_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = h(b[i].d), dmin = h(b[i].dmin);
    for (int p = 0; p < kQKK; ++p) {
      const int sc = b[i].scales[p / 16];
      const float dl = d * static_cast<float>(sc & 0x0F);
      const float ml = dmin * static_cast<float>(sc >> 4);
      const int q = (b[i].qs[(p / 128) * 32 + p % 32] >> (2 * ((p % 128) / 32))) & 3;
      y[p] = dl * static_cast<float>(q) - ml;
    }
  }
}

}  // namespace

// The sixteen 6-bit Q3_K scales, minus their offset 32: scale i has its low 4 bits in byte i%8 (low
// nibble for i < 8, high for i >= 8) and its high 2 bits in byte 8 + i%4 at bit 2*(i/4).
void unpack_q3_K_scales(const uint8_t* packed, int* scales) {
  for (int i = 0; i < 16; ++i) {
    const int low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    scales[i] = (low | high << 4) - 32;
  }
}

// Scale and min j (0..7) of a Q4_K/Q5_K super-block, six bits each: j < 4 in the low six bits of bytes
// j and j+4; j >= 4 in the nibbles of byte j+4 with their top two bits in the top of bytes j-4 and j.
void unpack_k4_scale_min(const uint8_t* packed, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = (packed[j + 4] & 0x0F) | (packed[j - 4] >> 6) << 4;
    *min = (packed[j + 4] >> 4) | (packed[j] >> 6) << 4;
  }
}

void pack_k4_scales(const int* scales, const int* mins, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(scales[j] | (scales[j + 4] >> 4) << 6);
    packed[j + 4] = static_cast<uint8_t>(mins[j] | (mins[j + 4] >> 4) << 6);
    packed[j + 8] = static_cast<uint8_t>((scales[j + 4] & 0x0F) | (mins[j + 4] & 0x0F) << 4);
  }
}

namespace {

// Q3_K: low 2 bits as Q2_K; the third bit of element p is bit p/32 of hmask[p%32], set meaning +0 and
// clear meaning -4 (so q ranges -4..3).
void dequant_q3_K(const BlockQ3_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = h(b[i].d);
    int scales[16];
    unpack_q3_K_scales(b[i].scales, scales);
    for (int p = 0; p < kQKK; ++p) {
      const float dl = d * static_cast<float>(scales[p / 16]);
      const int low = (b[i].qs[(p / 128) * 32 + p % 32] >> (2 * ((p % 128) / 32))) & 3;
      const int high_clear = ((b[i].hmask[p % 32] >> (p / 32)) & 1) ? 0 : 4;
      y[p] = dl * static_cast<float>(low - high_clear);
    }
  }
}

// Q4_K: sub-block j (32 values) pairs up with j^1 in 32 bytes of qs: even j in the low nibbles of
// qs[32*(j/2) ..], odd j in the high nibbles.
void dequant_q4_K(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = h(b[i].d), dmin = h(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      unpack_k4_scale_min(b[i].scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      const uint8_t* q = b[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) y[32 * j + l] = d1 * static_cast<float>((q[l] >> shift) & 0x0F) - m1;
    }
  }
}

// Q5_K: as Q4_K, plus the fifth bit of element 32*j + l in bit j of qh[l].
void dequant_q5_K(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = h(b[i].d), dmin = h(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      unpack_k4_scale_min(b[i].scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      const uint8_t* q = b[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0x0F) | ((b[i].qh[l] >> j) & 1) << 4;
        y[32 * j + l] = d1 * static_cast<float>(v) - m1;
      }
    }
  }
}

// Q6_K: element p = 128*n + 32*k + l (k 0..3, l 0..31) has its low nibble in ql[64*n + 32*(k%2) + l]
// (low nibble for k < 2, high for k >= 2) and its high two bits at bit 2*k of qh[32*n + l]; q - 32.
void dequant_q6_K(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = h(b[i].d);
    for (int p = 0; p < kQKK; ++p) {
      const int n = p / 128, k = (p % 128) / 32, l = p % 32;
      const int low = (b[i].ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
      const int high = (b[i].qh[32 * n + l] >> (2 * k)) & 3;
      const float dl = d * static_cast<float>(b[i].scales[p / 16]);
      y[p] = dl * static_cast<float>((low | high << 4) - 32);
    }
  }
}

void dequant_q8_K(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK)
    for (int j = 0; j < kQKK; ++j) y[j] = b[i].d * static_cast<float>(b[i].qs[j]);
}

template <typename Block>
const Block* blocks(const void* p) {
  return static_cast<const Block*>(p);
}

}  // namespace

void dequantize(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t nl = n / kQK, nk = n / kQKK;
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
      return;
    }
    case GgmlType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
      return;
    }
    case GgmlType::Q4_0: return dequant_q4_0(blocks<BlockQ4_0>(src), dst, nl);
    case GgmlType::Q4_1: return dequant_q4_1(blocks<BlockQ4_1>(src), dst, nl);
    case GgmlType::Q5_0: return dequant_q5_0(blocks<BlockQ5_0>(src), dst, nl);
    case GgmlType::Q5_1: return dequant_q5_1(blocks<BlockQ5_1>(src), dst, nl);
    case GgmlType::Q8_0: return dequant_q8_0(blocks<BlockQ8_0>(src), dst, nl);
    case GgmlType::Q8_1: return dequant_q8_1(blocks<BlockQ8_1>(src), dst, nl);
    case GgmlType::Q2_K: return dequant_q2_K(blocks<BlockQ2_K>(src), dst, nk);
    case GgmlType::Q3_K: return dequant_q3_K(blocks<BlockQ3_K>(src), dst, nk);
    case GgmlType::Q4_K: return dequant_q4_K(blocks<BlockQ4_K>(src), dst, nk);
    case GgmlType::Q5_K: return dequant_q5_K(blocks<BlockQ5_K>(src), dst, nk);
    case GgmlType::Q6_K: return dequant_q6_K(blocks<BlockQ6_K>(src), dst, nk);
    case GgmlType::Q8_K: return dequant_q8_K(blocks<BlockQ8_K>(src), dst, nk);
    default: fail("dequantize: no decoder for ", type_name(type));
  }
}

}  // namespace moe::quant::ref
