// quantize_ref.cpp: the scalar encoders: weights (quantize) and activations (quantize_q8_*).
//
// Legacy formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) use the classic one-pass rules: a symmetric block takes
// its step from the largest-magnitude value (mapped onto the extra negative level, so the full grid is
// used), an asymmetric block from its min and max; values round to the nearest level. They ignore
// `importance`.
//
// K-quants search each sub-block's scale (and min) by weighted least squares: for a few candidate grid
// steps around the naive max/range one, round every value to that grid, then solve the 2x2 (or 1x1)
// normal equations for the scale and min that best fit those integers, and keep the candidate with the
// smallest weighted error. A slightly finer grid than the naive one clips the extremes but fits the bulk
// better, which is why searching beats the one-pass rule. The sub-block scales are then quantized
// relative to the super-block's largest (6 bits, or 4 for Q2_K, 8 for Q6_K) and every value is rounded
// again against the scales as they will decode, so the integers match what the decoder sees.
// Weights: w_i = importance_i * (sigma2 + x_i^2), sigma2 the super-block's mean square (importance 1 when
// absent): larger weights count more, since their errors move the matmul output most, without letting
// small ones go unfitted.
//
// Activation rules follow llama.cpp exactly (see ref.h) so that logits can be compared with it.
// Every float-to-int conversion goes through a clamp that also maps NaN, so no input is undefined
// behaviour (non-finite inputs give meaningless blocks, as in any quantizer).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/ref.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::quant::ref {
namespace {

// Nearest integer, ties to even (the default rounding mode), clamped to [lo, hi]; NaN -> lo.
int round_clamp(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::nearbyint(v));
}
// Nearest integer, ties away from zero (C roundf), clamped; NaN -> lo.
int round_away_clamp(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::round(v));
}
// floor, clamped; NaN -> lo.
int floor_clamp(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::floor(v));
}

float h(uint16_t v) { return fp16_to_fp32(v); }

void store_u32le(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The value with the largest magnitude (the first one on ties) and that magnitude.
void signed_absmax(const float* x, int n, float* max, float* amax) {
  *max = 0;
  *amax = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > *amax) {
      *amax = a;
      *max = x[i];
    }
  }
}

// ---- legacy formats ----

// Symmetric 2^bits-level block: d = max / -2^(bits-1) maps the largest-magnitude value onto the lowest
// level; q = floor(x/d + 2^(bits-1) + 0.5), i.e. round half up.
template <int kLevels>
void quantize_symmetric_legacy(const float* x, uint16_t* d_out, int* q) {
  constexpr int kHalf = kLevels / 2;
  float max, amax;
  signed_absmax(x, kQK, &max, &amax);
  const float d = max / static_cast<float>(-kHalf);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  *d_out = fp32_to_fp16(d);
  for (int j = 0; j < kQK; ++j) q[j] = floor_clamp(x[j] * id + (static_cast<float>(kHalf) + 0.5f), 0, kLevels - 1);
}

// Asymmetric block: x = q*d + min, d = (max - min) / (levels - 1).
template <int kLevels>
void quantize_affine_legacy(const float* x, uint16_t* d_out, uint16_t* m_out, int* q) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < kQK; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float d = (hi - lo) / static_cast<float>(kLevels - 1);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  *d_out = fp32_to_fp16(d);
  *m_out = fp32_to_fp16(lo);
  for (int j = 0; j < kQK; ++j) q[j] = floor_clamp((x[j] - lo) * id + 0.5f, 0, kLevels - 1);
}

void pack_nibbles(const int* q, uint8_t* qs) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | (q[j + kQK / 2] & 0x0F) << 4);
}
uint32_t fifth_bits(const int* q) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  return qh;
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    quantize_symmetric_legacy<16>(x, &y[i].d, q);
    pack_nibbles(q, y[i].qs);
  }
}
void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    quantize_affine_legacy<16>(x, &y[i].d, &y[i].m, q);
    pack_nibbles(q, y[i].qs);
  }
}
void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    quantize_symmetric_legacy<32>(x, &y[i].d, q);
    pack_nibbles(q, y[i].qs);
    store_u32le(y[i].qh, fifth_bits(q));
  }
}
void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    quantize_affine_legacy<32>(x, &y[i].d, &y[i].m, q);
    pack_nibbles(q, y[i].qs);
    store_u32le(y[i].qh, fifth_bits(q));
  }
}

// ---- K-quant scale search ----

constexpr int kCandidateSteps = 10;     // candidates (nmax + k/10) / range for k in [-10, 10]
constexpr float kCandidateDelta = 0.1f;

