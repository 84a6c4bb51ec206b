// ops_matmul_detail.h: the one seam of ops_matmul.cpp below ops.h, for its test: the plain product
// recorded with a named shader variant of mm.comp instead of the one matmul() picks, so the test can run
// the deliberately mutated variant (mm_q3_k_mutant) through the same host code and show that its
// comparison rejects it.
#pragma once
#include <cstdint>
#include <string_view>

#include "vulkan/ops.h"

namespace moe::vk::detail {

// matmul() with shader `shader` (an embedded mm.comp variant whose NT is `tile`: 1, 8 or 32).
void matmul_with_shader(Stream& s, const DeviceMatrix& w, const BufferRef& x, const BufferRef& y, int64_t n_tok,
                        std::string_view shader, int64_t tile);

}  // namespace moe::vk::detail
