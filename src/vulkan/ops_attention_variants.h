// ops_attention_variants.h: attention (ops.h) with the shader family chosen by name, so that the tests
// can run the deliberately broken attention_mutated_* shaders through the very comparison the real
// ones pass, and show that it rejects them. The model never calls this.
#pragma once
#include <cstdint>
#include <string_view>

#include "vulkan/ops.h"

namespace moe::vk::detail {

// attention() using the shader "<family>_<element>" ("attention_f16", "attention_mutated_f16", ...).
void attention_family(Stream& s, std::string_view family, const PagedKv& kv, const TokenPages& pages,
                      const BufferRef& q, const BufferRef& out, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                      float scale);

}  // namespace moe::vk::detail
