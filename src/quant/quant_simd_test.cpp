// quant_simd_test.cpp: the SIMD kernels (dot_avx2.cpp, dot_avx512.cpp) against the scalar reference, for
// every weight format and every ISA this CPU has (each forced separately through vec_dot_isa and
// quantize_activations_isa), on fresh random inputs (seed from std::random_device, printed on failure;
// MOE_TEST_SEED=<n> replays one).
//
// Dot products: both paths compute each block's integer sum exactly, so they differ only in how the
// float terms are rounded and summed. The tolerance is derived from that, not tuned (see dot_tolerance).
// Activation quantization: the SIMD blocks must equal the scalar ones byte for byte.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quant/blocks.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "quant/ref.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::quant {
namespace {

constexpr double kEps = 1.0 / (1 << 23);  // float machine epsilon (twice the unit roundoff)

std::vector<Isa> simd_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::AVX2, Isa::AVX512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

uint64_t fresh_seed() {
  if (const char* s = std::getenv("MOE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
}

int64_t block_size(GgmlType t) { return type_traits(t)->block_size; }
size_t bytes_of(GgmlType t, int64_t n) { return static_cast<size_t>(*row_bytes(t, static_cast<uint64_t>(n))); }

// ---- the per-type facts the tests need: where the float scales are, where the quants are ----

struct Layout {
  GgmlType type;
  size_t block_bytes;
  std::vector<size_t> half_scales;                 // offsets of fp16 scale fields in a block
  std::vector<std::pair<size_t, size_t>> levels;   // [offset, length) of the quantized levels
};

#define FIELD(B, f) offsetof(B, f)
#define RANGE(B, f) std::pair<size_t, size_t>{offsetof(B, f), sizeof(B::f)}

std::vector<Layout> block_layouts() {
  return {
      {GgmlType::Q4_0, sizeof(BlockQ4_0), {FIELD(BlockQ4_0, d)}, {RANGE(BlockQ4_0, qs)}},
      {GgmlType::Q4_1, sizeof(BlockQ4_1), {FIELD(BlockQ4_1, d), FIELD(BlockQ4_1, m)}, {RANGE(BlockQ4_1, qs)}},
      {GgmlType::Q5_0, sizeof(BlockQ5_0), {FIELD(BlockQ5_0, d)}, {RANGE(BlockQ5_0, qh), RANGE(BlockQ5_0, qs)}},
      {GgmlType::Q5_1, sizeof(BlockQ5_1), {FIELD(BlockQ5_1, d), FIELD(BlockQ5_1, m)},
       {RANGE(BlockQ5_1, qh), RANGE(BlockQ5_1, qs)}},
      {GgmlType::Q8_0, sizeof(BlockQ8_0), {FIELD(BlockQ8_0, d)}, {RANGE(BlockQ8_0, qs)}},
      {GgmlType::Q2_K, sizeof(BlockQ2_K), {FIELD(BlockQ2_K, d), FIELD(BlockQ2_K, dmin)}, {RANGE(BlockQ2_K, qs)}},
      {GgmlType::Q3_K, sizeof(BlockQ3_K), {FIELD(BlockQ3_K, d)}, {RANGE(BlockQ3_K, hmask), RANGE(BlockQ3_K, qs)}},
      {GgmlType::Q4_K, sizeof(BlockQ4_K), {FIELD(BlockQ4_K, d), FIELD(BlockQ4_K, dmin)}, {RANGE(BlockQ4_K, qs)}},
      {GgmlType::Q5_K, sizeof(BlockQ5_K), {FIELD(BlockQ5_K, d), FIELD(BlockQ5_K, dmin)},
       {RANGE(BlockQ5_K, qh), RANGE(BlockQ5_K, qs)}},
      {GgmlType::Q6_K, sizeof(BlockQ6_K), {FIELD(BlockQ6_K, d)}, {RANGE(BlockQ6_K, ql), RANGE(BlockQ6_K, qh)}},
  };
}

const Layout* layout_of(GgmlType t) {
  static const std::vector<Layout> all = block_layouts();
  for (const Layout& l : all)
    if (l.type == t) return &l;
  return nullptr;
}

const GgmlType kBlockTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
const GgmlType kFloatTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16};

// ---- random rows ----

// Floats of varied scale: normal values whose spread changes by up to 2^6 every 16 elements (so blocks
// and sub-blocks see different ranges), an occasional outlier, and an all-zero stretch now and then.
std::vector<float> random_floats(std::mt19937_64& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> scale_exp(-3, 3), pick(0, 63);
  std::vector<float> x(static_cast<size_t>(n));
  float scale = 1.0f;
  bool zero = false;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 16 == 0) {
      scale = std::ldexp(1.0f, scale_exp(rng));
      zero = pick(rng) == 0;
    }
    float v = zero ? 0.0f : normal(rng) * scale;
    if (pick(rng) == 0) v *= 8.0f;
    x[static_cast<size_t>(i)] = v;
  }
  return x;
}

