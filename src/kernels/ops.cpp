// ops.cpp: scalar RMSNorm, RoPE, softmax, SwiGLU and add (see ops.h).
#include "kernels/ops.h"

#include <cmath>

namespace moe::kernels {

void rmsnorm(const float* x, const float* w, float eps, int64_t n, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + static_cast<double>(eps));
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<double>(x[i]) * scale * w[i]);
}

void rope_table(int64_t pos, int64_t n_rot, double base, float* cs) {
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const double theta = static_cast<double>(pos) * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
    cs[2 * i] = static_cast<float>(std::cos(theta));
    cs[2 * i + 1] = static_cast<float>(std::sin(theta));
  }
}

void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < n_rot / 2; ++i) {
      const double c = cs[2 * i], s = cs[2 * i + 1];
      const double x0 = v[2 * i], x1 = v[2 * i + 1];
      v[2 * i] = static_cast<float>(x0 * c - x1 * s);
      v[2 * i + 1] = static_cast<float>(x0 * s + x1 * c);
    }
  }
}

void rope_apply_rotate_half(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs) {
  const int64_t half = n_rot / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const double c = cs[2 * i], s = cs[2 * i + 1];
      const double x0 = v[i], x1 = v[i + half];
      v[i] = static_cast<float>(x0 * c - x1 * s);
      v[i + half] = static_cast<float>(x0 * s + x1 * c);
    }
  }
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(static_cast<double>(x[i]) - mx) / sum);
}

void route_top_k(float* logits, int64_t n_exp, int64_t k, int32_t* ids, float* ws) {
  softmax(logits, n_exp);
  const float* p = logits;
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) {  // k is 2 of 8 in Mixtral: selection beats a sort
    int32_t best = -1;
    for (int32_t e = 0; e < n_exp; ++e) {
      bool taken = false;
      for (int64_t i = 0; i < j; ++i) taken |= ids[i] == e;
      if (!taken && (best < 0 || p[e] > p[best])) best = e;
    }
    ids[j] = best;
    sum += p[best];
  }
  for (int64_t j = 0; j < k; ++j) ws[j] = static_cast<float>(p[ids[j]] / sum);
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace moe::kernels
