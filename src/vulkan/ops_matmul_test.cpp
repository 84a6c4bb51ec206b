// ops_matmul_test.cpp: the Vulkan matrix products (matmul, matmul_expert) and get_rows of every weight
// type against quant's scalar dequantization, on fresh random blocks (seed printed on failure).
//
// Tolerance of a product, derived: the weights the device decodes equal the CPU decoder's exactly (get_rows
// checks this bit for bit) and x is the same floats, so the only error is the f32 summation. mm.comp
// sums an output value as: 32 lanes, each a chain of at most L = 32 * ceil(units / 32) fused
// multiply-adds, then the cross-lane reduction of depth D: D = 5 for the plain tree; D <= 31 for the
// subgroup variants (subgroupAdd over S lanes in the driver's unspecified order, at worst a chain of
// S - 1 additions, then the 32 / S subgroup sums in a chain: (S - 1) + (32 / S - 1) <= 31 for S in
// [8, 32], and those shaders fall back to the tree for other sizes). Each of those k = L + D operations (k + 1 if the
// driver does not fuse, rounding the product too) rounds once with relative error at most u = 2^-24, so
// |device - exact| <= gamma_{k+1} * sum_c |w_c x_c| with gamma_n = n u / (1 - n u) (Higham's bound for
// a recursive/tree summation of depth n). The reference is the exact sum to double precision (and
// sum |w x| the same), far inside that bound.
//
// Every product test runs with both reductions where the device has subgroup arithmetic (lavapipe does:
// subgroups of 8), the plain one forced through detail::force_plain_reduction.
//
// Batch invariance is checked bit for bit (a token's row of an n_tok = 37 product equals its n_tok = 1
// product), and the mutated shader mm_q3_k_mutant (Q3_K scales read one byte off) is shown to be
// rejected by the same comparison that accepts mm_q3_k.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quant/blocks.h"
#include "quant/ref.h"
#include "util/error.h"
#include "util/fp16.h"
#include "vulkan/ops.h"
#include "vulkan/ops_matmul_detail.h"
#include "vulkan/vk_testing.h"

namespace moe::vk {
namespace {

using quant::BlockQ2_K;
using quant::BlockQ3_K;
using quant::BlockQ4_0;
using quant::BlockQ4_1;
using quant::BlockQ4_K;
using quant::BlockQ5_0;
using quant::BlockQ5_1;
using quant::BlockQ5_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;

const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

// Byte offsets of the half-precision scale fields of one block (every other byte is any pattern).
std::vector<size_t> half_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return {offsetof(BlockQ4_0, d)};
    case GgmlType::Q4_1: return {offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};
    case GgmlType::Q5_0: return {offsetof(BlockQ5_0, d)};
    case GgmlType::Q5_1: return {offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};
    case GgmlType::Q8_0: return {offsetof(BlockQ8_0, d)};
    case GgmlType::Q2_K: return {offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)};
    case GgmlType::Q3_K: return {offsetof(BlockQ3_K, d)};
    case GgmlType::Q4_K: return {offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)};
    case GgmlType::Q5_K: return {offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)};
    case GgmlType::Q6_K: return {offsetof(BlockQ6_K, d)};
    default: return {};
  }
}

