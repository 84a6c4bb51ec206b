// ops_attention.cpp: kv_store and attention over the paged KV cache (ops.h). The host checks the
// cache's layout against the element type (row sizes as kernels::kv_row_bytes computes them, each K and
// V region inside its block, the alignment the shaders' word access needs) and the sizes of every
// binding; what only the device knows (block ids in the tables, positions) the shaders guard
// themselves (kv_rows.glsl), touching nothing outside the cache for a bad entry.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "vulkan/ops.h"
#include "vulkan/ops_args.h"
#include "vulkan/ops_attention_variants.h"

namespace moe::vk {

using detail::need;
using detail::u32;
using detail::u32_product;

namespace {

constexpr int64_t kMaxHeadDim = 512;  // attention.comp's MAX_HEAD_DIM

// KvLayout of kv_rows.glsl.
struct KvLayoutPush {
  uint32_t block_bytes, row_bytes, k_offset, v_offset, block_tokens, n_blocks, n_tables;
};

const char* element_suffix(const char* op, GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return "f32";
    case GgmlType::F16:
      return "f16";
    case GgmlType::BF16:
      return "bf16";
    case GgmlType::Q8_0:
      return "q8_0";
    default:
      fail(op, ": KV cache element type ", type_name(t), " is not supported (f32, f16, bf16, q8_0)");
  }
}

// kernels::kv_row_bytes, restated so that the device layer does not link the CPU kernels.
uint64_t expected_row_bytes(GgmlType t, uint64_t n) {
  switch (t) {
    case GgmlType::F32:
      return 4 * n;
    case GgmlType::F16:
    case GgmlType::BF16:
      return 2 * n;
    default:
      return (n + 31) / 32 * 34;  // Q8_0: whole 32-value blocks of an f16 scale and 32 int8
  }
}

// Checks the cache and the token pages for `row_values` values per row and returns the layout push
// constants.
KvLayoutPush check_layout(const char* op, const PagedKv& kv, const TokenPages& pages, int64_t row_values) {
  element_suffix(op, kv.element);
  if (row_values <= 0) fail(op, ": ", row_values, " values per KV row; must be positive");
  const uint64_t want = expected_row_bytes(kv.element, static_cast<uint64_t>(row_values));
  if (kv.row_bytes != want)
    fail(op, ": KV rows of ", row_values, " ", type_name(kv.element), " values are ", want, " bytes, not ",
         kv.row_bytes);
  if (kv.block_tokens <= 0) fail(op, ": block_tokens ", kv.block_tokens, " must be positive");
  const uint64_t region = kv.row_bytes * static_cast<uint64_t>(kv.block_tokens);
  if (kv.block_bytes == 0 || kv.k_offset + region > kv.block_bytes || kv.v_offset + region > kv.block_bytes)
    fail(op, ": the layer's K rows at ", kv.k_offset, " and V rows at ", kv.v_offset, " (", region,
         " bytes each) do not fit a block of ", kv.block_bytes, " bytes");
  const uint64_t align = kv.element == GgmlType::F32 ? 4 : 2;  // the shaders' word and half-word access
  if (kv.block_bytes % align || kv.row_bytes % align || kv.k_offset % align || kv.v_offset % align)
    fail(op, ": KV block layout (block ", kv.block_bytes, ", row ", kv.row_bytes, ", K at ", kv.k_offset, ", V at ",
         kv.v_offset, ") is not aligned to ", align, " bytes");
  need(op, "the KV blocks", kv.data, kv.block_bytes);
  // Byte offsets in the shaders are 32-bit: a binding of the whole pool must stay under 4 GiB (also
  // the largest storage-buffer range most drivers allow).
  const uint64_t bytes = kv.data.size();
  if (bytes > UINT32_MAX)
    fail(op, ": the KV blocks binding is ", bytes, " bytes; at most 4 GiB - 1 can be addressed by one binding");
  const uint32_t n_tok = u32(op, "n_tok", pages.n_tok);
  need(op, "table_start", pages.table_start, uint64_t{n_tok} * 4);
  need(op, "positions", pages.positions, uint64_t{n_tok} * 4);
  need(op, "tables", pages.tables, 4);
  KvLayoutPush L{};
  L.block_bytes = static_cast<uint32_t>(kv.block_bytes);
  L.row_bytes = static_cast<uint32_t>(kv.row_bytes);
  L.k_offset = static_cast<uint32_t>(kv.k_offset);
  L.v_offset = static_cast<uint32_t>(kv.v_offset);
  L.block_tokens = u32(op, "block_tokens", kv.block_tokens);
  L.n_blocks = static_cast<uint32_t>(bytes / kv.block_bytes);
  L.n_tables = static_cast<uint32_t>(std::min<uint64_t>(pages.tables.size() / 4, UINT32_MAX));
  return L;
}

}  // namespace

