// kv_types.cpp: the table of KV element types and the sizes derived from it.
#include "kv/kv_types.h"


#include "util/error.h"

namespace moe::kv {
namespace {

// Table order is the order help texts list them in: the default first.
constexpr KvTypeInfo kTypes[] = {
    {KvType::F16, "f16", GgmlType::F16, 1, 2},
    {KvType::BF16, "bf16", GgmlType::BF16, 1, 2},
    {KvType::Q8_0, "q8_0", GgmlType::Q8_0, 32, 34},
    {KvType::F32, "f32", GgmlType::F32, 1, 4},
};

}  // namespace

const KvTypeInfo& kv_type_info(KvType t) {
  for (const KvTypeInfo& i : kTypes)
    if (i.type == t) return i;
  fail("internal: KV type ", static_cast<int>(t), " is not in the table");
}

const char* kv_type_name(KvType t) { return kv_type_info(t).name; }

std::optional<KvType> parse_kv_type(std::string_view n) {
  for (const KvTypeInfo& i : kTypes)
    if (n == i.name) return i.type;
  return std::nullopt;
}

const std::string& kv_type_names() {
  static const std::string names = [] {
    std::string s;
    for (const KvTypeInfo& i : kTypes) s += (s.empty() ? "" : ", ") + std::string(i.name);
    return s;
  }();
  return names;
}

std::optional<KvType> kv_type_of_element(GgmlType element) {
  for (const KvTypeInfo& i : kTypes)
    if (i.element == element) return i.type;
  return std::nullopt;
}

uint64_t kv_row_bytes(KvType t, int64_t n_values) {
  const KvTypeInfo& i = kv_type_info(t);
  const auto blocks = (static_cast<uint64_t>(n_values) + static_cast<uint64_t>(i.block_values) - 1) /
                      static_cast<uint64_t>(i.block_values);
  return blocks * static_cast<uint64_t>(i.block_bytes);
}

uint64_t kv_bytes_per_token_layer(KvType t, int64_t n_head_kv, int64_t head_dim) {
  const int64_t values = n_head_kv * head_dim;  // of K, and of V
  return 2 * kv_row_bytes(t, values);
}

uint64_t kv_bytes_per_token(KvType t, int64_t n_layer, int64_t n_head_kv, int64_t head_dim) {
  return static_cast<uint64_t>(n_layer) * kv_bytes_per_token_layer(t, n_head_kv, head_dim);
}

}  // namespace moe::kv