// `rows` random rows of `cols` values of type t, as GGUF bytes: random floats for the plain types,
// random bytes with finite random-sign scales (|d| in [2^-7, 2^-5]) for the block types.
std::vector<uint8_t> random_matrix(GgmlType t, int64_t rows, int64_t cols, std::mt19937& g) {
  const uint64_t rb = *row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<uint8_t> bytes(rb * static_cast<uint64_t>(rows));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto n = static_cast<size_t>(rows * cols);
  if (t == GgmlType::F32) {
    for (size_t i = 0; i < n; ++i) {
      const float v = normal(g);
      std::memcpy(&bytes[4 * i], &v, 4);
    }
    return bytes;
  }
  if (t == GgmlType::F16 || t == GgmlType::BF16) {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = t == GgmlType::F16 ? fp32_to_fp16(normal(g)) : fp32_to_bf16(normal(g));
      std::memcpy(&bytes[2 * i], &h, 2);
    }
    return bytes;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(g));
  const size_t block = type_traits(t)->type_size;
  std::uniform_real_distribution<float> mag(1.0f / 128, 1.0f / 32);
  std::bernoulli_distribution neg(0.5);
  for (size_t off = 0; off < bytes.size(); off += block) {
    for (size_t f : half_fields(t)) {
      const uint16_t h = fp32_to_fp16(neg(g) ? -mag(g) : mag(g));
      std::memcpy(&bytes[off + f], &h, 2);
    }
  }
  return bytes;
}

std::vector<float> random_floats(size_t n, std::mt19937& g) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(g);
  return v;
}

// The CPU reference: every row decoded by quant's scalar dequantization.
std::vector<float> dequantized(GgmlType t, const std::vector<uint8_t>& w, int64_t rows, int64_t cols) {
  const uint64_t rb = *row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) quant::ref::dequantize(t, w.data() + r * rb, out.data() + r * cols, cols);
  return out;
}

// The reduction the products of the test device use now: a plain run, or the subgroup variants.
bool subgroup_now() {
  const auto ctx = testing::shared_context(nullptr);
  return ctx && detail::subgroup_reduction(*ctx);
}
// D of the derivation above for the reduction in use.
double lane_reduction_depth() { return subgroup_now() ? 31 : 5; }

// Runs `body` once per reduction the device offers (subgroup first, then plain, forced by the hook,
// restored afterwards), under a trace naming it.
struct RestoreReduction {
  ~RestoreReduction() { detail::force_plain_reduction(false); }
};
// The plain path runs for every type on a device without subgroup arithmetic; on one with it (lavapipe
// in CI) it is forced only for a few types with different decoders (a 4-bit legacy block, a K-quant
// super-block with packed scales, a 6-bit one, a float type): the reduction is the same code after any
// decoder, and each of its pipelines costs seconds of lavapipe's compiler on a cold shader cache.
bool plain_path_type(GgmlType t) {
  return t == GgmlType::Q4_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K || t == GgmlType::F16;
}
template <typename F>
void for_each_reduction(Context& ctx, GgmlType t, F&& body) {
  RestoreReduction restore;
  for (bool plain : {false, true}) {
    if (!plain && !ctx.info().subgroup_arithmetic) continue;
    if (plain && ctx.info().subgroup_arithmetic && !plain_path_type(t)) continue;
    detail::force_plain_reduction(plain);
    SCOPED_TRACE(plain ? "plain shared-memory reduction" : "subgroup reduction");
    body();
  }
}

// Checks y (n rows of `rows` outputs; y[i] uses x row xrow[i]) against the reference with the derived
// bound; returns the number of values outside it (and reports the first few).
int64_t count_mismatches(const std::vector<float>& wf, int64_t rows, int64_t cols, const std::vector<float>& x,
                         const std::vector<int64_t>& xrow, const std::vector<float>& y, bool report = true) {
  const int64_t units = (cols + 31) / 32;
  const double k = 32.0 * static_cast<double>((units + 31) / 32) + lane_reduction_depth() + 1;
  const double u = std::ldexp(1.0, -24);
  const double gamma = k * u / (1 - k * u);
  int64_t bad = 0;
  for (size_t i = 0; i < xrow.size(); ++i) {
    const float* xr = x.data() + xrow[i] * cols;
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double p = static_cast<double>(wf[r * cols + c]) * xr[c];
        exact += p;
        mag += std::fabs(p);
      }
      const double got = y[i * rows + r];
      const double err = std::fabs(got - exact);
      if (!(err <= gamma * mag)) {
        if (report && bad < 5)
          ADD_FAILURE() << "output " << i << " row " << r << ": device " << got << ", exact " << exact << ", error "
                        << err << " > bound " << gamma * mag;
        ++bad;
      }
    }
  }
  return bad;
}