void kv_store(Stream& s, const PagedKv& kv, const TokenPages& pages, const BufferRef& k, const BufferRef& v,
              int64_t row_values) {
  const char* op = "kv_store";
  const KvLayoutPush L = check_layout(op, kv, pages, row_values);
  const uint64_t src_bytes = uint64_t{u32_product(op, "n_tok * row_values", pages.n_tok, row_values)} * 4;
  need(op, "k", k, src_bytes);
  need(op, "v", v, src_bytes);
  struct Push {
    KvLayoutPush L;
    uint32_t n_tok, row_values, units;
  } pc{L, static_cast<uint32_t>(pages.n_tok), static_cast<uint32_t>(row_values),
       static_cast<uint32_t>(kv.element == GgmlType::Q8_0 ? (row_values + 31) / 32 : row_values)};
  const uint64_t total = uint64_t{pc.n_tok} * 2 * pc.units;
  if (total > UINT32_MAX) fail(op, ": ", pc.n_tok, " tokens of ", row_values, " values are too many for one dispatch");
  if (pc.n_tok == 0) return;
  const std::string name = std::string("kv_store_") + element_suffix(op, kv.element);
  const Pipeline& p = s.context().pipeline(name, 6, sizeof(Push));
  s.dispatch(p, {kv.data, pages.tables, pages.table_start, pages.positions, k, v}, &pc, sizeof pc,
             detail::stride_groups(total));
}

void detail::attention_family(Stream& s, std::string_view family, const PagedKv& kv, const TokenPages& pages,
                              const BufferRef& q, const BufferRef& out, int64_t n_head, int64_t n_head_kv,
                              int64_t head_dim, float scale) {
  const char* op = "attention";
  if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0)
    fail(op, ": n_head ", n_head, " must be a positive multiple of n_head_kv ", n_head_kv);
  if (n_head > kMaxGroups) fail(op, ": n_head ", n_head, " is over ", kMaxGroups);
  if (head_dim <= 0 || head_dim > kMaxHeadDim) fail(op, ": head_dim ", head_dim, " must be in [1, ", kMaxHeadDim, "]");
  if (!std::isfinite(scale)) fail(op, ": scale ", scale, " is not finite");
  const KvLayoutPush L = check_layout(op, kv, pages, n_head_kv * head_dim);
  const uint64_t qbytes = uint64_t{u32_product(op, "n_tok * n_head * head_dim", pages.n_tok, n_head * head_dim)} * 4;
  need(op, "q", q, qbytes);
  need(op, "out", out, qbytes);
  struct Push {
    KvLayoutPush L;
    uint32_t n_tok, n_head, n_head_kv, head_dim, tok0;
    float scale;
  } pc{L,
       static_cast<uint32_t>(pages.n_tok),
       static_cast<uint32_t>(n_head),
       static_cast<uint32_t>(n_head_kv),
       static_cast<uint32_t>(head_dim),
       0,
       scale};
  const std::string name = std::string(family) + "_" + element_suffix(op, kv.element);
  const Pipeline& p = s.context().pipeline(name, 6, sizeof(Push));
  // One workgroup per (head, token); grids over 65535 tokens go in several dispatches.
  for (uint32_t t0 = 0; t0 < pc.n_tok; t0 += detail::kMaxGroups) {
    pc.tok0 = t0;
    const uint32_t n = std::min<uint32_t>(pc.n_tok - t0, detail::kMaxGroups);
    s.dispatch(p, {kv.data, pages.tables, pages.table_start, pages.positions, q, out}, &pc, sizeof pc,
               static_cast<uint32_t>(n_head), n);
  }
}

void attention(Stream& s, const PagedKv& kv, const TokenPages& pages, const BufferRef& q, const BufferRef& out,
               int64_t n_head, int64_t n_head_kv, int64_t head_dim, float scale) {
  detail::attention_family(s, "attention", kv, pages, q, out, n_head, n_head_kv, head_dim, scale);
}

}  // namespace moe::vk
