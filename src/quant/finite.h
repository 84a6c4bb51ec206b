// finite.h: finding a NaN or an infinity in weights without decoding them. A block format's values are
// small integers times its IEEE-half scales (d, and m/dmin where the format has them), so a block
// decodes to finite values exactly when its scales are finite: the scan reads two or four bytes per
// block (of 18 to 210) instead of dequantizing. Plain types (F32, F16, BF16) are scanned value by value
// on their bit patterns. Used at model load on the small tensors where one bad value poisons every
// token (norms, router, output; src/model/weights.cpp).
#pragma once
#include <cstdint>
#include <optional>

#include "gguf/ggml_types.h"

namespace moe::quant {

// The index of the first element whose decoded value is NaN or infinite (for a block format, the first
// element of the first block with a non-finite scale), or nullopt when every value is finite.
// `n` is a whole number of blocks of a supported type (F32, F16, BF16, Q4_0 … Q8_0, Q2_K … Q6_K).
std::optional<uint64_t> first_non_finite(GgmlType type, const void* data, uint64_t n);

}  // namespace moe::quant