Buffer upload(Context& ctx, const void* data, size_t bytes) {
  Buffer b = ctx.buffer((bytes + 16) / 16 * 16, MemoryKind::Device);  // whole words (ops_matmul.cpp's bind)
  if (bytes) ctx.upload(BufferRef(b, 0, bytes), data);
  return b;
}

// The data placed `pad` bytes into its buffer, so the ops see a range that does not start at the
// device's storage alignment.
template <typename T>
Buffer upload_padded(Context& ctx, const std::vector<T>& v, size_t pad) {
  std::vector<uint8_t> bytes(pad + v.size() * sizeof(T));
  std::memcpy(bytes.data() + pad, v.data(), v.size() * sizeof(T));
  return upload(ctx, bytes.data(), bytes.size());
}

std::vector<float> download_floats(Context& ctx, const Buffer& b, uint64_t offset, size_t n) {
  std::vector<float> v(n);
  ctx.download(BufferRef(b, offset, n * 4), v.data());
  return v;
}

// Column counts: several units per lane (over 32 units) and, for the plain types, a last partial unit.
int64_t test_cols(GgmlType t) {
  if (is_float_type(t)) return 1061;                       // 34 units, the last of 5 values
  if (type_traits(t)->block_size == 256) return 256 * 5;   // 40 units
  return 32 * 41;                                          // 41 units
}

// Runs y = W x for n_tok tokens with the weights 2 (F32: 4) bytes into their buffer and x `x_pad` bytes
// into its: 4 makes mm.comp read x by float, 16 by vec4 (when cols is a multiple of 4).
std::vector<float> run_matmul(Context& ctx, GgmlType t, const std::vector<uint8_t>& w, int64_t rows, int64_t cols,
                              const std::vector<float>& x, int64_t n_tok, size_t x_pad = 4,
                              const char* shader = nullptr, int64_t tile = 1) {
  const size_t wpad = t == GgmlType::F32 ? 4 : 2;
  Buffer wbuf = upload_padded(ctx, w, wpad);
  Buffer xbuf = upload_padded(ctx, x, x_pad);
  Buffer ybuf = ctx.buffer(static_cast<uint64_t>(n_tok * rows) * 4 + 16, MemoryKind::Device);
  DeviceMatrix m{t, rows, cols, BufferRef(wbuf, wpad, w.size())};
  Stream s(ctx);
  const BufferRef xr(xbuf, x_pad, x.size() * 4), yr(ybuf, 16, static_cast<uint64_t>(n_tok * rows) * 4);
  if (shader)
    detail::matmul_with_shader(s, m, xr, yr, n_tok, shader, tile);
  else
    matmul(s, m, xr, yr, n_tok);
  s.run();
  return download_floats(ctx, ybuf, 16, static_cast<size_t>(n_tok * rows));
}

std::vector<int64_t> iota_rows(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

class VkMatmul : public ::testing::TestWithParam<GgmlType> {};

std::string type_param_name(const ::testing::TestParamInfo<GgmlType>& info) { return type_name(info.param); }

// Decode (1..3 tokens, the NT=1 shaders) and tiled shapes (4..31 tokens: 8-token tiles; 32..70: 32-token
// tiles; partial tiles), 37 rows (not a multiple of the 4 rows of a workgroup).
TEST_P(VkMatmul, MatchesScalarReferenceForDecodeAndTiledShapes) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  for_each_reduction(ctx, GetParam(), [&] {
    const GgmlType t = GetParam();
    const uint32_t seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 g(seed);
    const int64_t rows = 37, cols = test_cols(t);
    const auto w = random_matrix(t, rows, cols, g);
    const auto wf = dequantized(t, w, rows, cols);
    for (int64_t n_tok : {1, 2, 3, 4, 9, 17, 32, 70}) {
      SCOPED_TRACE("n_tok " + std::to_string(n_tok));
      const auto x = random_floats(static_cast<size_t>(n_tok * cols), g);
      for (size_t x_pad : {4, 16}) {
        SCOPED_TRACE("x at byte " + std::to_string(x_pad));
        const auto y = run_matmul(ctx, t, w, rows, cols, x, n_tok, x_pad);
        EXPECT_EQ(count_mismatches(wf, rows, cols, x, iota_rows(n_tok), y), 0);
      }
    }
  });
}

