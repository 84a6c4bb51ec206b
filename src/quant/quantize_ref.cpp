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
// relative to the super-block's largest (6 bits, or 4 for Q2_K, 8 for Q6_K), each integer scale (and
// min) is refined among its neighbours against the grid as it will decode, and every value is rounded
// against that decoded grid, so the integers match what the decoder sees.
// Re-quantizing decoded data is stable: the search first tries the data's own grid when the values lie
// on one, and the refinement puts the min back where it was (own_grid_steps, fit_affine_superblock).
// Measured on N(0,1) data, relative RMS error: Q2_K 0.276, Q3_K 0.149, Q4_K 0.072, Q5_K 0.035,
// Q6_K 0.018 (legacy: Q4_0 0.086, Q4_1 0.078, Q5_0 0.043, Q5_1 0.038, Q8_0 0.0054).
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

// The reference must round the same whatever the build flags: no fused multiply-add contraction even
// when compiled for a CPU that has it (-march=native), since GCC contracts by default in C++.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace moe::quant::ref {
namespace {

// Nearest integer, ties to even, clamped to [lo, hi]; NaN -> lo. Adding and subtracting 1.5 * 2^23
// rounds a float of magnitude < 2^22 to an integer in the default rounding mode (ties to even), which
// is what nearbyint does, without its library call on baseline x86-64 (no SSE4.1 roundss).
// Written without branches so the compiler can vectorize the loops of the scale search around it.
int round_clamp(float v, int lo, int hi) {
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  v = v >= flo ? v : flo;  // NaN fails the comparison and becomes lo
  v = v <= fhi ? v : fhi;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return static_cast<int>((v + kMagic) - kMagic);
}
// Nearest integer, ties away from zero (C roundf), clamped; NaN -> lo.
int round_away_clamp(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  const int t = static_cast<int>(v);              // towards zero, exact
  const float frac = v - static_cast<float>(t);  // exact
  return frac >= 0.5f ? t + 1 : frac <= -0.5f ? t - 1 : t;
}
// floor, clamped; NaN -> lo.
int floor_clamp(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (v >= static_cast<float>(hi)) return hi;
  const int t = static_cast<int>(v);
  return static_cast<float>(t) > v ? t - 1 : t;
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

// The candidate grids of the scale search, as the number of steps the block's range is divided into:
// nmax + k/10 for k in [-10, 10], around the naive grid (a finer one clips the extremes but fits the
// bulk better), preceded by the data's own grid when it already lies on one (see own_grid_steps).
constexpr int kFineCandidates = 21;
float fine_levels(int nmax, int c) {
  return static_cast<float>(nmax) + 0.1f * static_cast<float>(c - kFineCandidates / 2);
}

// Data decoded from a K-quant sub-block lies on a grid: value = anchor + (span / k) * integer for a
// whole k <= nmax. When its scale was rounded up (or its min rounded to zero) the values span k < nmax
// steps, no candidate near nmax hits that grid, and re-quantizing would move every value. Returns the
// smallest such k (the coarsest grid, the data's own unless it also fits a coarser one exactly), or 0.
// A value is on the grid if it is within 1e-3 of a level (decoding rounds ds*L - dm to float: ~1e-7
// relative, far below that); fresh data fails at its first or second value for every k, so this costs
// about nmax multiplications.
int own_grid_steps(const float* x, int n, float anchor, float span, int nmax) {
  const float inv_span = 1.0f / span;
  for (int k = 1; k <= nmax; ++k) {
    const float per_unit = static_cast<float>(k) * inv_span;
    bool on_grid = true;
    for (int i = 0; i < n && on_grid; ++i) {
      const float q = (x[i] - anchor) * per_unit;
      constexpr float kMagic = 12582912.0f;  // rounds |q| < 2^22 to an integer, see round_clamp
      on_grid = std::fabs(q - ((q + kMagic) - kMagic)) < 1e-3f;
    }
    if (on_grid) return k;
  }
  return 0;
}

struct ScaleMin {
  float scale = 0;  // x ~ scale * L - min
  float min = 0;    // >= 0
  int span = 0;     // when the data lies on its own grid (which won): the steps it spans, else 0
};

// Best weighted fit of x[0..n) by scale*L - min, L integers in [0, nmax], min >= 0 (the formats store
// the min as a non-negative amount to subtract, so a block of positive values fits with min = 0).
ScaleMin fit_scale_min(const float* x, const float* w, int n, int nmax) {
  float lo = 0, hi = x[0], vmin = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    vmin = std::min(vmin, x[i]);
  }
  if (!(hi > lo)) return {0, -lo};
  double sw = 0, swx = 0, swx2 = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i];
    swx += static_cast<double>(w[i]) * x[i];
    swx2 += static_cast<double>(w[i]) * x[i] * x[i];
  }
  ScaleMin best{(hi - lo) / static_cast<float>(nmax), -lo};  // naive, if no candidate is solvable
  bool found = false;
  double best_err = 0;
  int L[kQKK / 8];
  // Fits scale and min to the levels L by weighted least squares and keeps them if they beat the best
  // so far. A tie (a fine grid that also fits the data's own grid exactly) keeps the earlier: rounding
  // noise in the error expansion must not decide.
  auto consider = [&](int span) {
    double swl = 0, swl2 = 0, swlx = 0;
    for (int i = 0; i < n; ++i) {
      const double wl = static_cast<double>(w[i]) * L[i];
      swl += wl;
      swl2 += wl * L[i];
      swlx += wl * x[i];
    }
    // Normal equations of min over (a, b) of sum w (a*L + b - x)^2, then b <= 0 enforced.
    const double det = sw * swl2 - swl * swl;
    if (!(det > 0)) return;
    double a = (sw * swlx - swl * swx) / det;
    double b = (swl2 * swx - swl * swlx) / det;
    if (b > 0) {
      b = 0;
      a = swlx / swl2;
    }
    if (!(a > 0)) return;
    // sum w (a L + b - x)^2, expanded into the sums above.
    const double err = a * a * swl2 + 2 * a * b * swl + b * b * sw - 2 * a * swlx - 2 * b * swx + swx2;
    if (!found || err < best_err - 1e-12 * swx2) {
      found = true;
      best_err = err;
      best = {static_cast<float>(a), static_cast<float>(-b), span};
    }
  };
  // The data's own grid first, anchored at its smallest value, shifted up by enough whole steps that
  // the min is not negative (the format cannot add).
  if (const int span = own_grid_steps(x, n, vmin, hi - vmin, nmax); span > 0) {
    const float step = (hi - vmin) / static_cast<float>(span);
    const int shift = vmin > 0 ? static_cast<int>(std::ceil(vmin / step - 1e-3f)) : 0;
    if (span + shift <= nmax) {
      for (int i = 0; i < n; ++i) L[i] = round_clamp((x[i] - vmin) / step, 0, span) + shift;
      consider(span);
    }
  }
  for (int c = 0; c < kFineCandidates; ++c) {
    const float iscale = fine_levels(nmax, c) / (hi - lo);
    for (int i = 0; i < n; ++i) L[i] = round_clamp(iscale * (x[i] - lo), 0, nmax);
    consider(0);
  }
  return best;
}