struct ScaleMin {
  float scale = 0;  // x ~ scale * L - min
  float min = 0;    // >= 0
};

// Best weighted fit of x[0..n) by scale*L - min, L integers in [0, nmax], min >= 0 (the formats store
// the min as a non-negative amount to subtract, so a block of positive values fits with min = 0).
ScaleMin fit_scale_min(const float* x, const float* w, int n, int nmax) {
  float lo = 0, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  ScaleMin naive{(hi - lo) / static_cast<float>(nmax), -lo};
  if (!(hi > lo)) return {0, -lo};
  ScaleMin best = naive;
  double best_err = -1;
  int L[kQKK];
  for (int k = -kCandidateSteps; k <= kCandidateSteps; ++k) {
    const float iscale = (static_cast<float>(nmax) + kCandidateDelta * static_cast<float>(k)) / (hi - lo);
    double sw = 0, swl = 0, swl2 = 0, swx = 0, swlx = 0;
    for (int i = 0; i < n; ++i) {
      L[i] = round_clamp(iscale * (x[i] - lo), 0, nmax);
      sw += w[i];
      swl += w[i] * L[i];
      swl2 += w[i] * L[i] * L[i];
      swx += w[i] * x[i];
      swlx += w[i] * L[i] * x[i];
    }
    // Normal equations of min over (a, b) of sum w (a*L + b - x)^2, then b <= 0 enforced.
    const double det = sw * swl2 - swl * swl;
    if (!(det > 0)) continue;
    double a = (sw * swlx - swl * swx) / det;
    double b = (swl2 * swx - swl * swlx) / det;
    if (b > 0) {
      b = 0;
      a = swlx / swl2;
    }
    if (!(a > 0)) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = a * L[i] + b - x[i];
      err += w[i] * e * e;
    }
    if (best_err < 0 || err < best_err) {
      best_err = err;
      best = {static_cast<float>(a), static_cast<float>(-b)};
    }
  }
  return best;
}

// Best weighted fit of x[0..n) by scale*L, L integers in [-nmax, nmax-1]. The scale is signed: the
// largest-magnitude value maps near -nmax, the side with the extra level.
float fit_scale_symmetric(const float* x, const float* w, int n, int nmax) {
  float max, amax;
  signed_absmax(x, n, &max, &amax);
  if (amax == 0) return 0;
  float best = max / static_cast<float>(-nmax);
  double best_score = -1;
  for (int k = -kCandidateSteps; k <= kCandidateSteps; ++k) {
    const float iscale = -(static_cast<float>(nmax) + kCandidateDelta * static_cast<float>(k)) / max;
    double swl2 = 0, swlx = 0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
      swl2 += w[i] * l * l;
      swlx += w[i] * l * x[i];
    }
    // Weighted error = sum w x^2 - swlx^2 / swl2 at the optimal scale swlx / swl2.
    if (!(swl2 > 0)) continue;
    const double score = swlx * swlx / swl2;
    if (score > best_score) {
      best_score = score;
      best = static_cast<float>(swlx / swl2);
    }
  }
  return best;
}

// Per-element weights of one super-block (see the file comment).
void make_weights(const float* x, const float* importance, float* w) {
  double sum2 = 0;
  for (int i = 0; i < kQKK; ++i) sum2 += static_cast<double>(x[i]) * x[i];
  const float sigma2 = static_cast<float>(sum2 / kQKK);
  for (int i = 0; i < kQKK; ++i) {
    const float imp = importance ? std::max(importance[i], 0.0f) : 1.0f;
    w[i] = imp * (sigma2 + x[i] * x[i]);
  }
}

// Sub-block fits of an asymmetric K-quant, with the scales and mins quantized to `scale_levels`
// levels relative to the largest; returns the decoded d*ls and dmin*lm of each sub-block.
template <int kSub, int kNmax, int kScaleMax>
void fit_affine_superblock(const float* x, const float* w, uint16_t* d_out, uint16_t* dmin_out, int* ls, int* lm,
                           float* ds, float* dm) {
  constexpr int kCount = kQKK / kSub;
  ScaleMin fits[kCount];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < kCount; ++j) {
    fits[j] = fit_scale_min(x + kSub * j, w + kSub * j, kSub, kNmax);
    max_scale = std::max(max_scale, fits[j].scale);
    max_min = std::max(max_min, fits[j].min);
  }
  const float inv_scale = max_scale > 0 ? static_cast<float>(kScaleMax) / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? static_cast<float>(kScaleMax) / max_min : 0.0f;
  *d_out = fp32_to_fp16(max_scale / static_cast<float>(kScaleMax));
  *dmin_out = fp32_to_fp16(max_min / static_cast<float>(kScaleMax));
  const float d = h(*d_out), dmin = h(*dmin_out);
  for (int j = 0; j < kCount; ++j) {
    ls[j] = round_clamp(inv_scale * fits[j].scale, 0, kScaleMax);
    lm[j] = round_clamp(inv_min * fits[j].min, 0, kScaleMax);
    ds[j] = d * static_cast<float>(ls[j]);
    dm[j] = dmin * static_cast<float>(lm[j]);
  }
}