// Rows of a single block (plain types: 5 values), so most lanes hold nothing, and 1 to 5 rows.
TEST_P(VkMatmul, SingleBlockRows) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  for_each_reduction(ctx, GetParam(), [&] {
    const GgmlType t = GetParam();
    const uint32_t seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 g(seed);
    const int64_t cols = is_float_type(t) ? 5 : type_traits(t)->block_size;
    for (int64_t rows = 1; rows <= 5; ++rows) {
      const auto w = random_matrix(t, rows, cols, g);
      const auto wf = dequantized(t, w, rows, cols);
      for (int64_t n_tok : {1, 4}) {
        const auto x = random_floats(static_cast<size_t>(n_tok * cols), g);
        const auto y = run_matmul(ctx, t, w, rows, cols, x, n_tok, 16);
        EXPECT_EQ(count_mismatches(wf, rows, cols, x, iota_rows(n_tok), y), 0) << rows << " rows, " << n_tok << " tokens";
      }
    }
  });
}

// A token's outputs are the same bits alone (the decode shader) and as row t of a 37-token batch (the
// 32-token tiles) or of its first 9 tokens (the 8-token tiles), and whether x is read by vec4 (the
// batches) or by float (alone). Plain types: 1060 columns, a multiple of 4 with a partial last unit.
TEST_P(VkMatmul, BatchInvariant) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  for_each_reduction(ctx, GetParam(), [&] {
    const GgmlType t = GetParam();
    const uint32_t seed = std::random_device{}();
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 g(seed);
    const int64_t rows = 13, cols = is_float_type(t) ? 1060 : test_cols(t), n_tok = 37, n_small = 9;
    const auto w = random_matrix(t, rows, cols, g);
    const auto x = random_floats(static_cast<size_t>(n_tok * cols), g);
    const auto batch = run_matmul(ctx, t, w, rows, cols, x, n_tok, 16);
    const std::vector<float> x_small(x.begin(), x.begin() + n_small * cols);
    const auto small = run_matmul(ctx, t, w, rows, cols, x_small, n_small, 16);
    const auto row_bytes_f32 = static_cast<size_t>(rows) * 4;
    for (int64_t tok = 0; tok < n_tok; ++tok) {
      const std::vector<float> xt(x.begin() + tok * cols, x.begin() + (tok + 1) * cols);
      const auto alone = run_matmul(ctx, t, w, rows, cols, xt, 1, 4);
      ASSERT_EQ(std::memcmp(alone.data(), batch.data() + tok * rows, row_bytes_f32), 0)
          << "token " << tok << " differs between the batch of 37 and alone";
      if (tok < n_small) {
        ASSERT_EQ(std::memcmp(alone.data(), small.data() + tok * rows, row_bytes_f32), 0)
            << "token " << tok << " differs between the batch of 9 and alone";
      }
    }
  });
}