struct SymmetricFit {
  float scale = 0;         // x ~ scale * L
  bool sign_free = false;  // the data's own grid won and its mirror image (-scale, -L) fits as well
};

// Best weighted fit of x[0..n) by scale*L, L integers in [-nmax, nmax-1]. The scale is signed: the
// largest-magnitude value maps near -nmax, the side with the extra level.
SymmetricFit fit_scale_symmetric(const float* x, const float* w, int n, int nmax) {
  float max, amax;
  signed_absmax(x, n, &max, &amax);
  if (amax == 0) return {};
  SymmetricFit best{max / static_cast<float>(-nmax), false};
  double best_score = -1;
  // The data's own grid (see own_grid_steps; anchored at 0): amax spans `own` steps, so its levels lie
  // in [-own, own]. Unless own = nmax (only -nmax exists), the mirror image fits exactly as well.
  const int own = own_grid_steps(x, n, 0.0f, amax, nmax);
  const bool mirror_fits = own > 0 && own < nmax;
  for (int c = own ? -1 : 0; c < kFineCandidates; ++c) {
    const float iscale = -(c < 0 ? static_cast<float>(own) : fine_levels(nmax, c)) / max;
    double swl2 = 0, swlx = 0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
      swl2 += w[i] * l * l;
      swlx += w[i] * l * x[i];
    }
    // Weighted error = sum w x^2 - swlx^2 / swl2 at the optimal scale swlx / swl2.
    if (!(swl2 > 0)) continue;
    const double score = swlx * swlx / swl2;
    if (score > best_score * (1 + 1e-12)) {  // ties keep the earlier candidate, the data's own grid
      best_score = score;
      best = {static_cast<float>(swlx / swl2), c < 0 && mirror_fits};
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

// The levels of n values against a decoded sub-block scale and min (a zero scale gives level 0).
void affine_levels(const float* x, int n, float ds, float dm, int nmax, int* L) {
  const float inv = ds != 0 ? 1.0f / ds : 0.0f;
  for (int i = 0; i < n; ++i) L[i] = round_clamp((x[i] + dm) * inv, 0, nmax);
}

// Weighted squared error of a sub-block decoded with scale ds and min dm (values rounded against them,
// and decoded with the decoder's float operations).
double affine_error(const float* x, const float* w, int n, float ds, float dm, int nmax) {
  int L[kQKK / 8];
  affine_levels(x, n, ds, dm, nmax, L);
  double err = 0;
  for (int i = 0; i < n; ++i) {
    const double e = static_cast<double>(ds * static_cast<float>(L[i]) - dm) - x[i];
    err += w[i] * e * e;
  }
  return err;
}

// Sub-block fits of an asymmetric K-quant, with the scales and mins quantized to kScaleMax levels
// relative to the largest. Writes the super-block's d and dmin, each sub-block's integer scale and
// min, and the level of every value against the decoded grid.
//
// Rounding the scale and min to integers independently is not always best, nor is it idempotent: a
// sub-block whose min was rounded up has no value on level 0 any more, so refitting its decoded values
// finds a min smaller by whole steps. So the neighbours ls +- 1, lm +- 1 are tried against the decoded
// grid, and for data already on a grid every placement of it within the levels, and the best is kept
// (the rounded pair on ties). A scale or min at the top (the sub-block that set d or dmin) stays, so
// that requantizing decoded data derives the same d and dmin again.
template <int kSub, int kNmax, int kScaleMax>
void fit_affine_superblock(const float* x, const float* w, uint16_t* d_out, uint16_t* dmin_out, int* ls, int* lm,
                           int* L) {
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
    const float* xs = x + kSub * j;
    const float* ws = w + kSub * j;
    const int ls0 = round_clamp(inv_scale * fits[j].scale, 0, kScaleMax);
    const int lm0 = round_clamp(inv_min * fits[j].min, 0, kScaleMax);
    auto error = [&](int a, int b) {
      return affine_error(xs, ws, kSub, d * static_cast<float>(a), dmin * static_cast<float>(b), kNmax);
    };
    double best = error(ls0, lm0);
    ls[j] = ls0;
    lm[j] = lm0;
    auto consider = [&](int a, int b) {
      const double err = error(a, b);
      if (err < best) {
        best = err;
        ls[j] = a;
        lm[j] = b;
      }
    };
    const int a_lo = ls0 == kScaleMax ? ls0 : std::max(0, ls0 - 1), a_hi = std::min(kScaleMax, ls0 + 1);
    const int b_lo = lm0 == kScaleMax ? lm0 : std::max(0, lm0 - 1), b_hi = std::min(kScaleMax, lm0 + 1);
    for (int a = a_lo; a <= a_hi; ++a)
      for (int b = b_lo; b <= b_hi; ++b)
        if (a != ls0 || b != lm0) consider(a, b);
    // Data already on a grid of `span` steps can sit anywhere in the nmax levels: try each placement
    // (the min larger by k steps) with the scale as fitted, which finds the min it was decoded with.
    for (int k = 1; fits[j].span > 0 && lm0 != kScaleMax && k <= kNmax - fits[j].span; ++k) {
      const int center = round_clamp(inv_min * (fits[j].min + static_cast<float>(k) * fits[j].scale), 0, kScaleMax);
      for (int b = std::max(0, center - 1); b <= std::min(kScaleMax, center + 1); ++b)
        if (b < b_lo || b > b_hi) consider(ls0, b);
    }
    affine_levels(xs, kSub, d * static_cast<float>(ls[j]), dmin * static_cast<float>(lm[j]), kNmax, L + kSub * j);
  }
}

void quantize_q2_K(const float* x, BlockQ2_K* y, int64_t nb, const float* importance) {
  float w[kQKK];
  int ls[16], lm[16], L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<16, 3, 15>(x, w, &y[i].d, &y[i].dmin, ls, lm, L);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(ls[j] | lm[j] << 4);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    for (int p = 0; p < kQKK; ++p) y[i].qs[(p / 128) * 32 + p % 32] |= static_cast<uint8_t>(L[p] << (2 * ((p % 128) / 32)));
  }
}

