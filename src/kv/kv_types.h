// kv_types.h: the element types of the KV cache, in one table, and the one formula for its size. The
// planner (`moe plan`) and the allocator both call kv_bytes_per_token(), so "will it fit?" is answered
// with the allocator's own math; the cache, the model and the attention kernel all take a type's
// element encoding (a GGUF block type) from kv_type_info(), so there is no second map to drift.
//
// Only types the cache can store and the attention kernel can read are listed: what the planner and
// `--help` offer is what runs. (An 8-bit float cache would need an element encoding beside the GGUF
// block types that PagedRows and the row codecs speak; q8_0 is the 8-bit type meanwhile.)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gguf/ggml_types.h"

namespace moe::kv {

// F32 is for verification (exact logits); F16 is the default; BF16 is 2 bytes per value; Q8_0 stores
// blocks of 32 int8 values with one f16 scale (34 bytes per 32 values).
enum class KvType { F32, F16, BF16, Q8_0 };

struct KvTypeInfo {
  KvType type;
  const char* name;       // as --kv-cache-dtype spells it
  GgmlType element;       // how a row's values are encoded (kernels/attention.h store_kv_row)
  int64_t block_values;   // values per encoded block (a row is rounded up to whole blocks)
  int64_t block_bytes;    // bytes per encoded block
};

const KvTypeInfo& kv_type_info(KvType t);
const char* kv_type_name(KvType t);
std::optional<KvType> parse_kv_type(std::string_view name);  // "f32", "f16", "bf16", "q8_0"
// The names, comma separated in table order ("f16, bf16, q8_0, f32"), for help texts and errors.
const std::string& kv_type_names();
// The KV type whose rows are encoded as `element`, if any.
std::optional<KvType> kv_type_of_element(GgmlType element);

// Tokens per KV block (the paging granularity of the cache).
constexpr int64_t kBlockTokens = 16;

// Bytes of one row of n values of type t (K or V of one token in one layer, or of one head).
uint64_t kv_row_bytes(KvType t, int64_t n_values);
// Bytes that one token's K and V take in one layer: 2 * n_head_kv * head_dim values of type t
// (Q8_0 rounds each of K and V up to whole 32-value blocks).
uint64_t kv_bytes_per_token_layer(KvType t, int64_t n_head_kv, int64_t head_dim);
// ... in all layers: Mixtral 8x7B in f16 is 2 * 32 * 8 * 128 * 2 = 131,072 bytes.
uint64_t kv_bytes_per_token(KvType t, int64_t n_layer, int64_t n_head_kv, int64_t head_dim);

}  // namespace moe::kv