// A weight row two ways: quantize_row of random floats (what real files hold), or random bytes for every
// level and scale byte with finite random fp16 scales (every bit pattern of the levels, e.g. Q8_0's -128
// or Q6_K's scale -128, which a quantizer never emits).
std::vector<uint8_t> random_weights(std::mt19937_64& rng, GgmlType type, int64_t n, bool raw_bytes) {
  std::vector<uint8_t> w(bytes_of(type, n));
  if (type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16) {
    const std::vector<float> f = random_floats(rng, n);
    for (int64_t i = 0; i < n; ++i) {
      const float v = f[static_cast<size_t>(i)];
      if (type == GgmlType::F32) std::memcpy(&w[4 * static_cast<size_t>(i)], &v, 4);
      const uint16_t h = type == GgmlType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
      if (type != GgmlType::F32) std::memcpy(&w[2 * static_cast<size_t>(i)], &h, 2);
    }
    return w;
  }
  if (!raw_bytes) {
    const std::vector<float> f = random_floats(rng, n);
    quantize_row(type, f.data(), w.data(), n);
    return w;
  }
  std::uniform_int_distribution<int> byte(0, 255), exp(-12, 0);
  std::uniform_real_distribution<float> mant(-2.0f, 2.0f);
  for (uint8_t& b : w) b = static_cast<uint8_t>(byte(rng));
  const Layout* lay = layout_of(type);
  for (size_t blk = 0; blk < w.size() / lay->block_bytes; ++blk)
    for (size_t off : lay->half_scales) {
      const uint16_t h = fp32_to_fp16(std::ldexp(mant(rng), exp(rng)));
      std::memcpy(&w[blk * lay->block_bytes + off], &h, 2);
    }
  return w;
}

// The activation row: floats for float weights, else the SCALAR quantizer's blocks (so these tests do
// not depend on the SIMD quantizers, which have their own test below).
std::vector<uint8_t> activations(GgmlType act, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> out(bytes_of(act, n));
  quantize_activations_isa(Isa::Scalar, act, x.data(), out.data(), n);
  return out;
}

// The values the activation blocks stand for (d * q), in double.
std::vector<double> activation_values(GgmlType act, const std::vector<uint8_t>& x, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<size_t>(i);
    if (act == GgmlType::F32) {
      float f;
      std::memcpy(&f, &x[4 * k], 4);
      v[k] = f;
    } else if (act == GgmlType::Q8_K) {
      const auto* b = reinterpret_cast<const BlockQ8_K*>(x.data()) + i / kQKK;
      v[k] = static_cast<double>(b->d) * b->qs[i % kQKK];
    } else {  // Q8_0 and Q8_1 share the leading d and the qs offset differs
      const size_t bb = act == GgmlType::Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ8_1);
      const size_t qs_off = act == GgmlType::Q8_0 ? offsetof(BlockQ8_0, qs) : offsetof(BlockQ8_1, qs);
      const uint8_t* b = x.data() + static_cast<size_t>(i / kQK) * bb;
      uint16_t d;
      std::memcpy(&d, b, 2);
      v[k] = static_cast<double>(fp16_to_fp32(d)) * static_cast<int8_t>(b[qs_off + static_cast<size_t>(i % kQK)]);
    }
  }
  return v;
}

std::vector<double> decode(GgmlType type, const std::vector<uint8_t>& w, int64_t n) {
  std::vector<float> f(static_cast<size_t>(n));
  dequantize_row(type, w.data(), f.data(), n);
  return {f.begin(), f.end()};
}

// The bound on |SIMD - scalar| for one row.
//
// Each path forms float terms and adds them up. A term is a scale product times an integer partial sum
// (one rounding for d_w * d_x, at most one for the int -> float conversion, one for the multiply or the
// fused multiply-add), and recursive or pairwise summation of T terms errs by at most (T - 1) u times
// the sum of their magnitudes (u = 2^-24 the unit roundoff). The scalar path adds `terms` terms in order
// (one per block, two where a block has a min); the SIMD path spreads the same blocks over lanes, so any
// lane holds at most `terms` of them, and then adds at most 16 lanes and 2 accumulators (6 levels). With
// up to 4 roundings per term, each path is within (terms + 10) u M, and their difference within
// 2 (terms + 10) u M = (terms + 10) eps M.
//
// M must bound the magnitude of every term either path forms. A SIMD lane may hold a level part and an
// offset or min part that do not belong to the same values (Q6_K's "- 32 * bsums" lands in other lanes
// than the levels), so M splits every weight w_i into its level part w_i - z_i and its constant part z_i
// (the value the block decodes to with all levels zeroed: the min, or d * offset) and takes
// M = sum_i (|w_i - z_i| + |z_i|) |x_i|, plus |m_b * s_b| per block for Q4_1/Q5_1 (whose min term uses the
// stored activation sum s). Any integer partial sum either path scales is bounded by this.
//
// lanes_sub: for the sub-block lane kernels (quant/lanes.h), which form one term per sub-block (its
// scale, the min or offset folded in; 4 roundings) in each of 16 lanes and add the lanes at the end:
// counting two terms per sub-block bounds both that path and the scalar one. Q8_0's lane kernels split
// each weight d w into the level part d (w + 128) and the constant part z = -128 d (lanes.h), so there
// z is -128 d although Q8_0 has no offset of its own.
// Q6_K's lane kernel scales the unsigned level q (0..63) by d * sc, the level part w - z plus 32 d sc
// per value, and subtracts 32 d sc times the lane's activation sum, the constant part z = -32 d sc;
// both within M.
double dot_tolerance(GgmlType type, const std::vector<uint8_t>& w, const std::vector<uint8_t>& x, int64_t n,
                     int lanes_sub = 0) {
  const GgmlType act = activation_type(type);
  const std::vector<double> xv = activation_values(act, x, n);
  const std::vector<double> wv = decode(type, w, n);
  std::vector<double> zv(static_cast<size_t>(n), 0.0);
  double terms = static_cast<double>(n);  // float weights: one term per element
  double extra = 0;
  if (const Layout* lay = layout_of(type)) {
    std::vector<uint8_t> zeroed = w;
    for (size_t blk = 0; blk < w.size() / lay->block_bytes; ++blk)
      for (auto [off, len] : lay->levels) std::memset(&zeroed[blk * lay->block_bytes + off], 0, len);
    zv = decode(type, zeroed, n);
    if (lanes_sub != 0 && type == GgmlType::Q8_0)
      for (int64_t i = 0; i < n; ++i) {
        uint16_t d;
        std::memcpy(&d, w.data() + static_cast<size_t>(i / kQK) * sizeof(BlockQ8_0), 2);
        zv[static_cast<size_t>(i)] = -128.0 * fp16_to_fp32(d);
      }
    const bool has_min = lay->half_scales.size() == 2;
    terms = static_cast<double>(n / block_size(type)) * (has_min ? 2 : 1);
    if (lanes_sub != 0) terms = static_cast<double>(n / lanes_sub) * 2;
    if (type == GgmlType::Q4_1 || type == GgmlType::Q5_1) {
      for (int64_t b = 0; b < n / kQK; ++b) {
        BlockQ8_1 xb;
        std::memcpy(&xb, x.data() + static_cast<size_t>(b) * sizeof(BlockQ8_1), sizeof(xb));
        uint16_t m;
        std::memcpy(&m, w.data() + static_cast<size_t>(b) * lay->block_bytes + lay->half_scales[1], 2);
        extra += std::fabs(static_cast<double>(fp16_to_fp32(m)) * fp16_to_fp32(xb.s));
      }
    }
  }
  double magnitude = extra;
  for (size_t i = 0; i < wv.size(); ++i) magnitude += (std::fabs(wv[i] - zv[i]) + std::fabs(zv[i])) * std::fabs(xv[i]);
  return (terms + 10) * kEps * magnitude;
}

