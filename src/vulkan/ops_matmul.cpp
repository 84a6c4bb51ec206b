// ops_matmul.cpp: the matrix products and the embedding lookup of ops.h (matmul, matmul_expert,
// get_rows) for every weight type, recorded as dispatches of mm.comp / get_rows.comp.
//
// Why the host side is shaped so:
//  - Few tokens (decode) run the NT=1 variants, a workgroup per 4 rows and token; more run the tiled
//    variants (8 or 32 tokens share each decoded weight). Both do the same operations per output value
//    (mm.comp), so the choice never changes a bit of the result (batch invariance, ops.h).
//  - A weight range is bound at the storage alignment at or below where it starts, the rest passed as a
//    byte offset, so a tensor (or an expert's slice of a stacked tensor) may start at any even byte.
//  - Rows are split over several dispatches when one would exceed 65535 groups (the portable limit of
//    maxComputeWorkGroupCount, e.g. a 262,144-row head) or the device's maxStorageBufferRange (128 MiB
//    on lavapipe: an F32 output head is larger); token tiles likewise over 65535.
#include <algorithm>
#include <string>

#include "util/error.h"
#include "vulkan/ops.h"
#include "vulkan/ops_matmul_detail.h"

namespace moe::vk {
namespace {

constexpr uint32_t kRowsPerGroup = 4;   // mm.comp ROWS
// Tokens per workgroup by the call's token (slot) count: up to 3 the NT=1 variants (decode), up to 31
// the 8-token tiles, from 32 the 32-token tiles (prompts, large batches). The choice changes no result.
int64_t tile_for(int64_t n_items) { return n_items <= 3 ? 1 : n_items < 32 ? 8 : 32; }
constexpr uint32_t kUnitsPerGroup = 64; // get_rows.comp local_size_x
constexpr uint64_t kMaxGroups = 65535;  // maxComputeWorkGroupCount's portable minimum

// mm.comp's push constants, in its order.
struct MmPush {
  uint32_t row0, row_end, cols, row_bytes, w_byte0, x_off, y_off, y_stride, n_tok, tile0, mode, expert, slot_off,
      offs_off, x_vec4;
};
// get_rows.comp's push constants.
struct GetRowsPush {
  uint32_t cols, row_bytes, w_byte0, row_lo, row_hi, ids_off, out_off, n, id0;
};

const char* type_suffix(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "f32";
    case GgmlType::F16: return "f16";
    case GgmlType::BF16: return "bf16";
    case GgmlType::Q4_0: return "q4_0";
    case GgmlType::Q4_1: return "q4_1";
    case GgmlType::Q5_0: return "q5_0";
    case GgmlType::Q5_1: return "q5_1";
    case GgmlType::Q8_0: return "q8_0";
    case GgmlType::Q2_K: return "q2_k";
    case GgmlType::Q3_K: return "q3_k";
    case GgmlType::Q4_K: return "q4_k";
    case GgmlType::Q5_K: return "q5_k";
    case GgmlType::Q6_K: return "q6_k";
    default: return nullptr;
  }
}

uint64_t max_range(const Context& ctx) {
  const uint64_t r = ctx.info().max_storage_buffer_range;
  return r ? r : (uint64_t{1} << 27);  // the spec's minimum, when the driver did not say
}

// A sub-range [start, start + len) of `r` bound at the storage alignment at or below it; `skip` bytes
// from the binding's start to the range's start. The bound length is rounded up to whole 32-bit words
// (within the buffer) because the shaders read uint words.
struct Bound {
  BufferRef ref;
  uint64_t skip = 0;
};

Bound bind(Context& ctx, const BufferRef& r, uint64_t start, uint64_t len, const char* what) {
  if (!r.buffer || !r.buffer->valid()) fail("Vulkan ", what, ": no buffer given");
  const uint64_t size = r.size();
  if (start > size || len > size - start)
    fail("Vulkan ", what, ": needs bytes [", start, ", ", start + len, ") of a ", size, "-byte range");
  const uint64_t a = ctx.storage_alignment();
  const uint64_t abs = r.offset + start;
  const uint64_t base = abs / a * a;
  const uint64_t end = std::max<uint64_t>((abs + len + 3) / 4 * 4, base + 4);
  const uint64_t range = end - base;
  if (range > max_range(ctx))
    fail("Vulkan ", what, ": ", len, " bytes exceed the device's storage-buffer range of ", max_range(ctx),
         " bytes");
  // A shader cannot read the bytes of a last word the buffer holds only in part.
  if (end > r.buffer->bytes())
    fail("Vulkan ", what, ": the range ends at byte ", abs + len, " of a ", r.buffer->bytes(),
         "-byte buffer, inside its last 4-byte word; allocate buffers in whole words (shaders read uint32)");
  return {BufferRef(*r.buffer, base, range), abs - base};
}

// A whole f32 (or int32) operand: bound as given, its element offset in 4-byte units.
Bound bind_words(Context& ctx, const BufferRef& r, uint64_t need, const char* what) {
  if (r.buffer && r.offset % 4 != 0) fail("Vulkan ", what, ": offset ", r.offset, " is not a multiple of 4 bytes");
  return bind(ctx, r, 0, need, what);
}

// The bytes to bind of a range whose used extent only the device knows: all of it in whole words, or as
// much as one binding may span; at least `least` bytes (checked).
uint64_t open_extent(Context& ctx, const BufferRef& r, uint64_t least, const char* what) {
  const uint64_t size = r.size() / 4 * 4;
  if (size < least) fail("Vulkan ", what, ": the range holds ", r.size(), " bytes, under the ", least, " it needs");
  const uint64_t cap = max_range(ctx) - ctx.storage_alignment() - 4;
  return std::max(least, std::min(size, cap / 4 * 4));
}

uint32_t u32(uint64_t v, const char* what) {
  if (v > 0xFFFFFFFFull) fail("Vulkan matrix product: ", what, " ", v, " exceeds 32 bits");
  return static_cast<uint32_t>(v);
}

// Checks a weight matrix and returns its row bytes.
uint64_t check_matrix(const DeviceMatrix& w, const char* op) {
  if (!matmul_supported(w.type)) fail("Vulkan ", op, ": no shader for weight type ", type_name(w.type));
  if (w.rows <= 0 || w.cols <= 0) fail("Vulkan ", op, ": empty matrix (", w.rows, " x ", w.cols, ")");
  const auto rb = row_bytes(w.type, static_cast<uint64_t>(w.cols));
  if (!rb) fail("Vulkan ", op, ": ", w.cols, " columns are not whole blocks of ", type_name(w.type));
  const uint64_t elem_align = w.type == GgmlType::F32 ? 4 : 2;
  if (w.data.offset % elem_align != 0)
    fail("Vulkan ", op, ": ", type_name(w.type), " data at byte ", w.data.offset, ", not a multiple of ",
         elem_align);
  const uint64_t bytes = *rb * static_cast<uint64_t>(w.rows);
  if (w.data.size() < bytes)
    fail("Vulkan ", op, ": the ", w.rows, " x ", w.cols, " ", type_name(w.type), " matrix needs ", bytes,
         " bytes, its range holds ", w.data.size());
  return *rb;
}

// Rows one dispatch may cover: at most 65535 groups, and a weight range the device can bind.
int64_t rows_per_dispatch(Context& ctx, uint64_t row_bytes) {
  const uint64_t slack = ctx.storage_alignment() + 4;
  const uint64_t range = max_range(ctx);
  if (range <= slack || (range - slack) / row_bytes == 0)
    fail("Vulkan matrix product: one row of ", row_bytes, " bytes exceeds the device's storage-buffer range of ",
         range, " bytes");
  return static_cast<int64_t>(std::min<uint64_t>(kMaxGroups * kRowsPerGroup, (range - slack) / row_bytes));
}

// What matmul and matmul_expert share: records the products of w's rows over `n_items` tokens or slots
// (the grid's tile count is derived from it), splitting rows and tiles as the device needs.
struct Operands {
  Bound x, y, slots, offsets;
  uint32_t mode = 0, expert = 0, n_tok = 0;
};

void record(Stream& s, const DeviceMatrix& w, uint64_t rb, const Operands& op, int64_t n_items,
            std::string_view shader, int64_t tile) {
  Context& ctx = s.context();
  const Pipeline& p = ctx.pipeline(shader, 5, sizeof(MmPush));
  const auto per_tile = static_cast<uint64_t>(tile);
  const uint64_t n_tiles = (static_cast<uint64_t>(n_items) + per_tile - 1) / per_tile;
  const int64_t rows_per = rows_per_dispatch(ctx, rb);
  for (int64_t row0 = 0; row0 < w.rows; row0 += rows_per) {
    const int64_t row_end = std::min(w.rows, row0 + rows_per);
    const Bound wb = bind(ctx, w.data, static_cast<uint64_t>(row0) * rb, static_cast<uint64_t>(row_end - row0) * rb,
                          "matrix product weights");
    const auto groups_x = static_cast<uint32_t>((row_end - row0 + kRowsPerGroup - 1) / kRowsPerGroup);
    for (uint64_t tile0 = 0; tile0 < n_tiles; tile0 += kMaxGroups) {
      const auto groups_y = static_cast<uint32_t>(std::min(kMaxGroups, n_tiles - tile0));
      MmPush push{};
      push.row0 = static_cast<uint32_t>(row0);
      push.row_end = static_cast<uint32_t>(row_end);
      push.cols = static_cast<uint32_t>(w.cols);
      push.row_bytes = u32(rb, "row bytes");
      push.w_byte0 = static_cast<uint32_t>(wb.skip);
      push.x_off = static_cast<uint32_t>(op.x.skip / 4);
      push.y_off = static_cast<uint32_t>(op.y.skip / 4);
      push.y_stride = u32(static_cast<uint64_t>(w.rows), "rows");
      push.n_tok = op.n_tok;
      push.tile0 = static_cast<uint32_t>(tile0);
      push.mode = op.mode;
      push.expert = op.expert;
      push.slot_off = static_cast<uint32_t>(op.slots.skip / 4);
      push.offs_off = static_cast<uint32_t>(op.offsets.skip / 4);
      push.x_vec4 = op.x.skip % 16 == 0 && w.cols % 4 == 0 ? 1 : 0;
      s.dispatch(p, {wb.ref, op.x.ref, op.y.ref, op.slots.ref, op.offsets.ref}, &push, sizeof push, groups_x,
                 groups_y);
    }
  }
}

std::string product_shader(GgmlType type, int64_t tile) {
  return std::string("mm_") + type_suffix(type) + (tile == 1 ? "" : tile == 8 ? "_tiled" : "_tiled32");
}

void plain_product(Stream& s, const DeviceMatrix& w, const BufferRef& x, const BufferRef& y, int64_t n_tok,
                   std::string_view shader, int64_t tile) {
  const uint64_t rb = check_matrix(w, "matmul");
  if (n_tok < 0) fail("Vulkan matmul: negative token count ", n_tok);
  if (n_tok == 0) return;
  Context& ctx = s.context();
  const auto n = static_cast<uint64_t>(n_tok);
  Operands op;
  op.x = bind_words(ctx, x, n * static_cast<uint64_t>(w.cols) * 4, "matmul input");
  op.y = bind_words(ctx, y, n * static_cast<uint64_t>(w.rows) * 4, "matmul output");
  op.slots = op.x;  // unused in mode 0; any valid binding
  op.offsets = op.x;
  op.mode = 0;
  op.n_tok = u32(n, "token count");
  record(s, w, rb, op, n_tok, shader, tile);
}

}  // namespace