// The integer of x against a decoded sub-block scale and min.
int affine_level(float x, float ds, float dm, int nmax) { return ds != 0 ? round_clamp((x + dm) / ds, 0, nmax) : 0; }

void quantize_q2_K(const float* x, BlockQ2_K* y, int64_t nb, const float* importance) {
  float w[kQKK], ds[16], dm[16];
  int ls[16], lm[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<16, 3, 15>(x, w, &y[i].d, &y[i].dmin, ls, lm, ds, dm);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(ls[j] | lm[j] << 4);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    for (int p = 0; p < kQKK; ++p) {
      const int q = affine_level(x[p], ds[p / 16], dm[p / 16], 3);
      y[i].qs[(p / 128) * 32 + p % 32] |= static_cast<uint8_t>(q << (2 * ((p % 128) / 32)));
    }
  }
}

// Packs the eight six-bit scales and mins of Q4_K/Q5_K (inverse of unpack_k4_scale_min).
void pack_k4_scales(const int* ls, const int* lm, uint8_t* packed) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(ls[j] | (ls[j + 4] >> 4) << 6);
    packed[j + 4] = static_cast<uint8_t>(lm[j] | (lm[j + 4] >> 4) << 6);
    packed[j + 8] = static_cast<uint8_t>((ls[j + 4] & 0x0F) | (lm[j + 4] & 0x0F) << 4);
  }
}

void quantize_q4_K(const float* x, BlockQ4_K* y, int64_t nb, const float* importance) {
  float w[kQKK], ds[8], dm[8];
  int ls[8], lm[8];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<32, 15, 63>(x, w, &y[i].d, &y[i].dmin, ls, lm, ds, dm);
    pack_k4_scales(ls, lm, y[i].scales);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    for (int p = 0; p < kQKK; ++p) {
      const int j = p / 32;
      const int q = affine_level(x[p], ds[j], dm[j], 15);
      y[i].qs[32 * (j / 2) + p % 32] |= static_cast<uint8_t>(q << (4 * (j % 2)));
    }
  }
}

void quantize_q5_K(const float* x, BlockQ5_K* y, int64_t nb, const float* importance) {
  float w[kQKK], ds[8], dm[8];
  int ls[8], lm[8];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<32, 31, 63>(x, w, &y[i].d, &y[i].dmin, ls, lm, ds, dm);
    pack_k4_scales(ls, lm, y[i].scales);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int p = 0; p < kQKK; ++p) {
      const int j = p / 32;
      const int q = affine_level(x[p], ds[j], dm[j], 31);
      y[i].qs[32 * (j / 2) + p % 32] |= static_cast<uint8_t>((q & 0x0F) << (4 * (j % 2)));
      y[i].qh[p % 32] |= static_cast<uint8_t>((q >> 4) << j);
    }
  }
}

// Sub-block fits of a symmetric K-quant (16 sub-blocks of 16), scales quantized to signed integers in
// [-scale_half, scale_half-1] relative to the largest-magnitude one; returns the decoded d*ls.
template <int kNmax, int kScaleHalf>
void fit_symmetric_superblock(const float* x, const float* w, uint16_t* d_out, int* ls, float* ds) {
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = fit_scale_symmetric(x + 16 * j, w + 16 * j, 16, kNmax);
  float max, amax;
  signed_absmax(scales, 16, &max, &amax);
  const float iscale = amax > 0 ? static_cast<float>(-kScaleHalf) / max : 0.0f;
  *d_out = fp32_to_fp16(iscale != 0 ? 1.0f / iscale : 0.0f);
  const float d = h(*d_out);
  for (int j = 0; j < 16; ++j) {
    ls[j] = round_clamp(iscale * scales[j], -kScaleHalf, kScaleHalf - 1);
    ds[j] = d * static_cast<float>(ls[j]);
  }
}