void quantize_q4_K(const float* x, BlockQ4_K* y, int64_t nb, const float* importance) {
  float w[kQKK];
  int ls[8], lm[8], L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<32, 15, 63>(x, w, &y[i].d, &y[i].dmin, ls, lm, L);
    pack_k4_scales(ls, lm, y[i].scales);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    for (int p = 0; p < kQKK; ++p) {
      const int j = p / 32;
      y[i].qs[32 * (j / 2) + p % 32] |= static_cast<uint8_t>(L[p] << (4 * (j % 2)));
    }
  }
}

void quantize_q5_K(const float* x, BlockQ5_K* y, int64_t nb, const float* importance) {
  float w[kQKK];
  int ls[8], lm[8], L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_affine_superblock<32, 31, 63>(x, w, &y[i].d, &y[i].dmin, ls, lm, L);
    pack_k4_scales(ls, lm, y[i].scales);
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int p = 0; p < kQKK; ++p) {
      const int j = p / 32;
      y[i].qs[32 * (j / 2) + p % 32] |= static_cast<uint8_t>((L[p] & 0x0F) << (4 * (j % 2)));
      y[i].qh[p % 32] |= static_cast<uint8_t>((L[p] >> 4) << j);
    }
  }
}

// The signed levels in [-nmax, nmax-1] of n values against a decoded sub-block scale.
void symmetric_levels(const float* x, int n, float ds, int nmax, int* L) {
  const float inv = ds != 0 ? 1.0f / ds : 0.0f;
  for (int i = 0; i < n; ++i) L[i] = round_clamp(x[i] * inv, -nmax, nmax - 1);
}

