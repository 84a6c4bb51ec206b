// ops_elementwise.cpp: the element-wise and row ops of ops.h (rms_norm, rope, swiglu, add,
// gather_rows): argument checks on the host, then one dispatch each of the shaders of the same names
// (src/vulkan/shaders/*.comp). The shaders hold the arithmetic and say why it is shaped so.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vulkan/ops.h"
#include "vulkan/ops_args.h"

namespace moe::vk {

using detail::need;
using detail::u32;
using detail::u32_product;

void rms_norm(Stream& s, const BufferRef& x, const BufferRef& w, const BufferRef& y, int64_t n_rows, int64_t n,
              float eps) {
  const char* op = "rms_norm";
  if (n <= 0) fail(op, ": row length ", n, " must be positive");
  if (!(eps >= 0) || !std::isfinite(eps)) fail(op, ": eps ", eps, " must be finite and non-negative");
  struct Push {
    uint32_t n_rows, n;
    float eps;
  } pc{u32(op, "n_rows", n_rows), u32(op, "n", n), eps};
  const uint64_t bytes = uint64_t{u32_product(op, "n_rows * n", n_rows, n)} * 4;
  need(op, "x", x, bytes);
  need(op, "w", w, uint64_t{pc.n} * 4);
  need(op, "y", y, bytes);
  if (n_rows == 0) return;
  const Pipeline& p = s.context().pipeline("rms_norm", 3, sizeof(Push));
  const detail::Grid2 g = detail::grid_for(pc.n_rows);
  s.dispatch(p, {x, w, y}, &pc, sizeof pc, g.x, g.y);
}

void rope(Stream& s, const BufferRef& x, const BufferRef& pos, int64_t n_tok, int64_t n_heads, int64_t head_dim,
          int64_t n_rot, float freq_base, bool rotate_half) {
  const char* op = "rope";
  if (head_dim <= 0 || n_heads <= 0) fail(op, ": n_heads ", n_heads, " and head_dim ", head_dim, " must be positive");
  if (n_rot <= 0 || n_rot % 2 != 0 || n_rot > head_dim)
    fail(op, ": n_rot ", n_rot, " must be even and in (0, head_dim = ", head_dim, "]");
  if (!(freq_base > 0) || !std::isfinite(freq_base))
    fail(op, ": freq_base ", freq_base, " must be positive and finite");
  const uint32_t values = u32_product(op, "n_tok * n_heads * head_dim", n_tok, n_heads * head_dim);
  need(op, "x", x, uint64_t{values} * 4);
  need(op, "positions", pos, uint64_t{u32(op, "n_tok", n_tok)} * 4);
  if (n_tok == 0) return;
  struct Push {
    uint32_t n_tok, n_heads, head_dim, n_rot, rotate_half;
    float log2_base_over_n_rot;
  } pc{static_cast<uint32_t>(n_tok),
       static_cast<uint32_t>(n_heads),
       static_cast<uint32_t>(head_dim),
       static_cast<uint32_t>(n_rot),
       rotate_half ? 1u : 0u,
       static_cast<float>(std::log2(static_cast<double>(freq_base)) / static_cast<double>(n_rot))};
  const Pipeline& p = s.context().pipeline("rope", 2, sizeof(Push));
  s.dispatch(p, {x, pos}, &pc, sizeof pc, detail::stride_groups(uint64_t{values} / 2));
}

void swiglu(Stream& s, const BufferRef& gate, const BufferRef& up, int64_t n) {
  const char* op = "swiglu";
  const uint32_t n32 = u32(op, "n", n);
  need(op, "gate", gate, uint64_t{n32} * 4);
  need(op, "up", up, uint64_t{n32} * 4);
  if (n32 == 0) return;
  const Pipeline& p = s.context().pipeline("swiglu", 2, sizeof(uint32_t));
  s.dispatch(p, {gate, up}, &n32, sizeof n32, detail::stride_groups(n32));
}

void add(Stream& s, const BufferRef& y, const BufferRef& x, int64_t n) {
  const char* op = "add";
  const uint32_t n32 = u32(op, "n", n);
  need(op, "y", y, uint64_t{n32} * 4);
  need(op, "x", x, uint64_t{n32} * 4);
  if (n32 == 0) return;
  const Pipeline& p = s.context().pipeline("add", 2, sizeof(uint32_t));
  s.dispatch(p, {y, x}, &n32, sizeof n32, detail::stride_groups(n32));
}

void gather_rows(Stream& s, const BufferRef& x, const BufferRef& idx, const BufferRef& out, int64_t n, int64_t cols) {
  const char* op = "gather_rows";
  if (cols <= 0) fail(op, ": cols ", cols, " must be positive");
  const uint32_t total = u32_product(op, "n * cols", n, cols);
  need(op, "x", x, uint64_t{u32(op, "cols", cols)} * 4);
  need(op, "idx", idx, uint64_t{u32(op, "n", n)} * 4);
  need(op, "out", out, uint64_t{total} * 4);
  // Rows the shader may read: those inside the binding, and no more than 32-bit indexing reaches.
  const uint64_t x_rows = std::min<uint64_t>(x.size() / (uint64_t(cols) * 4), UINT32_MAX / uint64_t(cols));
  struct Push {
    uint32_t n, cols, x_rows;
  } pc{static_cast<uint32_t>(n), static_cast<uint32_t>(cols), u32(op, "rows of x", static_cast<int64_t>(x_rows))};
  if (n == 0) return;
  const Pipeline& p = s.context().pipeline("gather_rows", 3, sizeof(Push));
  s.dispatch(p, {x, idx, out}, &pc, sizeof pc, detail::stride_groups(total));
}

}  // namespace moe::vk