// Row lengths: one block, a few, odd counts (the kernels' 2- and 4-block steps and their tails), and a
// model-sized 4096 row.
std::vector<int64_t> row_lengths(GgmlType type) {
  if (block_size(type) == 1) return {1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 129, 4096};
  if (block_size(type) == kQK) return {32, 64, 96, 128, 160, 224, 256, 416, 1024, 4096};
  return {256, 512, 768, 1280, 2048, 4096};
}

void check_dot(std::mt19937_64& rng, GgmlType type, int64_t n, bool raw_bytes) {
  const std::vector<uint8_t> w = random_weights(rng, type, n, raw_bytes);
  const std::vector<uint8_t> x = activations(activation_type(type), random_floats(rng, n));
  const float want = vec_dot_isa(Isa::Scalar, type, n, w.data(), x.data());
  const double tol = dot_tolerance(type, w, x, n);
  ASSERT_TRUE(std::isfinite(want));
  for (Isa isa : simd_isas()) {
    const float got = vec_dot_isa(isa, type, n, w.data(), x.data());
    EXPECT_LE(std::fabs(static_cast<double>(got) - want), tol)
        << type_name(type) << " n=" << n << (raw_bytes ? " (random bytes)" : " (quantized)") << " on "
        << isa_name(isa) << ": got " << got << ", scalar " << want;
  }
}

TEST(QuantSimd, DotProductsMatchScalarForEveryBlockFormat) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kBlockTypes)
    for (int64_t n : row_lengths(type))
      for (int rep = 0; rep < 3; ++rep) {
        check_dot(rng, type, n, /*raw_bytes=*/false);
        check_dot(rng, type, n, /*raw_bytes=*/true);
      }
}

// The many-token kernels promise more than closeness: each token's result is the single-token kernel's
// bit for bit (batch invariance rests on it). Token counts cover every group size and a partial last
// group; rows are placed with a padded stride and results with a stride, as matmul uses them.
TEST(QuantSimd, ManyTokenDotsEqualSingleTokenDotsBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Isa> isas = simd_isas();
  isas.insert(isas.begin(), Isa::Scalar);
  for (GgmlType type : kBlockTypes)
    for (int64_t n : {256, 1024}) {
      if (n % block_size(type) != 0) continue;
      const GgmlType act = activation_type(type);
      const size_t row = bytes_of(act, n), stride = row + 64;
      const int64_t n_tok = 19;  // two full groups of eight and a group of three
      const bool raw = rng() % 2 == 0;
      const std::vector<uint8_t> w = random_weights(rng, type, n, raw);
      std::vector<uint8_t> x(stride * n_tok);
      for (int64_t t = 0; t < n_tok; ++t) {
        const std::vector<uint8_t> xt = activations(act, random_floats(rng, n));
        std::memcpy(x.data() + t * stride, xt.data(), row);
      }
      for (Isa isa : isas)
        for (int64_t count : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{8}, int64_t{9}, n_tok}) {
          constexpr size_t kOutStride = 3;
          std::vector<float> out(kOutStride * n_tok, -1.0f);
          vec_dot_tokens_isa(isa, type, n, w.data(), x.data(), stride, count, out.data(), kOutStride);
          for (int64_t t = 0; t < n_tok; ++t) {
            const float got = out[t * kOutStride];
            if (t >= count) {
              EXPECT_EQ(got, -1.0f) << "token " << t << " beyond the count was written";
              continue;
            }
            const float want = vec_dot_isa(isa, type, n, w.data(), x.data() + t * stride);
            EXPECT_EQ(std::memcmp(&got, &want, sizeof got), 0)
                << type_name(type) << " n=" << n << " on " << isa_name(isa) << ", token " << t << " of " << count
                << ": " << got << " vs single-token " << want;
          }
        }
    }
}

