// ggml_types.h: the tensor element types of the GGUF format and their block geometry.
// These are file-format facts (type ids and block layouts are fixed by GGUF), so they live with the
// reader; src/quant implements the arithmetic of each block format.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe {

// Type ids as stored in GGUF tensor infos. Ids 4 and 5 (Q4_2, Q4_3) were removed from the format.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35,
};

struct TypeTraits {
  GgmlType type;
  const char* name;      // "Q4_K", as llama.cpp and gguf-py spell it
  int64_t block_size;    // elements per block (1 for plain types)
  size_t type_size;      // bytes per block
};

// Geometry of a known type id, or nullptr for an id this project does not know (a clear load error).
const TypeTraits* type_traits(GgmlType type);
const TypeTraits* type_traits_by_id(uint32_t id);
const TypeTraits* type_traits_by_name(std::string_view name);  // case-insensitive
std::string type_name(GgmlType type);  // "type 99" for unknown ids

// Bytes of a row of n elements, or nullopt when n is not a multiple of the block size or it overflows.
std::optional<uint64_t> row_bytes(GgmlType type, uint64_t n);

}  // namespace moe