bool matmul_supported(GgmlType type) { return type_suffix(type) != nullptr; }

void matmul(Stream& s, const DeviceMatrix& w, const BufferRef& x, const BufferRef& y, int64_t n_tok) {
  if (!matmul_supported(w.type)) fail("Vulkan matmul: no shader for weight type ", type_name(w.type));
  const int64_t tile = tile_for(n_tok);
  plain_product(s, w, x, y, n_tok, product_shader(w.type, tile), tile);
}

void matmul_expert(Stream& s, const DeviceMatrix& w, int32_t expert, const BufferRef& x, bool x_by_token,
                   const BufferRef& slot_tokens, const BufferRef& expert_offsets, int64_t max_slots,
                   const BufferRef& y) {
  const uint64_t rb = check_matrix(w, "matmul_expert");
  if (expert < 0) fail("Vulkan matmul_expert: negative expert id ", expert);
  if (max_slots < 0) fail("Vulkan matmul_expert: negative slot bound ", max_slots);
  if (max_slots == 0) return;
  Context& ctx = s.context();
  Operands op;
  // The rows of x and y the slots reach are only known on the device: as much of the given ranges is
  // bound as one binding can hold (a range given "to the end" of a large arena must not fail), after
  // checking it holds what the slots need at least (by token: max_slots rows, the step's tokens).
  const auto cols = static_cast<uint64_t>(w.cols), rows = static_cast<uint64_t>(w.rows);
  const uint64_t x_least = (x_by_token ? static_cast<uint64_t>(max_slots) : 1) * cols * 4;
  op.x = bind_words(ctx, x, open_extent(ctx, x, x_least, "matmul_expert input"), "matmul_expert input");
  op.y = bind_words(ctx, y, open_extent(ctx, y, rows * 4, "matmul_expert output"), "matmul_expert output");
  op.offsets = bind_words(ctx, expert_offsets, (static_cast<uint64_t>(expert) + 2) * 4, "matmul_expert offsets");
  op.slots = x_by_token ? bind_words(ctx, slot_tokens, open_extent(ctx, slot_tokens, 4, "matmul_expert slot tokens"),
                                     "matmul_expert slot tokens")
                        : op.offsets;
  op.mode = x_by_token ? 1 : 2;
  op.expert = static_cast<uint32_t>(expert);
  const int64_t tile = tile_for(max_slots);
  record(s, w, rb, op, max_slots, product_shader(w.type, tile), tile);
}