// The many-token kernels against the scalar reference directly (not only through the single-token
// kernel): every token of a group of 11 (two groups of four and a partial one on AVX2, a group of eight
// and a partial one on AVX-512), at every row length, within the derived tolerance of that token's row.
TEST(QuantSimd, ManyTokenDotsMatchScalar) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kBlockTypes)
    for (int64_t n : row_lengths(type)) {
      const GgmlType act = activation_type(type);
      const size_t row = bytes_of(act, n);
      constexpr int64_t kTok = 11;
      const std::vector<uint8_t> w = random_weights(rng, type, n, rng() % 2 == 0);
      std::vector<std::vector<uint8_t>> xs;
      std::vector<uint8_t> x;
      for (int64_t t = 0; t < kTok; ++t) {
        xs.push_back(activations(act, random_floats(rng, n)));
        x.insert(x.end(), xs.back().begin(), xs.back().end());
      }
      for (Isa isa : simd_isas()) {
        std::vector<float> out(kTok);
        vec_dot_tokens_isa(isa, type, n, w.data(), x.data(), row, kTok, out.data(), 1);
        for (int64_t t = 0; t < kTok; ++t) {
          const float want = vec_dot_isa(Isa::Scalar, type, n, w.data(), xs[static_cast<size_t>(t)].data());
          EXPECT_LE(std::fabs(static_cast<double>(out[static_cast<size_t>(t)]) - want),
                    dot_tolerance(type, w, xs[static_cast<size_t>(t)], n))
              << type_name(type) << " n=" << n << " on " << isa_name(isa) << ", token " << t;
        }
      }
    }
}

// ---- the sub-block lane path (quant/lanes.h) ----

const GgmlType kLaneTypes[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0};

// Token rows of n values in the lane layout for `type` (its sub-block size, its activation levels), one
// per float row, at `stride` bytes apart.
std::vector<uint8_t> lane_rows(GgmlType type, const std::vector<std::vector<float>>& x, int64_t n, size_t stride) {
  std::vector<uint8_t> out(stride * x.size(), 0xAB);
  for (size_t t = 0; t < x.size(); ++t)
    quantize_activations_lanes(lanes_sub_block(type), activation_type(type), x[t].data(), out.data() + t * stride, n);
  return out;
}

// n_tok tokens of fresh random floats in the lane layout, `stride` bytes apart.
std::vector<uint8_t> random_lane_rows(std::mt19937_64& rng, GgmlType type, int64_t n, int64_t n_tok, size_t stride) {
  std::vector<std::vector<float>> f;
  for (int64_t t = 0; t < n_tok; ++t) f.push_back(random_floats(rng, n));
  return lane_rows(type, f, n, stride);
}

TEST(QuantLanes, ActivationLayoutIsThePermutedQ8KBlocks) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int sub : {16, 32})
    for (int64_t n : {256, 768, 1024}) {
      const std::vector<float> f = random_floats(rng, n);
      std::vector<uint8_t> q8(bytes_of(GgmlType::Q8_K, n)), lanes(lanes_row_bytes(sub, n));
      quantize_activations(GgmlType::Q8_K, f.data(), q8.data(), n);
      quantize_activations_lanes(sub, f.data(), lanes.data(), n);
      const auto* blocks = reinterpret_cast<const BlockQ8_K*>(q8.data());
      const int per_tile = sub == 32 ? 2 : 1;
      const size_t tile_bytes = sub == 32 ? sizeof(detail::LaneTile<32>) : sizeof(detail::LaneTile<16>);
      const int64_t nb = n / kQKK;
      for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < kQKK / sub; ++j) {
          const int lane = static_cast<int>(b % per_tile) * (kQKK / sub) + j;
          const uint8_t* tile = lanes.data() + static_cast<size_t>(b / per_tile) * tile_bytes;
          const auto* tq = reinterpret_cast<const int8_t*>(tile);
          const auto* dy = reinterpret_cast<const float*>(tile + sub * 16);
          const auto* bs = dy + 16;
          int sum = 0;
          for (int v = 0; v < sub; ++v) {
            const int8_t want = blocks[b].qs[j * sub + v];
            sum += want;
            ASSERT_EQ(tq[(v / 4) * 64 + 4 * lane + v % 4], want) << "sub " << sub << " block " << b << " sub-block " << j << " value " << v;
          }
          ASSERT_EQ(dy[lane], blocks[b].d);
          ASSERT_EQ(bs[lane], static_cast<float>(sum));
        }
      if (sub == 32 && nb % 2 == 1) {  // the half tile's lanes 8..15 are zero
        const uint8_t* tile = lanes.data() + static_cast<size_t>(nb / 2) * tile_bytes;
        for (int r = 0; r < 8; ++r)
          for (int k = 32; k < 64; ++k) ASSERT_EQ(tile[r * 64 + k], 0) << "round " << r << " byte " << k;
      }
    }
}