// The embedding lookup returns exactly quant's dequantization of the chosen rows.
TEST_P(VkMatmul, GetRowsEqualsScalarDequantization) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  const GgmlType t = GetParam();
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 g(seed);
  const int64_t rows = 29, cols = test_cols(t), n = 13;
  const auto w = random_matrix(t, rows, cols, g);
  const auto wf = dequantized(t, w, rows, cols);
  std::vector<int32_t> ids(n);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(rows - 1));
  for (auto& id : ids) id = pick(g);
  ids[3] = ids[7];  // a repeated id
  const size_t wpad = t == GgmlType::F32 ? 4 : 2;
  Buffer wbuf = upload_padded(ctx, w, wpad);
  Buffer ibuf = upload_padded(ctx, ids, 4);
  Buffer obuf = ctx.buffer(static_cast<uint64_t>(n * cols) * 4, MemoryKind::Device);
  Stream s(ctx);
  get_rows(s, DeviceMatrix{t, rows, cols, BufferRef(wbuf, wpad, w.size())}, BufferRef(ibuf, 4, ids.size() * 4),
           BufferRef(obuf), n);
  s.run();
  const auto out = download_floats(ctx, obuf, 0, static_cast<size_t>(n * cols));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(std::memcmp(out.data() + i * cols, wf.data() + ids[i] * cols, static_cast<size_t>(cols) * 4), 0)
        << "row " << i << " (id " << ids[i] << ")";
}

// A hand-built slot plan of 4 experts over n_tok tokens, top-2, expert 2 chosen by no token: slots ordered by
// expert then token (group_by_expert's order). The experts' matrices are stacked as in a GGUF file and
// passed as slices at unaligned offsets. Every slot is checked; the zero-slot expert writes nothing.
void check_expert_plan(Context& ctx, GgmlType t, int64_t n_tok, bool x_by_token, uint32_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + (x_by_token ? ", x by token" : ", x by slot") + ", n_tok " +
               std::to_string(n_tok));
  std::mt19937 g(seed);
  const int64_t n_expert = 4, k = 2, rows = 10, cols = test_cols(t);
  const uint64_t rb = *row_bytes(t, static_cast<uint64_t>(cols));
  const auto w = random_matrix(t, n_expert * rows, cols, g);  // [n_expert][rows][cols]
  const auto wf = dequantized(t, w, n_expert * rows, cols);
  // Each token picks two distinct experts among {0, 1, 3}.
  std::vector<std::vector<int64_t>> by_expert(n_expert);
  const int64_t choices[3][2] = {{0, 1}, {0, 3}, {1, 3}};
  std::uniform_int_distribution<int> pick(0, 2);
  for (int64_t tok = 0; tok < n_tok; ++tok) {
    const auto& c = choices[pick(g)];
    for (int j = 0; j < k; ++j) by_expert[static_cast<size_t>(c[j])].push_back(tok);
  }
  std::vector<uint32_t> offsets{0};
  std::vector<int32_t> slot_tokens;
  for (const auto& toks : by_expert) {
    for (int64_t tok : toks) slot_tokens.push_back(static_cast<int32_t>(tok));
    offsets.push_back(static_cast<uint32_t>(slot_tokens.size()));
  }
  const int64_t n_slots = static_cast<int64_t>(slot_tokens.size());
  const auto x = random_floats(static_cast<size_t>((x_by_token ? n_tok : n_slots) * cols), g);

  const size_t wpad = t == GgmlType::F32 ? 4 : 2;
  Buffer wbuf = upload_padded(ctx, w, wpad);
  const size_t xpad = x_by_token ? 16 : 4;  // x read by vec4 in one mode, by float in the other
  Buffer xbuf = upload_padded(ctx, x, xpad);
  Buffer sbuf = upload_padded(ctx, slot_tokens, 8);
  Buffer obuf = upload_padded(ctx, offsets, 12);
  std::vector<float> sentinel(static_cast<size_t>(n_slots * rows), std::numeric_limits<float>::quiet_NaN());
  Buffer ybuf = upload(ctx, sentinel.data(), sentinel.size() * 4);
  Stream s(ctx);
  for (int32_t e = 0; e < n_expert; ++e) {
    DeviceMatrix m{t, rows, cols, BufferRef(wbuf, wpad + e * rows * rb, rows * rb)};
    matmul_expert(s, m, e, BufferRef(xbuf, xpad, x.size() * 4), x_by_token, BufferRef(sbuf, 8, slot_tokens.size() * 4),
                  BufferRef(obuf, 12, offsets.size() * 4), n_tok, BufferRef(ybuf));
  }
  s.run();
  const auto y = download_floats(ctx, ybuf, 0, static_cast<size_t>(n_slots * rows));
  EXPECT_EQ(offsets[3], offsets[2]) << "expert 2 has no slots in this plan";
  for (int32_t e = 0; e < n_expert; ++e) {
    const auto o0 = static_cast<int64_t>(offsets[e]), o1 = static_cast<int64_t>(offsets[e + 1]);
    if (o1 == o0) continue;
    std::vector<int64_t> xrow;
    for (int64_t sl = o0; sl < o1; ++sl) xrow.push_back(x_by_token ? slot_tokens[static_cast<size_t>(sl)] : sl);
    const std::vector<float> we(wf.begin() + e * rows * cols, wf.begin() + (e + 1) * rows * cols);
    const std::vector<float> ye(y.begin() + o0 * rows, y.begin() + o1 * rows);
    EXPECT_EQ(count_mismatches(we, rows, cols, x, xrow, ye), 0) << "expert " << e;
  }
}