double symmetric_error(const float* x, const float* w, int n, float ds, int nmax) {
  int L[16];
  symmetric_levels(x, n, ds, nmax, L);
  double err = 0;
  for (int i = 0; i < n; ++i) {
    const double e = static_cast<double>(ds * static_cast<float>(L[i])) - x[i];
    err += w[i] * e * e;
  }
  return err;
}

// Sub-block fits of a symmetric K-quant (16 sub-blocks of 16), scales quantized to signed integers in
// [-kScaleHalf, kScaleHalf-1] relative to the largest-magnitude one, each then refined to ls +- 1 as
// for the asymmetric formats (the one that set d stays). Writes d, the integer scales and every level.
template <int kNmax, int kScaleHalf>
void fit_symmetric_superblock(const float* x, const float* w, uint16_t* d_out, int* ls, int* L) {
  SymmetricFit fits[16];
  float scales[16], fixed[16];
  for (int j = 0; j < 16; ++j) {
    fits[j] = fit_scale_symmetric(x + 16 * j, w + 16 * j, 16, kNmax);
    scales[j] = fits[j].scale;
    fixed[j] = fits[j].sign_free ? 0.0f : fits[j].scale;
  }
  // Sub-blocks whose fit is as good mirrored take the sign of the largest scale (of the others if
  // any), so they land on the side of the integer scales that has -kScaleHalf: a decoded super-block
  // then requantizes to the same integers instead of a mirrored sub-block clipping at +kScaleHalf-1.
  float max, amax;
  signed_absmax(fixed, 16, &max, &amax);
  if (amax == 0) signed_absmax(scales, 16, &max, &amax);
  for (int j = 0; j < 16; ++j)
    if (fits[j].sign_free) scales[j] = std::copysign(scales[j], max);
  signed_absmax(scales, 16, &max, &amax);
  const float iscale = amax > 0 ? static_cast<float>(-kScaleHalf) / max : 0.0f;
  *d_out = fp32_to_fp16(iscale != 0 ? 1.0f / iscale : 0.0f);
  const float d = h(*d_out);
  for (int j = 0; j < 16; ++j) {
    const float* xs = x + 16 * j;
    const float* ws = w + 16 * j;
    const int ls0 = round_clamp(iscale * scales[j], -kScaleHalf, kScaleHalf - 1);
    ls[j] = ls0;
    double best = symmetric_error(xs, ws, 16, d * static_cast<float>(ls0), kNmax);
    const int a_lo = std::max(-kScaleHalf, ls0 - 1);
    const int a_hi = ls0 == -kScaleHalf ? ls0 : std::min(kScaleHalf - 1, ls0 + 1);
    for (int a = a_lo; a <= a_hi; ++a) {
      if (a == ls0) continue;
      const double err = symmetric_error(xs, ws, 16, d * static_cast<float>(a), kNmax);
      if (err < best) {
        best = err;
        ls[j] = a;
      }
    }
    symmetric_levels(xs, 16, d * static_cast<float>(ls[j]), kNmax, L + 16 * j);
  }
}

