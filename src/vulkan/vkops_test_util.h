// vkops_test_util.h: small helpers for the element-wise, MoE and attention op tests (tests only):
// device buffers made from host vectors and read back, random inputs, and the float error bounds the
// tolerances are built from. Header-only so that it needs no library of its own.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "vulkan/context.h"

namespace moe::vk::testing {

// Unit roundoff of f32 (half an ulp at 1): a correctly rounded operation is off by at most u * |result|.
constexpr double kU = 1.0 / 16777216.0;
// gamma_n = n u / (1 - n u): the relative error bound of n f32 additions/multiplications in a row
// (Higham), used for sums and dot products whatever their order.
inline double gamma(double n) { return n * kU / (1 - n * kU); }

// A device buffer holding `v` (at least 16 bytes, so an empty vector still gives a valid binding).
template <typename T>
Buffer device_from(Context& ctx, const std::vector<T>& v) {
  const uint64_t bytes = std::max<uint64_t>(16, v.size() * sizeof(T));
  Buffer b = ctx.buffer(bytes, MemoryKind::Device);
  if (!v.empty()) ctx.upload(BufferRef(b, 0, v.size() * sizeof(T)), v.data());
  return b;
}

// A zero-filled device buffer of n values of T.
template <typename T>
Buffer device_zeros(Context& ctx, size_t n) {
  Buffer b = ctx.buffer(std::max<uint64_t>(16, n * sizeof(T)), MemoryKind::Device);
  ctx.zero(BufferRef(b));
  return b;
}

template <typename T>
std::vector<T> read_back(Context& ctx, const Buffer& b, size_t n) {
  std::vector<T> v(n);
  if (n) ctx.download(BufferRef(b, 0, n * sizeof(T)), v.data());
  return v;
}

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace moe::vk::testing