// Q8_0 weights' lanes: tile p, lane s is Q8_0 block 16p + s of quantize_activations(Q8_0) (its levels
// in rounds of 4, its scale, its level sum); a last half tile (n / 256 odd) has zero lanes 8..15.
TEST(QuantLanes, Q8_0ActivationLayoutIsThePermutedQ8_0Blocks) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {256, 512, 768, 1280}) {
    const std::vector<float> f = random_floats(rng, n);
    std::vector<uint8_t> q8(bytes_of(GgmlType::Q8_0, n)), lanes(lanes_row_bytes(32, n), 0xAB);
    quantize_activations(GgmlType::Q8_0, f.data(), q8.data(), n);
    quantize_activations_lanes(32, GgmlType::Q8_0, f.data(), lanes.data(), n);
    const auto* blocks = reinterpret_cast<const BlockQ8_0*>(q8.data());
    const int64_t tiles = (n / kQKK + 1) / 2;
    for (int64_t p = 0; p < tiles; ++p) {
      const auto* tile = reinterpret_cast<const detail::LaneTile<32>*>(lanes.data()) + p;
      for (int s = 0; s < 16; ++s) {
        const int64_t b = 16 * p + s;
        int sum = 0;
        for (int v = 0; v < kQK; ++v) {
          const int8_t want = b < n / kQK ? blocks[b].qs[v] : 0;
          sum += want;
          ASSERT_EQ(tile->q[v / 4][4 * s + v % 4], want) << "n " << n << " block " << b << " value " << v;
        }
        ASSERT_EQ(tile->dy[s], b < n / kQK ? fp16_to_fp32(blocks[b].d) : 0.0f) << "n " << n << " block " << b;
        ASSERT_EQ(tile->bs[s], static_cast<float>(sum)) << "n " << n << " block " << b;
      }
    }
  }
  std::vector<uint8_t> out(lanes_row_bytes(16, 256));
  const std::vector<float> f(256, 1.0f);
  EXPECT_THROW(quantize_activations_lanes(16, GgmlType::Q8_0, f.data(), out.data(), 256), Error);  // no such layout
}

TEST(QuantLanes, DotProductsMatchScalarReference) {
  if (!use_lanes(GgmlType::Q4_K)) GTEST_SKIP() << "the lane kernels need AVX-512 (this CPU or MOE_ISA has less)";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kLaneTypes)
    for (int64_t n : {256, 512, 768, 1280, 4096})
      for (int rep = 0; rep < 3; ++rep)
        for (bool raw : {false, true}) {
          const std::vector<uint8_t> w = random_weights(rng, type, n, raw);
          const std::vector<float> f = random_floats(rng, n);
          const std::vector<uint8_t> q8 = activations(activation_type(type), f);
          const size_t stride = lanes_row_bytes(lanes_sub_block(type), n);
          const std::vector<uint8_t> xl = lane_rows(type, {f}, n, stride);
          const float want = vec_dot_isa(Isa::Scalar, type, n, w.data(), q8.data());
          float got = 0;
          vec_dot_lanes(type, n, w.data(), xl.data(), stride, 1, &got, 1);
          const double tol = dot_tolerance(type, w, q8, n, lanes_sub_block(type));
          ASSERT_TRUE(std::isfinite(want));
          EXPECT_LE(std::fabs(static_cast<double>(got) - want), tol)
              << type_name(type) << " n=" << n << (raw ? " (random bytes)" : " (quantized)") << ": got " << got
              << ", scalar " << want;
        }
}

// Batch invariance rests on this: a token's result is the same bits whatever group it is computed in.
TEST(QuantLanes, GroupsEqualSingleTokensBitForBit) {
  if (!use_lanes(GgmlType::Q4_K)) GTEST_SKIP() << "the lane kernels need AVX-512";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kLaneTypes)
    for (int64_t n : {768, 1024}) {
      const int64_t n_tok = 19;
      const size_t stride = lanes_row_bytes(lanes_sub_block(type), n) + 64;
      const std::vector<uint8_t> xl = random_lane_rows(rng, type, n, n_tok, stride);
      const std::vector<uint8_t> w = random_weights(rng, type, n, rng() % 2 == 0);
      for (int64_t count : {int64_t{2}, int64_t{7}, int64_t{8}, int64_t{9}, n_tok}) {
        constexpr size_t kOutStride = 3;
        std::vector<float> out(kOutStride * n_tok, -1.0f);
        vec_dot_lanes(type, n, w.data(), xl.data(), stride, count, out.data(), kOutStride);
        for (int64_t t = 0; t < n_tok; ++t) {
          const float got = out[t * kOutStride];
          if (t >= count) {
            EXPECT_EQ(got, -1.0f) << "token " << t << " beyond the count was written";
            continue;
          }
          float alone = 0;
          vec_dot_lanes(type, n, w.data(), xl.data() + t * stride, stride, 1, &alone, 1);
          EXPECT_EQ(std::memcmp(&got, &alone, sizeof got), 0)
              << type_name(type) << " n=" << n << " token " << t << " of " << count << ": " << got << " vs alone " << alone;
        }
      }
    }
}