void quantize_q3_K(const float* x, BlockQ3_K* y, int64_t nb, const float* importance) {
  float w[kQKK];
  int ls[16], L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_symmetric_superblock<4, 32>(x, w, &y[i].d, ls, L);
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    for (int j = 0; j < 16; ++j) {
      const int u = ls[j] + 32;  // 0..63
      y[i].scales[j % 8] |= static_cast<uint8_t>((u & 0x0F) << (4 * (j / 8)));
      y[i].scales[8 + j % 4] |= static_cast<uint8_t>((u >> 4) << (2 * (j / 4)));
    }
    std::memset(y[i].qs, 0, sizeof(y[i].qs));
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    for (int p = 0; p < kQKK; ++p) {
      const int u = L[p] + 4;  // 0..7; bit 2 set means "no -4"
      y[i].qs[(p / 128) * 32 + p % 32] |= static_cast<uint8_t>((u & 3) << (2 * ((p % 128) / 32)));
      y[i].hmask[p % 32] |= static_cast<uint8_t>((u >> 2) << (p / 32));
    }
  }
}

void quantize_q6_K(const float* x, BlockQ6_K* y, int64_t nb, const float* importance) {
  float w[kQKK];
  int ls[16], L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    make_weights(x, importance ? importance + i * kQKK : nullptr, w);
    fit_symmetric_superblock<32, 128>(x, w, &y[i].d, ls, L);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<int8_t>(ls[j]);
    std::memset(y[i].ql, 0, sizeof(y[i].ql));
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int p = 0; p < kQKK; ++p) {
      const int u = L[p] + 32;  // 0..63
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
