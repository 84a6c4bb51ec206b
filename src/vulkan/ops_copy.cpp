// ops_copy.cpp: the streaming copy that measures a device's memory bandwidth (ops.h copy_words).
#include <algorithm>

#include "util/error.h"
#include "vulkan/ops.h"

namespace moe::vk {

void copy_words(Stream& s, const BufferRef& src, const BufferRef& dst, uint64_t n_bytes) {
  if (n_bytes % 16) fail("internal: copy_words of ", n_bytes, " bytes (not a multiple of 16)");
  if (n_bytes > src.size() || n_bytes > dst.size()) fail("internal: copy_words past the end of a buffer");
  const uint64_t n_vec = n_bytes / 16;
  if (n_vec > UINT32_MAX) fail("internal: copy_words of more than 64 GiB in one call");
  const uint32_t push = static_cast<uint32_t>(n_vec);
  const Pipeline& p = s.context().pipeline("copy_words", 2, sizeof push);
  // Enough groups to fill any device (grid-stride loop inside), never more than there is work for.
  const uint64_t groups = std::min<uint64_t>((n_vec + 255) / 256, 4096);
  s.dispatch(p, {src, dst}, &push, sizeof push, static_cast<uint32_t>(std::max<uint64_t>(groups, 1)));
}

}  // namespace moe::vk