// The matmul block (lanes_rows: rows unpacked once, 2 x 4 micro-kernel, edges of 1 row and 1..3 tokens)
// gives every (row, token) the single-token kernel's bits.
TEST(QuantLanes, RowBlocksEqualSingleTokensBitForBit) {
  if (!use_lanes(GgmlType::Q4_K)) GTEST_SKIP() << "the lane kernels need AVX-512";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kLaneTypes)
    for (int64_t n : {768, 1024}) {
      const int64_t n_tok = 11, n_rows = 7;  // the micro-kernel blocks: 4 + 3 rows, 3 + 3 + 3 + 2 tokens
      const size_t stride = lanes_row_bytes(lanes_sub_block(type), n);
      const std::vector<uint8_t> xl = random_lane_rows(rng, type, n, n_tok, stride);
      const size_t wrb = bytes_of(type, n);
      std::vector<uint8_t> w;
      for (int64_t r = 0; r < n_rows; ++r) {
        const std::vector<uint8_t> row = random_weights(rng, type, n, rng() % 2 == 0);
        w.insert(w.end(), row.begin(), row.end());
      }
      for (int64_t rows : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, n_rows})
        // 5 and 6 straddle where the row blocks switch from the group kernel to the micro-kernel.
        for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{6},
                              int64_t{7}, int64_t{8}, int64_t{9}, int64_t{10}, n_tok}) {
          const size_t y_stride = static_cast<size_t>(n_rows) + 2;
          std::vector<float> y(y_stride * static_cast<size_t>(n_tok), -1.0f);
          lanes_rows(type, n, w.data(), wrb, rows, xl.data(), stride, count, y.data(), y_stride);
          for (int64_t t = 0; t < n_tok; ++t)
            for (int64_t r = 0; r < static_cast<int64_t>(y_stride); ++r) {
              const float got = y[static_cast<size_t>(t) * y_stride + static_cast<size_t>(r)];
              if (t >= count || r >= rows) {
                EXPECT_EQ(got, -1.0f) << "wrote outside the block: token " << t << " row " << r;
                continue;
              }
              float alone = 0;
              vec_dot_lanes(type, n, w.data() + static_cast<size_t>(r) * wrb, xl.data() + t * stride, stride, 1, &alone, 1);
              EXPECT_EQ(std::memcmp(&got, &alone, sizeof got), 0) << type_name(type) << " n=" << n << " rows " << rows
                  << " tokens " << count << ": row " << r << " token " << t << ": " << got << " vs alone " << alone;
            }
        }
    }
}

TEST(QuantSimd, DotProductsMatchScalarForFloatWeights) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kFloatTypes)
    for (int64_t n : row_lengths(type))
      for (int rep = 0; rep < 3; ++rep) check_dot(rng, type, n, false);
}

// The tolerance is tight enough to see a single wrong value: move one level of one block and the SIMD
// result of the corrupted row must leave the band around the scalar result of the original row.
TEST(QuantSimd, ToleranceSeesOneWrongLevel) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const int64_t n = 4096;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> wf(static_cast<size_t>(n));
    for (float& v : wf) v = normal(rng);
    std::vector<uint8_t> w(bytes_of(type, n));
    quantize_row(type, wf.data(), w.data(), n);
    std::vector<float> xf(static_cast<size_t>(n), 1.0f);  // every activation level +-127, value 1
    const std::vector<uint8_t> x = activations(activation_type(type), xf);
    const float want = vec_dot_isa(Isa::Scalar, type, n, w.data(), x.data());
    const double tol = dot_tolerance(type, w, x, n);
    const Layout* lay = layout_of(type);
    w[lay->levels[0].first] ^= 0x08;  // one level of block 0 moves by 8 steps of its grid
    for (Isa isa : simd_isas()) {
      const float got = vec_dot_isa(isa, type, n, w.data(), x.data());
      EXPECT_GT(std::fabs(static_cast<double>(got) - want), tol) << type_name(type) << " on " << isa_name(isa);
    }
  }
}

// ---- activation quantization: byte-identical blocks ----

void expect_same_activations(GgmlType act, const std::vector<float>& x, const std::string& what) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> want(bytes_of(act, n)), got(bytes_of(act, n));
  quantize_activations_isa(Isa::Scalar, act, x.data(), want.data(), n);
  for (Isa isa : simd_isas()) {
    std::fill(got.begin(), got.end(), 0xAB);
    quantize_activations_isa(isa, act, x.data(), got.data(), n);
    size_t first_diff = 0;
    while (first_diff < got.size() && got[first_diff] == want[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, got.size()) << type_name(act) << " " << what << " n=" << n << " on " << isa_name(isa)
                                      << ": first differing byte " << first_diff << " of " << got.size();
  }
}

TEST(QuantSimd, ActivationQuantizationIsBitIdentical) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K})
    for (int64_t blocks : {1, 2, 3, 16})
      for (int rep = 0; rep < 5; ++rep)
        expect_same_activations(act, random_floats(rng, blocks * block_size(act)), "random");
}

// Values that land exactly on .5 steps (ties: away from zero for Q8_0/Q8_1, to even for Q8_K), values
// just below .5 (where "add 0.5 and truncate" goes wrong), the largest magnitude appearing with both
// signs (Q8_K takes the sign of the first), and non-finite inputs (NaN, infinities).
TEST(QuantSimd, ActivationQuantizationEdgeCasesAreBitIdentical) {
  if (simd_isas().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
    const int64_t bs = block_size(act);
    // amax 127 makes d = 1 (and Q8_K's iscale = +-1), so x itself is the value rounded.
    std::vector<float> ties(static_cast<size_t>(bs));
    for (int64_t i = 0; i < bs; ++i) ties[static_cast<size_t>(i)] = static_cast<float>(i % 64 - 32) + 0.5f;
    ties[3] = 127.0f;
    expect_same_activations(act, ties, "ties, positive max");
    ties[3] = -127.0f;
    expect_same_activations(act, ties, "ties, negative max");
    ties[7] = 127.0f;  // -127 first, then +127
    expect_same_activations(act, ties, "max magnitude with both signs");

    std::vector<float> below(static_cast<size_t>(bs), std::nextafter(0.5f, 0.0f));
    below[0] = 127.0f;
    below[1] = -std::nextafter(0.5f, 0.0f);
    below[2] = std::nextafter(1.5f, 0.0f);
    expect_same_activations(act, below, "just below .5");

    expect_same_activations(act, std::vector<float>(static_cast<size_t>(2 * bs), 0.0f), "zeros");
    std::vector<float> neg_zero(static_cast<size_t>(bs), -0.0f);
    expect_same_activations(act, neg_zero, "negative zeros");

    std::vector<float> special(static_cast<size_t>(2 * bs), 1.0f);
    special[5] = std::numeric_limits<float>::quiet_NaN();
    special[static_cast<size_t>(bs) + 1] = std::numeric_limits<float>::infinity();
    special[static_cast<size_t>(bs) + 9] = -std::numeric_limits<float>::infinity();
    expect_same_activations(act, special, "NaN and infinities");
    std::vector<float> all_nan(static_cast<size_t>(bs), std::numeric_limits<float>::quiet_NaN());
    expect_same_activations(act, all_nan, "all NaN");

    std::vector<float> tiny(static_cast<size_t>(bs), std::numeric_limits<float>::denorm_min());
    tiny[1] = -3 * std::numeric_limits<float>::denorm_min();
    expect_same_activations(act, tiny, "subnormals");
  }
}

