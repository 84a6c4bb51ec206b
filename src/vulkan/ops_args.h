// ops_args.h: argument checks and grid shapes shared by the element-wise, MoE and attention ops
// (ops_elementwise.cpp, ops_moe.cpp, ops_attention.cpp). Every op checks on the host what the host
// knows — sizes fit the shaders' 32-bit indices, each bound range holds what the op reads or writes —
// and fails with a moe::Error naming the op and the argument, because a shader reading past a binding
// is undefined behaviour on the device, not an error message.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "util/error.h"
#include "vulkan/context.h"

namespace moe::vk::detail {

constexpr uint32_t kMaxGroups = 65535;  // maxComputeWorkGroupCount's guaranteed minimum, per dimension

// v as a shader's uint, or a moe::Error naming it when it is negative or too large for 32-bit indexing.
inline uint32_t u32(const char* op, const char* what, int64_t v) {
  if (v < 0 || static_cast<uint64_t>(v) > std::numeric_limits<uint32_t>::max())
    fail(op, ": ", what, " = ", v, " is outside [0, 2^32)");
  return static_cast<uint32_t>(v);
}

// a * b, checked to fit a shader's 32-bit index.
inline uint32_t u32_product(const char* op, const char* what, int64_t a, int64_t b) {
  if (a < 0 || b < 0) fail(op, ": ", what, " has a negative factor (", a, " x ", b, ")");
  if (a != 0 && b > static_cast<int64_t>(std::numeric_limits<uint32_t>::max()) / a)
    fail(op, ": ", what, " = ", a, " x ", b, " is too large for 32-bit indexing");
  return static_cast<uint32_t>(a * b);
}

// Fails unless `r` is bound and holds at least `bytes`.
inline void need(const char* op, const char* what, const BufferRef& r, uint64_t bytes) {
  if (!r.buffer || !r.buffer->valid()) fail(op, ": ", what, " is not bound to a buffer");
  if (r.offset % 16 != 0) fail(op, ": ", what, " starts at offset ", r.offset, ", not a multiple of 16");
  if (r.size() < bytes) fail(op, ": ", what, " holds ", r.size(), " bytes; ", bytes, " are needed");
}

// Workgroups of 256 for a grid-stride loop over n items: enough to fill a large GPU, never over the
// per-dimension limit (the shaders loop over what one pass does not cover).
inline uint32_t stride_groups(uint64_t n, uint32_t group = 256) {
  return static_cast<uint32_t>(std::clamp<uint64_t>((n + group - 1) / group, 1, 4096));
}

// n workgroups as x * y with x <= 65535 (shaders take id = x + y * gl_NumWorkGroups.x, skip id >= n).
struct Grid2 {
  uint32_t x = 1, y = 1;
};
inline Grid2 grid_for(uint64_t n) {
  Grid2 g;
  g.x = static_cast<uint32_t>(std::min<uint64_t>(std::max<uint64_t>(n, 1), kMaxGroups));
  const uint64_t y = (std::max<uint64_t>(n, 1) + g.x - 1) / g.x;
  if (y > kMaxGroups) fail("a grid of ", n, " workgroups is over 65535 x 65535");
  g.y = static_cast<uint32_t>(y);
  return g;
}

}  // namespace moe::vk::detail
