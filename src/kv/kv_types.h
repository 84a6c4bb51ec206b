// kv_types.h: the element types of the KV cache and the one formula for its size. The planner
// (`moe plan`) and the allocator both call kv_bytes_per_token(), so "will it fit?" is answered with
// the allocator's own math.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe::kv {

// F32 is for verification (exact logits); F16 is the default; BF16 and FP8 (e4m3) are 2 and 1 bytes per
// value; Q8_0 stores blocks of 32 int8 values with one f16 scale (34 bytes per 32 values).
enum class KvType { F32, F16, BF16, Q8_0, FP8 };

const char* kv_type_name(KvType t);
std::optional<KvType> parse_kv_type(std::string_view name);  // "f32", "f16", "bf16", "q8_0", "fp8"

// Tokens per KV block (the paging granularity of the cache).
constexpr int64_t kBlockTokens = 16;

// Bytes that one token's K and V take in one layer: 2 * n_head_kv * head_dim values of type t
// (Q8_0 rounds each of K and V up to whole 32-value blocks).
uint64_t kv_bytes_per_token_layer(KvType t, int64_t n_head_kv, int64_t head_dim);
// ... in all layers: Mixtral 8x7B in f16 is 2 * 32 * 8 * 128 * 2 = 131,072 bytes.
uint64_t kv_bytes_per_token(KvType t, int64_t n_layer, int64_t n_head_kv, int64_t head_dim);

}  // namespace moe::kv