TEST_P(VkMatmul, ExpertSlotsMatchScalarReference) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  for_each_reduction(ctx, GetParam(), [&] {
    const uint32_t seed = std::random_device{}();
    for (bool by_token : {true, false}) {
      check_expert_plan(ctx, GetParam(), 40, by_token, seed);  // the 32-token tiles
      check_expert_plan(ctx, GetParam(), 11, by_token, seed);  // the 8-token tiles
      check_expert_plan(ctx, GetParam(), 3, by_token, seed);   // the decode shaders (up to 3 slots)
    }
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, VkMatmul, ::testing::ValuesIn(kTypes), type_param_name);

// The comparison can fail: Q3_K decoded with its scales read one byte off (a test-only variant of the
// same source) is rejected by the check that accepts the real shader, in both shapes of shader.
TEST(VkMatmulMutant, WrongScaleOffsetIsRejected) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 g(seed);
  RestoreReduction restore;
  detail::force_plain_reduction(true);  // the bound of the plain tree: the named shaders are plain variants
  const GgmlType t = GgmlType::Q3_K;
  const int64_t rows = 8, cols = 512, n_tok = 1;
  const auto w = random_matrix(t, rows, cols, g);
  const auto wf = dequantized(t, w, rows, cols);
  const auto x = random_floats(static_cast<size_t>(cols), g);
  const auto good = run_matmul(ctx, t, w, rows, cols, x, n_tok, 4, "mm_q3_k", 1);
  EXPECT_EQ(count_mismatches(wf, rows, cols, x, iota_rows(n_tok), good), 0);
  const auto bad = run_matmul(ctx, t, w, rows, cols, x, n_tok, 4, "mm_q3_k_mutant", 1);
  EXPECT_GT(count_mismatches(wf, rows, cols, x, iota_rows(n_tok), bad, /*report=*/false), rows / 2)
      << "the mutated shader passed the comparison";
}

// The reduction is a property of the device: the subgroup variants wherever subgroup arithmetic exists
// (so the tests above really ran them there), the plain tree when forced or absent.
TEST(VkMatmulReduction, ChosenByDeviceAndHook) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  RestoreReduction restore;
  EXPECT_EQ(detail::subgroup_reduction(ctx), ctx.info().subgroup_arithmetic);
  detail::force_plain_reduction(true);
  EXPECT_FALSE(detail::subgroup_reduction(ctx));
  detail::force_plain_reduction(false);
  EXPECT_EQ(detail::subgroup_reduction(ctx), ctx.info().subgroup_arithmetic);
  if (!ctx.info().subgroup_arithmetic) std::printf("note: %s has no subgroup arithmetic; only the plain reduction ran\n", ctx.info().name.c_str());
}