int symmetric_level(float x, float ds, int nmax) { return ds != 0 ? round_clamp(x / ds, -nmax, nmax - 1) : 0; }

void quantize_q3_K(const float* x, BlockQ3_K* y, int64_t nb, const float* importance) {
  float w[kQKK], ds[16];
  int ls[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_symmetric_superblock<4, 32>(x, w, &y[i].d, ls, ds);
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    for (int j = 0; j < 16; ++j) {
      const int u = ls[j] + 32;  // 0..63
      y[i].scales[j % 8] |= static_cast<uint8_t>((u & 0x0F) << (4 * (j / 8)));
      y[i].scales[8 + j % 4] |= static_cast<uint8_t>((u >> 4) << (2 * (j / 4)));
    }
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    for (int p = 0; p < kQKK; ++p) {
      const int u = symmetric_level(x[p], ds[p / 16], 4) + 4;  // 0..7; bit 2 set means "no -4"
      y[i].qs[(p / 128) * 32 + p % 32] |= static_cast<uint8_t>((u & 3) << (2 * ((p % 128) / 32)));
      y[i].hmask[p % 32] |= static_cast<uint8_t>((u >> 2) << (p / 32));
    }
  }
}

void quantize_q6_K(const float* x, BlockQ6_K* y, int64_t nb, const float* importance) {
  float w[kQKK], ds[16];
  int ls[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_symmetric_superblock<32, 128>(x, w, &y[i].d, ls, ds);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<int8_t>(ls[j]);
    std::memset(y[i].ql, 0, sizeof(y[i].ql));
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int p = 0; p < kQKK; ++p) {
      const int u = symmetric_level(x[p], ds[p / 16], 32) + 32;  // 0..63
      const int n = p / 128, k = (p % 128) / 32, l = p % 32;
      y[i].ql[64 * n + 32 * (k % 2) + l] |= static_cast<uint8_t>((u & 0x0F) << (4 * (k / 2)));
      y[i].qh[32 * n + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
  }
}

template <typename Block>
Block* blocks(void* p) {
  return static_cast<Block*>(p);
}

}  // namespace

// ---- activations (llama.cpp's rules, see ref.h) ----

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max, amax;
    signed_absmax(x, kQK, &max, &amax);
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(round_away_clamp(x[j] * id, -127, 127));
  }
}

void quantize_q8_1(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max, amax;
    signed_absmax(x, kQK, &max, &amax);
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      y[i].qs[j] = static_cast<int8_t>(round_away_clamp(x[j] * id, -127, 127));
      sum += y[i].qs[j];
    }
    y[i].s = fp32_to_fp16(static_cast<float>(sum) * d);
  }
}

void quantize_q8_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    float max, amax;
    signed_absmax(x, kQKK, &max, &amax);
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) y[i].qs[j] = static_cast<int8_t>(round_clamp(iscale * x[j], -128, 127));
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * g + l];
      y[i].bsums[g] = static_cast<int16_t>(sum);
    }
    y[i].d = 1.0f / iscale;
  }
}

void quantize(GgmlType type, const float* src, void* dst, int64_t n, const float* importance) {
  const int64_t nl = n / kQK, nk = n / kQKK;
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case GgmlType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
      return;
    }
    case GgmlType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
      return;
    }
    case GgmlType::Q4_0: return quantize_q4_0(src, blocks<BlockQ4_0>(dst), nl);
    case GgmlType::Q4_1: return quantize_q4_1(src, blocks<BlockQ4_1>(dst), nl);
    case GgmlType::Q5_0: return quantize_q5_0(src, blocks<BlockQ5_0>(dst), nl);
    case GgmlType::Q5_1: return quantize_q5_1(src, blocks<BlockQ5_1>(dst), nl);
    case GgmlType::Q8_0: return quantize_q8_0(src, dst, n);
    case GgmlType::Q2_K: return quantize_q2_K(src, blocks<BlockQ2_K>(dst), nk, importance);
    case GgmlType::Q3_K: return quantize_q3_K(src, blocks<BlockQ3_K>(dst), nk, importance);
    case GgmlType::Q4_K: return quantize_q4_K(src, blocks<BlockQ4_K>(dst), nk, importance);
    case GgmlType::Q5_K: return quantize_q5_K(src, blocks<BlockQ5_K>(dst), nk, importance);
    case GgmlType::Q6_K: return quantize_q6_K(src, blocks<BlockQ6_K>(dst), nk, importance);
    default: fail("quantize: no encoder for ", type_name(type));
  }
}

}  // namespace moe::quant::ref
