// attention_avx2.cpp: Fast-precision attention over an F16 KV cache (the default) with AVX2 + F16C:
// rows are converted eight halves at a time and consumed by FMAs, instead of the portable kernel's table
// lookup per element. Same algorithm as attention.cpp's (chunks of positions, online softmax), so the
// same error analysis holds; only the order of the float sums inside a dot product differs.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/attention_simd.h"
#include "util/fp16.h"

namespace moe::kernels::detail {
namespace {

constexpr int64_t kChunk = 16;

inline float half_at(const uint16_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline __m256 halves8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

float dot(const float* q, const uint16_t* k, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), halves8(k + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), halves8(k + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), halves8(k + i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += q[i] * half_at(k + i);
  return s;
}

// acc[0..n) = acc * c + p * v (c, p scalars).
void scale_add(float* acc, float c, float p, const uint16_t* v, int64_t n) {
  const __m256 vc = _mm256_set1_ps(c), vp = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vp, halves8(v + i), _mm256_mul_ps(_mm256_loadu_ps(acc + i), vc)));
  for (; i < n; ++i) acc[i] = acc[i] * c + p * half_at(v + i);
}

}  // namespace

void attend_f16_avx2(const float* q, const PagedRows& k, const PagedRows& v, int64_t first, int64_t hd,
                     int64_t n_ctx, float scale, float* out, float* acc) {
  std::fill(acc, acc + hd, 0.0f);
  float m = -std::numeric_limits<float>::infinity(), l = 0;
  float s[kChunk];
  for (int64_t j0 = 0; j0 < n_ctx; j0 += kChunk) {
    const int64_t n = std::min(kChunk, n_ctx - j0);
    float cmax = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      s[j] = dot(q, reinterpret_cast<const uint16_t*>(k.row(j0 + j)) + first, hd) * scale;
      cmax = std::max(cmax, s[j]);
    }
    const float m_new = std::max(m, cmax);
    float corr = std::exp(m - m_new);  // 0 on the first chunk (m = -inf)
    l *= corr;
    for (int64_t j = 0; j < n; ++j) {
      const float pj = std::exp(s[j] - m_new);
      l += pj;
      // The rescale of the accumulator rides along with the chunk's first row.
      scale_add(acc, j == 0 ? corr : 1.0f, pj, reinterpret_cast<const uint16_t*>(v.row(j0 + j)) + first, hd);
    }
    m = m_new;
  }
  const float inv = l > 0 ? 1.0f / l : 0.0f;
  for (int64_t i = 0; i < hd; ++i) out[i] = acc[i] * inv;
}

}  // namespace moe::kernels::detail
