// attention.cpp: paged causal attention with an online softmax, and KV row encode/decode.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/attention_simd.h"
#include "kv/kv_types.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::kernels {
namespace {

constexpr int64_t kChunk = 16;  // positions scored before each rescale of the accumulator

size_t align64(size_t n) { return (n + 63) & ~size_t{63}; }

// Every half as a float (256 KiB, built once): the software conversion's branches cost more than
// the attention arithmetic around it.
const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

// Decodes values [first, first + n) of a row; inlined per element type so the hot loop has no
// per-row dispatch (the Q8_0 case, rarer, goes through load_kv_values).
template <GgmlType T>
inline void load_values(const uint8_t* row, int64_t first, int64_t n, float* dst, const float* halves) {
  if constexpr (T == GgmlType::F32) {
    std::memcpy(dst, row + first * 4, static_cast<size_t>(n) * 4);
  } else if constexpr (T == GgmlType::F16 || T == GgmlType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, row + 2 * (first + i), 2);
      dst[i] = T == GgmlType::F16 ? halves[h] : bf16_to_fp32(h);
    }
  } else {
    load_kv_values(T, row, first, n, dst);
  }
}

template <typename Acc, GgmlType T>
void attend(const float* q, const PagedRows& k, const PagedRows& v, int64_t first, int64_t hd, int64_t n_ctx,
            float scale, float* out, void* scratch) {
  auto* base = static_cast<uint8_t*>(scratch);
  float* row = reinterpret_cast<float*>(base);  // hd floats
  Acc* acc = reinterpret_cast<Acc*>(base + align64(static_cast<size_t>(hd) * sizeof(float)));
  Acc s[kChunk];
  for (int64_t i = 0; i < hd; ++i) acc[i] = 0;
  Acc m = -std::numeric_limits<Acc>::infinity(), l = 0;
  const float* halves = half_table();
  for (int64_t j0 = 0; j0 < n_ctx; j0 += kChunk) {
    const int64_t n = std::min(kChunk, n_ctx - j0);
    Acc cmax = -std::numeric_limits<Acc>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      load_values<T>(k.row(j0 + j), first, hd, row, halves);
      Acc d = 0;
      for (int64_t i = 0; i < hd; ++i) d += static_cast<Acc>(q[i]) * static_cast<Acc>(row[i]);
      s[j] = d * static_cast<Acc>(scale);
      cmax = std::max(cmax, s[j]);
    }
    const Acc m_new = std::max(m, cmax);
    const Acc corr = std::exp(m - m_new);  // 0 on the first chunk (m = -inf)
    l *= corr;
    for (int64_t i = 0; i < hd; ++i) acc[i] *= corr;
    for (int64_t j = 0; j < n; ++j) {
      const Acc pj = std::exp(s[j] - m_new);
      l += pj;
      load_values<T>(v.row(j0 + j), first, hd, row, halves);
      for (int64_t i = 0; i < hd; ++i) acc[i] += pj * static_cast<Acc>(row[i]);
    }
    m = m_new;
  }
  const Acc inv = l > 0 ? Acc(1) / l : Acc(0);
  for (int64_t i = 0; i < hd; ++i) out[i] = static_cast<float>(acc[i] * inv);
}

template <typename Acc>
void attend_typed(const float* q, const PagedRows& k, const PagedRows& v, int64_t first, int64_t hd, int64_t n_ctx,
                  float scale, float* out, void* scratch) {
  if (k.type != v.type) fail("internal: K and V rows of different types");
  switch (k.type) {
    case GgmlType::F32: return attend<Acc, GgmlType::F32>(q, k, v, first, hd, n_ctx, scale, out, scratch);
    case GgmlType::F16: return attend<Acc, GgmlType::F16>(q, k, v, first, hd, n_ctx, scale, out, scratch);
    case GgmlType::BF16: return attend<Acc, GgmlType::BF16>(q, k, v, first, hd, n_ctx, scale, out, scratch);
    case GgmlType::Q8_0: return attend<Acc, GgmlType::Q8_0>(q, k, v, first, hd, n_ctx, scale, out, scratch);
    default: fail("KV cache element type ", type_name(k.type), " is not supported");
  }
}

}  // namespace

bool kv_element_supported(GgmlType t) { return kv::kv_type_of_element(t).has_value(); }

size_t kv_row_bytes(GgmlType type, int64_t n) {
  const auto kvt = kv::kv_type_of_element(type);
  if (!kvt) fail("KV cache element type ", type_name(type), " is not supported");
  return static_cast<size_t>(kv::kv_row_bytes(*kvt, n));
}

void store_kv_row(GgmlType type, const float* src, int64_t n, uint8_t* dst) {
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = fp32_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0: {
      const int64_t full = n / quant::kQK * quant::kQK;
      if (full > 0) quant::quantize_row(GgmlType::Q8_0, src, dst, full);
      if (full < n) {  // the tail block, zero-padded
        float tail[quant::kQK] = {};
        std::memcpy(tail, src + full, static_cast<size_t>(n - full) * 4);
        quant::quantize_row(GgmlType::Q8_0, tail, dst + full / quant::kQK * sizeof(quant::BlockQ8_0), quant::kQK);
      }
      return;
    }
    default: fail("KV cache element type ", type_name(type), " is not supported");
  }
}

void load_kv_values(GgmlType type, const uint8_t* row, int64_t first, int64_t n, float* dst) {
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, row + first * 4, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * (first + i), 2);
        dst[i] = fp16_to_fp32(h);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * (first + i), 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    case GgmlType::Q8_0:
      // Decode block by block: a head need not start on a block boundary (head_dim 8 in stories260K).
      for (int64_t i = 0; i < n;) {
        const int64_t e = first + i, b = e / quant::kQK, in = e % quant::kQK;
        quant::BlockQ8_0 blk;
        std::memcpy(&blk, row + b * static_cast<int64_t>(sizeof(blk)), sizeof(blk));
        const float d = fp16_to_fp32(blk.d);
        const int64_t take = std::min<int64_t>(n - i, quant::kQK - in);
        for (int64_t j = 0; j < take; ++j) dst[i + j] = d * static_cast<float>(blk.qs[in + j]);
        i += take;
      }
      return;
    default: fail("KV cache element type ", type_name(type), " is not supported");
  }
}

size_t attention_scratch_bytes(int64_t head_dim) {
  return align64(static_cast<size_t>(head_dim) * sizeof(float)) + align64(static_cast<size_t>(head_dim) * sizeof(double));
}

void attend_head(const float* q, const PagedRows& k, const PagedRows& v, int64_t kv_first, int64_t head_dim,
                 int64_t n_ctx, float scale, float* out, void* scratch, Precision p) {
  if (p == Precision::Exact)
    attend_typed<double>(q, k, v, kv_first, head_dim, n_ctx, scale, out, scratch);
  else if (k.type == GgmlType::F16 && v.type == GgmlType::F16 && active_isa() >= Isa::AVX2)
    detail::attend_f16_avx2(q, k, v, kv_first, head_dim, n_ctx, scale, out, static_cast<float*>(scratch));
  else
    attend_typed<float>(q, k, v, kv_first, head_dim, n_ctx, scale, out, scratch);
}

}  // namespace moe::kernels