// ---- repacked weights (quant/lanes.h: repack_row) ----

const GgmlType kRepackTypes[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0};

std::vector<uint8_t> repacked(GgmlType type, const std::vector<uint8_t>& w, int64_t n) {
  std::vector<uint8_t> out(repacked_row_bytes(type, n), 0xAB);
  repack_row(type, w.data(), out.data(), n);
  return out;
}

// unrepack_row is the definition the kernels are checked against, so it must give the GGUF row back.
TEST(QuantRepack, UnrepackGivesTheGgufRowBack) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kRepackTypes)
    for (int64_t n : {256, 512, 768, 4096})
      for (bool raw : {false, true}) {
        const std::vector<uint8_t> w = random_weights(rng, type, n, raw);
        const std::vector<uint8_t> r = repacked(type, w, n);
        std::vector<uint8_t> back(w.size(), 0xCD);
        unrepack_row(type, r.data(), back.data(), n);
        EXPECT_EQ(back, w) << type_name(type) << " n=" << n;
      }
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q4_K, 4096), bytes_of(GgmlType::Q4_K, 4096));
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q4_K, 768), bytes_of(GgmlType::Q4_K, 768));  // a half tile
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q2_K, 768), bytes_of(GgmlType::Q2_K, 768));
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q8_0, 4096), bytes_of(GgmlType::Q8_0, 4096));
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q8_0, 768), bytes_of(GgmlType::Q8_0, 768));  // a half tile
  EXPECT_THROW(repacked_row_bytes(GgmlType::Q8_0, 96), Error);  // Q8_0 rows of other lengths stay as they are
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q6_K, 768), bytes_of(GgmlType::Q6_K, 768));
  EXPECT_THROW(repacked_row_bytes(GgmlType::Q5_K, 256), Error);
  EXPECT_EQ(repacked_row_bytes(GgmlType::Q3_K, 768), bytes_of(GgmlType::Q3_K, 768));
  EXPECT_THROW(repacked_row_bytes(GgmlType::Q4_K, 100), Error);
}

// The repacked kernels (one token, groups, the row-block micro-kernel) give the unrepacked lane kernels'
// bits for every (row, token), and so stay within the lane kernels' tolerance of the scalar reference.
TEST(QuantRepack, KernelsEqualTheUnrepackedLaneKernelsBitForBit) {
  if (!use_repacked(GgmlType::Q4_K)) GTEST_SKIP() << "the repacked kernels need AVX-512 (this CPU or MOE_ISA has less)";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kRepackTypes)
    for (int64_t n : {256, 768, 1024, 4096}) {
      const int64_t n_tok = 19, n_rows = 5;
      const int sub = lanes_sub_block(type);
      const size_t stride = lanes_row_bytes(sub, n);
      std::vector<std::vector<float>> f;
      for (int64_t t = 0; t < n_tok; ++t) f.push_back(random_floats(rng, n));
      const std::vector<uint8_t> xl = lane_rows(type, f, n, stride);
      const size_t wrb = bytes_of(type, n), rrb = repacked_row_bytes(type, n);
      std::vector<uint8_t> w, wr;
      std::vector<std::vector<uint8_t>> rows;
      for (int64_t r = 0; r < n_rows; ++r) {
        rows.push_back(random_weights(rng, type, n, rng() % 2 == 0));
        const std::vector<uint8_t> rp = repacked(type, rows.back(), n);
        w.insert(w.end(), rows.back().begin(), rows.back().end());
        wr.insert(wr.end(), rp.begin(), rp.end());
      }
      for (int64_t count : {int64_t{1}, int64_t{3}, int64_t{8}, int64_t{11}, n_tok}) {
        const size_t ys = static_cast<size_t>(n_rows);
        std::vector<float> want(ys * n_tok, -1.0f), got(ys * n_tok, -1.0f), grouped(n_tok, -1.0f);
        lanes_rows(type, n, w.data(), wrb, n_rows, xl.data(), stride, count, want.data(), ys);
        lanes_rows_repacked(type, n, wr.data(), rrb, n_rows, xl.data(), stride, count, got.data(), ys);
        EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
            << type_name(type) << " n=" << n << " tokens " << count;
        vec_dot_lanes_repacked(type, n, wr.data() + rrb, xl.data(), stride, count, grouped.data(), 1);
        for (int64_t t = 0; t < count; ++t) {
          EXPECT_EQ(std::memcmp(&grouped[t], &want[t * ys + 1], sizeof(float)), 0) << type_name(type) << " token " << t;
          const std::vector<uint8_t> q8 = activations(activation_type(type), f[static_cast<size_t>(t)]);
          const float ref = vec_dot_isa(Isa::Scalar, type, n, rows[1].data(), q8.data());
          EXPECT_LE(std::fabs(static_cast<double>(grouped[t]) - ref), dot_tolerance(type, rows[1], q8, n, sub))
              << type_name(type) << " n=" << n << " token " << t;
        }
        for (int64_t t = count; t < n_tok; ++t) EXPECT_EQ(grouped[t], -1.0f) << "token " << t << " beyond the count";
      }
    }
}

