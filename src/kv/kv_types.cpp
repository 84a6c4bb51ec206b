// kv_types.cpp: KV element types and sizes.
#include "kv/kv_types.h"

namespace moe::kv {

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::F32: return "f32";
    case KvType::F16: return "f16";
    case KvType::BF16: return "bf16";
    case KvType::Q8_0: return "q8_0";
    case KvType::FP8: return "fp8";
  }
  return "?";
}

std::optional<KvType> parse_kv_type(std::string_view n) {
  if (n == "f32") return KvType::F32;
  if (n == "f16") return KvType::F16;
  if (n == "bf16") return KvType::BF16;
  if (n == "q8_0") return KvType::Q8_0;
  if (n == "fp8" || n == "fp8_e4m3") return KvType::FP8;
  return std::nullopt;
}

uint64_t kv_bytes_per_token_layer(KvType t, int64_t n_head_kv, int64_t head_dim) {
  uint64_t values = static_cast<uint64_t>(n_head_kv) * static_cast<uint64_t>(head_dim);  // of K, and of V
  uint64_t one;
  switch (t) {
    case KvType::F32: one = values * 4; break;
    case KvType::F16:
    case KvType::BF16: one = values * 2; break;
    case KvType::FP8: one = values; break;
    case KvType::Q8_0: one = (values + 31) / 32 * 34; break;
    default: one = values * 4;
  }
  return 2 * one;
}

uint64_t kv_bytes_per_token(KvType t, int64_t n_layer, int64_t n_head_kv, int64_t head_dim) {
  return static_cast<uint64_t>(n_layer) * kv_bytes_per_token_layer(t, n_head_kv, head_dim);
}

}  // namespace moe::kv