void get_rows(Stream& s, const DeviceMatrix& table, const BufferRef& ids, const BufferRef& out, int64_t n) {
  const uint64_t rb = check_matrix(table, "get_rows");
  if (n < 0) fail("Vulkan get_rows: negative row count ", n);
  if (n == 0) return;
  Context& ctx = s.context();
  const auto nn = static_cast<uint64_t>(n);
  const Bound ib = bind_words(ctx, ids, nn * 4, "get_rows ids");
  const Bound ob = bind_words(ctx, out, nn * static_cast<uint64_t>(table.cols) * 4, "get_rows output");
  const Pipeline& p = ctx.pipeline(std::string("get_rows_") + type_suffix(table.type), 3, sizeof(GetRowsPush));
  const uint64_t units = (static_cast<uint64_t>(table.cols) + 31) / 32;
  const auto groups_x = u32((units + kUnitsPerGroup - 1) / kUnitsPerGroup, "row groups");
  if (groups_x > kMaxGroups) fail("Vulkan get_rows: rows of ", table.cols, " values are too long");
  const int64_t rows_per = rows_per_dispatch(ctx, rb);
  for (int64_t row0 = 0; row0 < table.rows; row0 += rows_per) {
    const int64_t row_end = std::min(table.rows, row0 + rows_per);
    const Bound wb = bind(ctx, table.data, static_cast<uint64_t>(row0) * rb,
                          static_cast<uint64_t>(row_end - row0) * rb, "get_rows table");
    for (uint64_t id0 = 0; id0 < nn; id0 += kMaxGroups) {
      GetRowsPush push{};
      push.cols = static_cast<uint32_t>(table.cols);
      push.row_bytes = u32(rb, "row bytes");
      push.w_byte0 = static_cast<uint32_t>(wb.skip);
      push.row_lo = static_cast<uint32_t>(row0);
      push.row_hi = static_cast<uint32_t>(row_end);
      push.ids_off = static_cast<uint32_t>(ib.skip / 4);
      push.out_off = static_cast<uint32_t>(ob.skip / 4);
      push.n = u32(nn, "row count");
      push.id0 = static_cast<uint32_t>(id0);
      s.dispatch(p, {wb.ref, ib.ref, ob.ref}, &push, sizeof push, groups_x,
                 static_cast<uint32_t>(std::min(kMaxGroups, nn - id0)));
    }
  }
}

namespace detail {

void matmul_with_shader(Stream& s, const DeviceMatrix& w, const BufferRef& x, const BufferRef& y, int64_t n_tok,
                        std::string_view shader, int64_t tile) {
  plain_product(s, w, x, y, n_tok, shader, tile);
}

}  // namespace detail
}  // namespace moe::vk