// The comparison above can fail: one level of the repacked row moved and the repacked kernel's result
// leaves the tolerance band around the scalar result of the intact row.
TEST(QuantRepack, ToleranceSeesOneWrongRepackedLevel) {
  if (!use_repacked(GgmlType::Q4_K)) GTEST_SKIP() << "the repacked kernels need AVX-512";
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("MOE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (GgmlType type : kRepackTypes) {
    const int64_t n = 4096;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> wf(static_cast<size_t>(n));
    for (float& v : wf) v = normal(rng);
    std::vector<uint8_t> w(bytes_of(type, n));
    quantize_row(type, wf.data(), w.data(), n);
    const std::vector<float> xf(static_cast<size_t>(n), 1.0f);  // every activation level 127
    const std::vector<uint8_t> q8 = activations(activation_type(type), xf);
    const int sub = lanes_sub_block(type);
    const size_t stride = lanes_row_bytes(sub, n);
    const std::vector<uint8_t> xl = lane_rows(type, {xf}, n, stride);
    const float want = vec_dot_isa(Isa::Scalar, type, n, w.data(), q8.data());
    const double tol = dot_tolerance(type, w, q8, n, sub);
    std::vector<uint8_t> wr = repacked(type, w, n);
    float intact = 0;
    vec_dot_lanes_repacked(type, n, wr.data(), xl.data(), stride, 1, &intact, 1);
    EXPECT_LE(std::fabs(static_cast<double>(intact) - want), tol) << type_name(type);
    // Q4_K: the first level of lane 0's first round moves by 8 steps of its grid. Q2_K (whose derived
    // band is wider against its coarser grid): lane 0's four first-round levels all go to 3 or all to 0,
    // whichever moves their sum by at least 6 steps.
    // Q8_0: lane 0's first level goes to the stored 0 or 255, whichever is farther (>= 128 steps): its
    // band is wider (the 128 offset's terms, 256 |d| per value against the level's |w|, are in it), by
    // 266 eps 4096 (256 |d| + |w|) |x| against 128 |d| |x| for the move, a factor ~3.5 apart.
    // Q6_K (the band counts 2 terms per 16 values, ~1.0
    // here against a step of d * sc ~ 0.07): the same four levels all go to 63 or all to 0 (low nibbles
    // in register 0's bytes 0..3, top pairs in bits 0-1 of register 2's), moving their sum by >= 126 steps.
    // Q3_K: the third bits of round 0 of the lane with the largest |scale| (round r's bits are the
    // 64-bit mask at byte 64 + 8r, bit 4s + i for value 4r + i of lane s) all set, or all cleared when
    // more than two are set: at least 8 steps of that lane's grid.
    if (type == GgmlType::Q4_K) {
      wr[0] ^= 0x08;
    } else if (type == GgmlType::Q8_0) {
      wr[0] = wr[0] < 128 ? 255 : 0;
    } else if (type == GgmlType::Q6_K) {
      int sum = 0;
      for (int i = 0; i < 4; ++i) sum += (wr[static_cast<size_t>(i)] & 0x0F) | ((wr[128 + static_cast<size_t>(i)] & 3) << 4);
      const int to = sum < 126 ? 63 : 0;
      for (int i = 0; i < 4; ++i) {
        uint8_t& lo = wr[static_cast<size_t>(i)];
        uint8_t& hi = wr[128 + static_cast<size_t>(i)];
        lo = static_cast<uint8_t>((lo & 0xF0) | (to & 0x0F));
        hi = static_cast<uint8_t>((hi & ~3) | (to >> 4));
      }
    } else if (type == GgmlType::Q3_K) {
      int scales[16];
      ref::unpack_q3_K_scales(w.data() + offsetof(BlockQ3_K, scales), scales);
      int lane = 0;
      for (int s = 1; s < 16; ++s)
        if (std::abs(scales[s]) > std::abs(scales[lane])) lane = s;
      uint8_t& bits = wr[static_cast<size_t>(64 + lane / 2)];
      const int shift = 4 * (lane % 2);
      int set = 0;
      for (int i = 0; i < 4; ++i) set += (bits >> (shift + i)) & 1;
      bits = static_cast<uint8_t>(set <= 2 ? bits | 0x0F << shift : bits & ~(0x0F << shift));
    } else {
      int sum = 0;
      for (int i = 0; i < 4; ++i) sum += wr[static_cast<size_t>(i)] & 3;
      for (int i = 0; i < 4; ++i) wr[static_cast<size_t>(i)] = static_cast<uint8_t>((wr[static_cast<size_t>(i)] & ~3) | (sum < 6 ? 3 : 0));
    }
    float got = 0;
    vec_dot_lanes_repacked(type, n, wr.data(), xl.data(), stride, 1, &got, 1);
    EXPECT_GT(std::fabs(static_cast<double>(got) - want), tol) << type_name(type);
  }
}

}  // namespace
}  // namespace moe::quant
