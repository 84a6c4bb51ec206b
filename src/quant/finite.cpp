// finite.cpp: first_non_finite over each type's layout (quant/blocks.h). An IEEE half is NaN or Inf when
// its five exponent bits are all ones (0x7C00), a float when its eight are (0x7F800000), a bfloat16
// when its eight are (0x7F80).
#include "quant/finite.h"

#include <cstddef>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::quant {
namespace {

bool half_non_finite(uint16_t h) { return (h & 0x7C00u) == 0x7C00u; }

uint16_t load_u16(const uint8_t* p, size_t offset) {
  uint16_t v;
  std::memcpy(&v, p + offset, sizeof v);
  return v;
}

// Blocks of type B whose finiteness is decided by the halves at offsets `scales` within the block.
template <typename B, int kElems, size_t... kOffsets>
std::optional<uint64_t> scan_blocks(const void* data, uint64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint64_t blocks = n / kElems;
  for (uint64_t b = 0; b < blocks; ++b, p += sizeof(B)) {
    if ((half_non_finite(load_u16(p, kOffsets)) || ...)) return b * kElems;
  }
  return std::nullopt;
}

}  // namespace

std::optional<uint64_t> first_non_finite(GgmlType type, const void* data, uint64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  switch (type) {
    case GgmlType::F32:
      for (uint64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, p + 4 * i, 4);
        if ((bits & 0x7F800000u) == 0x7F800000u) return i;
      }
      return std::nullopt;
    case GgmlType::F16:
      for (uint64_t i = 0; i < n; ++i)
        if (half_non_finite(load_u16(p, 2 * i))) return i;
      return std::nullopt;
    case GgmlType::BF16:
      for (uint64_t i = 0; i < n; ++i)
        if ((load_u16(p, 2 * i) & 0x7F80u) == 0x7F80u) return i;
      return std::nullopt;
    case GgmlType::Q4_0: return scan_blocks<BlockQ4_0, kQK, offsetof(BlockQ4_0, d)>(data, n);
    case GgmlType::Q4_1: return scan_blocks<BlockQ4_1, kQK, offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)>(data, n);
    case GgmlType::Q5_0: return scan_blocks<BlockQ5_0, kQK, offsetof(BlockQ5_0, d)>(data, n);
    case GgmlType::Q5_1: return scan_blocks<BlockQ5_1, kQK, offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)>(data, n);
    case GgmlType::Q8_0: return scan_blocks<BlockQ8_0, kQK, offsetof(BlockQ8_0, d)>(data, n);
    case GgmlType::Q2_K:
      return scan_blocks<BlockQ2_K, kQKK, offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)>(data, n);
    case GgmlType::Q3_K: return scan_blocks<BlockQ3_K, kQKK, offsetof(BlockQ3_K, d)>(data, n);
    case GgmlType::Q4_K:
      return scan_blocks<BlockQ4_K, kQKK, offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)>(data, n);
    case GgmlType::Q5_K:
      return scan_blocks<BlockQ5_K, kQKK, offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)>(data, n);
    case GgmlType::Q6_K: return scan_blocks<BlockQ6_K, kQKK, offsetof(BlockQ6_K, d)>(data, n);
    default: fail("first_non_finite: type ", type_name(type), " is not a weight type this project computes with");
  }
}

}  // namespace moe::quant