// More than 65535 groups of rows (a 262,160-row matrix, 4 rows a group) is split over dispatches.
TEST(VkMatmulGrid, RowsBeyondOneDispatchAreSplit) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 g(seed);
  const GgmlType t = GgmlType::Q4_0;
  const int64_t rows = 65540 * 4, cols = 32;
  const auto w = random_matrix(t, rows, cols, g);
  const auto wf = dequantized(t, w, rows, cols);
  for (int64_t n_tok : {1}) {  // (one token: 65,540 groups already take seconds on lavapipe)
    const auto x = random_floats(static_cast<size_t>(n_tok * cols), g);
    const auto y = run_matmul(ctx, t, w, rows, cols, x, n_tok);
    EXPECT_EQ(count_mismatches(wf, rows, cols, x, iota_rows(n_tok), y), 0) << n_tok << " tokens";
  }
}

// Bad shapes are errors naming the problem, before anything is recorded.
TEST(VkMatmulErrors, BadShapesAreRefused) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  EXPECT_FALSE(matmul_supported(GgmlType::Q8_K));
  EXPECT_FALSE(matmul_supported(GgmlType::IQ4_XS));
  for (GgmlType t : kTypes) EXPECT_TRUE(matmul_supported(t)) << type_name(t);
  Buffer b = ctx.buffer(4096, MemoryKind::Device);
  Stream s(ctx);
  const auto expect_error = [&](auto&& f, const std::string& part) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error([&] { matmul(s, DeviceMatrix{GgmlType::Q8_K, 1, 256, BufferRef(b)}, BufferRef(b), BufferRef(b), 1); },
               "Q8_K");
  expect_error([&] { matmul(s, DeviceMatrix{GgmlType::Q4_K, 1, 100, BufferRef(b)}, BufferRef(b), BufferRef(b), 1); },
               "not whole blocks");
  expect_error([&] { matmul(s, DeviceMatrix{GgmlType::Q4_0, 300, 32, BufferRef(b)}, BufferRef(b), BufferRef(b), 1); },
               "needs 5400 bytes");
  expect_error([&] { matmul(s, DeviceMatrix{GgmlType::F32, 4, 32, BufferRef(b)}, BufferRef(b), BufferRef(b), 100); },
               "matmul input");
  expect_error([&] { get_rows(s, DeviceMatrix{GgmlType::F16, 4, 32, BufferRef(b, 1)}, BufferRef(b), BufferRef(b), 1); },
               "not a multiple of 2");
  const DeviceMatrix small{GgmlType::Q8_0, 2, 64, BufferRef(b, 0, 136)};
  expect_error([&] { matmul_expert(s, small, 0, BufferRef(b, 0, 200), true, BufferRef(b), BufferRef(b), 3, BufferRef(b)); },
               "matmul_expert input: the range holds 200 bytes, under the 768");
  expect_error([&] { matmul_expert(s, small, 5, BufferRef(b), false, BufferRef(b), BufferRef(b, 0, 16), 3, BufferRef(b)); },
               "matmul_expert offsets");
  expect_error([&] { matmul_expert(s, small, -1, BufferRef(b), false, BufferRef(b), BufferRef(b), 3, BufferRef(b)); },
               "negative expert");
  Buffer odd = ctx.buffer(18, MemoryKind::Device);  // one Q4_0 block ending inside the buffer's 5th word
  expect_error([&] { matmul(s, DeviceMatrix{GgmlType::Q4_0, 1, 32, BufferRef(odd)}, BufferRef(b), BufferRef(b), 1); },
               "whole words");
  EXPECT_EQ(s.dispatches_recorded(), 0);
}

}  // namespace
}  // namespace moe::vk
