// ops_attention_test.cpp: kv_store and attention on the Vulkan device against the CPU definitions
// (kernels::store_kv_row, kernels::attend_head over kv::Cache's own PagedRows): a real kv::Cache with
// shuffled (non-contiguous) block ids, three sequences of which two share the blocks of a prefix,
// contexts crossing block and 64-position chunk boundaries, each KV element type, grouped-query heads
// (4 query heads on 2 or 1 KV heads), batch invariance, and the mutated attention shader (no rescale of
// the accumulator) rejected by the same comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kv/cache.h"
#include "util/error.h"
#include "util/fp16.h"
#include "vulkan/ops.h"
#include "vulkan/ops_attention_variants.h"
#include "vulkan/vk_testing.h"
#include "vulkan/vkops_test_util.h"

namespace moe::vk {
namespace {

using testing::bits;
using testing::device_from;
using testing::device_zeros;
using testing::gamma;
using testing::kU;
using testing::random_floats;
using testing::read_back;

// A kv::Cache holding three sequences and one step's tokens, mirrored on the device.
struct Scene {
  static constexpr int64_t kLayers = 2, kLayer = 1;  // the layer run: its rows sit after layer 0's
  GgmlType type;
  int64_t n_head_kv, head_dim, row_values;
  std::unique_ptr<kv::Cache> cache;
  std::vector<int32_t> seqs;                  // sequence ids
  std::vector<int32_t> tables, table_start;   // the step's tables, one after another; per token
  std::vector<int32_t> positions, token_seq;  // per token

  Scene(GgmlType t, int64_t n_kv, int64_t hd, int64_t n_blocks)
      : type(t), n_head_kv(n_kv), head_dim(hd), row_values(n_kv * hd) {
    kv::Geometry g;
    g.type = *kv::kv_type_of_element(t);
    g.n_layer = kLayers;
    g.n_head_kv = n_kv;
    g.head_dim = hd;
    cache = std::make_unique<kv::Cache>(g, n_blocks);
  }
  const std::vector<int32_t>& table(int32_t seq) const { return cache->block_table(seq); }
  kv::PagedRows rows(int32_t seq, kv::Cache::Part part) const { return cache->rows(table(seq).data(), kLayer, part); }

  PagedKv device_kv(const Buffer& pool) const {
    PagedKv kv;
    kv.data = BufferRef(pool, 0, cache->bytes());
    kv.element = type;
    kv.block_bytes = cache->block_bytes();
    kv.row_bytes = cache->row_bytes();
    kv.k_offset = cache->k_offset(kLayer);
    kv.v_offset = cache->v_offset(kLayer);
    kv.block_tokens = kv::kBlockTokens;
    return kv;
  }
  // The step: `tokens` of (sequence index, position); tables laid out in sequence order.
  void set_step(const std::vector<std::pair<int, int32_t>>& tokens) {
    tables.clear();
    std::vector<int32_t> start;
    for (int32_t seq : seqs) {
      start.push_back(static_cast<int32_t>(tables.size()));
      tables.insert(tables.end(), table(seq).begin(), table(seq).end());
    }
    table_start.clear();
    positions.clear();
    token_seq.clear();
    for (auto [s, pos] : tokens) {
      table_start.push_back(start[s]);
      positions.push_back(pos);
      token_seq.push_back(seqs[s]);
    }
  }
};

// Sequences 0 (150 tokens), 1 (100 tokens, sharing sequence 0's first 3 blocks: positions 0..47) and
// 2 (9 tokens), their blocks taken from the pool in a shuffled order; every row of layer kLayer below
// each length holds random values in the element's encoding (the step's own rows are rewritten by
// kv_store). The step: a decode token of sequence 0, a chunk of 10 prompt tokens of sequence 1 and all
// 9 of sequence 2's.
Scene make_scene(std::mt19937& rng, GgmlType type, int64_t n_head_kv, int64_t head_dim) {
  Scene sc(type, n_head_kv, head_dim, 24);
  std::memset(sc.cache->data(), 0, sc.cache->bytes());
  std::vector<int32_t> blocks;
  for (int64_t i = 0; i < sc.cache->n_blocks(); ++i) blocks.push_back(sc.cache->allocate_block());
  std::shuffle(blocks.begin(), blocks.end(), rng);
  sc.seqs = {10, 11, 12};
  size_t next = 0;
  for (int i = 0; i < 10; ++i) sc.cache->append_block(10, blocks[next++]);
  for (int i = 0; i < 3; ++i) sc.cache->append_block(11, sc.table(10)[i]);
  for (int i = 0; i < 4; ++i) sc.cache->append_block(11, blocks[next++]);
  sc.cache->append_block(12, blocks[next++]);
  const int32_t lengths[] = {150, 100, 9};
  std::vector<float> row(static_cast<size_t>(sc.row_values));
  std::uniform_real_distribution<float> d(-1.5f, 1.5f);
  for (int s = 0; s < 3; ++s)
    for (int32_t p = 0; p < lengths[s]; ++p)
      for (auto part : {kv::Cache::Part::K, kv::Cache::Part::V}) {
        for (float& x : row) x = d(rng);
        kernels::store_kv_row(type, row.data(), sc.row_values,
                              sc.cache->row_for_write(sc.table(sc.seqs[s]).data(), Scene::kLayer, part, p));
      }
  std::vector<std::pair<int, int32_t>> tokens = {{0, 149}};
  for (int32_t p = 90; p < 100; ++p) tokens.push_back({1, p});
  for (int32_t p = 0; p < 9; ++p) tokens.push_back({2, p});
  sc.set_step(tokens);
  return sc;
}

struct AttnCheck {
  int bad = 0;
  double worst = 0;  // largest |error| / tolerance
};

// Compares out [n_tok][n_head][head_dim] with kernels::attend_head (Exact: double accumulation) over
// the pool `pool` (the device's rows, downloaded), value by value within the derived bound:
//  - a score s_j = scale * (q . k_j) in f32 is off by scale * gamma(hd) * S_j + u |s_j|, S_j = sum |q_i k_ji|;
//  - each weight exp(s_j - m) is then off relatively by twice that (s_j and the max m), plus the exp's
//    3 + 2R ulp (R the score range) for it and for every rescale, one per chunk of 64: eps;
//  - a weighted mean of V moves by at most 2 eps max|v| under such relative weight errors, and its f32
//    sums (n_ctx terms, chunk rescales, a 64-wide tree for l, the final division) by
//    gamma(n_ctx + 2 chunks + 16) max|v|; the CPU's double result is rounded once: u |ref|.
AttnCheck check_attention(const Scene& sc, const std::vector<uint8_t>& pool, const std::vector<float>& q,
                          const std::vector<float>& out, int64_t n_head, float scale) {
  AttnCheck r;
  const int64_t hd = sc.head_dim, group = n_head / sc.n_head_kv;
  std::vector<double> scratch(kernels::attention_scratch_bytes(hd) / sizeof(double) + 8);
  std::vector<float> ref(static_cast<size_t>(hd)), kj(static_cast<size_t>(hd));
  for (size_t t = 0; t < sc.positions.size(); ++t) {
    kv::PagedRows k = sc.rows(sc.token_seq[t], kv::Cache::Part::K), v = sc.rows(sc.token_seq[t], kv::Cache::Part::V);
    k.pool = v.pool = pool.data();
    const int64_t n_ctx = sc.positions[t] + 1;
    for (int64_t h = 0; h < n_head; ++h) {
      const float* qh = &q[(t * n_head + h) * hd];
      const int64_t first = (h / group) * hd;
      kernels::attend_head(qh, k, v, first, hd, n_ctx, scale, ref.data(), scratch.data(), kernels::Precision::Exact);
      double s_max = -1e300, s_min = 1e300, mag_max = 0, vmax = 0;
      for (int64_t j = 0; j < n_ctx; ++j) {
        kernels::load_kv_values(sc.type, k.row(j), first, hd, kj.data());
        double dot = 0, mag = 0;
        for (int64_t i = 0; i < hd; ++i) {
          dot += double(qh[i]) * kj[i];
          mag += std::fabs(double(qh[i]) * kj[i]);
        }
        s_max = std::max(s_max, dot * scale);
        s_min = std::min(s_min, dot * scale);
        mag_max = std::max(mag_max, mag);
        kernels::load_kv_values(sc.type, v.row(j), first, hd, kj.data());
        for (int64_t i = 0; i < hd; ++i) vmax = std::max(vmax, double(std::fabs(kj[i])));
      }
      const double chunks = static_cast<double>((n_ctx + 63) / 64);
      const double d_score = std::fabs(scale) * gamma(static_cast<double>(hd)) * mag_max +
                             kU * std::max(std::fabs(s_max), std::fabs(s_min));
      const double eps = 2 * d_score + (chunks + 1) * (3 + 2 * (s_max - s_min)) * 2 * kU;
      const double sums = gamma(static_cast<double>(n_ctx) + 2 * chunks + 16);
      for (int64_t i = 0; i < hd; ++i) {
        const double got = out[(t * n_head + h) * hd + i];
        const double tol = vmax * (2 * eps + sums) + kU * std::fabs(ref[i]) + 1e-30;
        const double err = std::fabs(got - ref[i]);
        r.worst = std::max(r.worst, err / tol);
        if (!(err <= tol)) ++r.bad;
      }
    }
  }
  return r;
}

struct Case {
  GgmlType type;
  int64_t n_head, n_head_kv, head_dim;
};

// Runs kv_store of the step's K/V rows and then attention (shader family `family`) on the device,
// returning the comparison with the CPU over the device's pool.
AttnCheck run_attention(Context& ctx, const Case& c, const char* family, uint32_t seed,
                        std::vector<float>* out_copy = nullptr) {
  std::mt19937 rng(seed);
  Scene sc = make_scene(rng, c.type, c.n_head_kv, c.head_dim);
  const int64_t n_tok = static_cast<int64_t>(sc.positions.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> q = random_floats(rng, n_tok * c.n_head * c.head_dim, -2, 2);
  std::vector<float> k = random_floats(rng, n_tok * sc.row_values, -1.5, 1.5),
                     v = random_floats(rng, k.size(), -1.5, 1.5);
  std::vector<uint8_t> host(sc.cache->data(), sc.cache->data() + sc.cache->bytes());
  Buffer pool = device_from(ctx, host), bt = device_from(ctx, sc.tables), bs = device_from(ctx, sc.table_start),
         bp = device_from(ctx, sc.positions), bq = device_from(ctx, q), bk = device_from(ctx, k),
         bv = device_from(ctx, v), bo = device_zeros<float>(ctx, q.size());
  const PagedKv kv = sc.device_kv(pool);
  TokenPages pages{bt, bs, bp, n_tok};
  {
    Stream s(ctx);
    kv_store(s, kv, pages, bk, bv, sc.row_values);
    s.barrier();
    detail::attention_family(s, family, kv, pages, bq, bo, c.n_head, c.n_head_kv, c.head_dim, scale);
    s.run();
  }
  std::vector<float> out = read_back<float>(ctx, bo, q.size());
  if (out_copy) *out_copy = out;
  return check_attention(sc, read_back<uint8_t>(ctx, pool, host.size()), q, out, c.n_head, scale);
}

const Case kCases[] = {
    {GgmlType::F32, 4, 2, 80},  // two output dimensions per invocation
    {GgmlType::F16, 4, 1, 64},  // all query heads on one KV head
    {GgmlType::F16, 4, 2, 40},  // rows of 80 halves
    {GgmlType::BF16, 4, 2, 72},
    {GgmlType::Q8_0, 4, 2, 40},  // head 1 starts inside a 32-value block; rows padded to 96 values
    {GgmlType::Q8_0, 4, 1, 128},
    {GgmlType::Q8_0, 4, 2, 8},   // stories260K's head size: 4 heads in one block
    {GgmlType::F32, 4, 4, 8},    // one KV head per query head
};

TEST(VkAttention, MatchesCpuOverSharedPrefixBlocksForEachElementTypeAndGqa) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  uint32_t seed = 31;
  for (const Case& c : kCases) {
    const AttnCheck r = run_attention(ctx, c, "attention", seed++);
    EXPECT_EQ(r.bad, 0) << type_name(c.type) << " n_head " << c.n_head << " n_head_kv " << c.n_head_kv << " head_dim "
                        << c.head_dim << ": worst error " << r.worst << " x the bound";
  }
}

TEST(VkAttention, MutatedShaderWithoutRescaleIsRejected) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  // The same scene and comparison as above, through attention_mutated_f16: the contexts of 100 and 150
  // positions span several chunks, whose growing maxima the mutant forgets to rescale by.
  const Case c{GgmlType::F16, 4, 2, 40};
  const AttnCheck good = run_attention(ctx, c, "attention", 77);
  const AttnCheck bad = run_attention(ctx, c, "attention_mutated", 77);
  EXPECT_EQ(good.bad, 0);
  EXPECT_GT(bad.bad, 0) << "the comparison accepted attention without the online-softmax rescale (worst " << bad.worst
                        << " x the bound)";
}

TEST(VkAttention, EachTokenAloneEqualsItInTheBatch) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(41);
  const Case c{GgmlType::F16, 4, 2, 40};
  Scene sc = make_scene(rng, c.type, c.n_head_kv, c.head_dim);
  const int64_t n_tok = static_cast<int64_t>(sc.positions.size()), per_tok = c.n_head * c.head_dim;
  std::vector<float> q = random_floats(rng, n_tok * per_tok, -2, 2);
  std::vector<uint8_t> host(sc.cache->data(), sc.cache->data() + sc.cache->bytes());
  Buffer pool = device_from(ctx, host), bt = device_from(ctx, sc.tables), bs = device_from(ctx, sc.table_start),
         bp = device_from(ctx, sc.positions), bq = device_from(ctx, q), bo = device_zeros<float>(ctx, q.size());
  const PagedKv kv = sc.device_kv(pool);
  {
    Stream s(ctx);
    attention(s, kv, TokenPages{bt, bs, bp, n_tok}, bq, bo, c.n_head, c.n_head_kv, c.head_dim, 0.158f);
    s.run();
  }
  std::vector<float> batch = read_back<float>(ctx, bo, q.size());
  for (int64_t t = 0; t < n_tok; ++t) {
    Buffer s1 = device_from(ctx, std::vector<int32_t>{sc.table_start[t]}),
           p1 = device_from(ctx, std::vector<int32_t>{sc.positions[t]}),
           q1 = device_from(ctx, std::vector<float>(q.begin() + t * per_tok, q.begin() + (t + 1) * per_tok)),
           o1 = device_zeros<float>(ctx, per_tok);
    Stream s(ctx);
    attention(s, kv, TokenPages{bt, s1, p1, 1}, q1, o1, c.n_head, c.n_head_kv, c.head_dim, 0.158f);
    s.run();
    std::vector<float> alone = read_back<float>(ctx, o1, per_tok);
    for (int64_t i = 0; i < per_tok; ++i)
      ASSERT_EQ(bits(alone[i]), bits(batch[t * per_tok + i])) << "token " << t << " value " << i;
  }
}

TEST(VkKvStore, WritesTheCpuEncodingAndNothingElse) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  std::mt19937 rng(51);
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0}) {
    // 45 values a row: odd, so F16/BF16 rows start mid-word and neighbours share words; Q8_0 rows are
    // a full block and a 13-value tail padded with zeros.
    Scene sc(type, 1, 45, 8);
    std::vector<int32_t> blocks;
    for (int i = 0; i < 8; ++i) blocks.push_back(sc.cache->allocate_block());
    std::shuffle(blocks.begin(), blocks.end(), rng);
    sc.seqs = {1, 2};
    for (int i = 0; i < 3; ++i) sc.cache->append_block(1, blocks[i]);
    for (int i = 3; i < 5; ++i) sc.cache->append_block(2, blocks[i]);
    // Adjacent positions in one block, one crossing into the next block, and a second sequence.
    sc.set_step({{0, 14}, {0, 15}, {0, 16}, {0, 17}, {1, 3}, {1, 4}, {0, 40}, {1, 31}});
    const int64_t n_tok = static_cast<int64_t>(sc.positions.size());
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint64_t i = 0; i < sc.cache->bytes(); ++i) sc.cache->data()[i] = static_cast<uint8_t>(byte(rng));
    std::vector<uint8_t> before(sc.cache->data(), sc.cache->data() + sc.cache->bytes());
    std::vector<float> k = random_floats(rng, n_tok * 45, -3, 3), v = random_floats(rng, n_tok * 45, -3, 3);
    for (int64_t j = 0; j < 45; j += 7) k[j] = 0;  // a zero in a block, and below: a block all zeros
    std::fill(v.begin() + 45 * 2, v.begin() + 45 * 2 + 32, 0.0f);
    // Ties of each rounding rule, which random values almost never hit (token 1's K row): Q8_0 with
    // amax 127 has d = 1, so 2.5 and -2.5 are halves (rounded away from zero); 1 + 2^-11 is halfway
    // between two halves (to even: 1); 0x3f808000 and 0x3f818000 are halfway between bfloat16s (to
    // even: down, up); 3e-6 is an f16 subnormal.
    const float plants[] = {
        127.0f, 2.5f, -2.5f, 0.5f, 1.0f + 1.0f / 2048, bits_to_f32(0x3f808000u), bits_to_f32(0x3f818000u), 3e-6f};
    std::copy(std::begin(plants), std::end(plants), k.begin() + 45 + 1);

    Buffer pool = device_from(ctx, before), bt = device_from(ctx, sc.tables), bs = device_from(ctx, sc.table_start),
           bp = device_from(ctx, sc.positions), bk = device_from(ctx, k), bv = device_from(ctx, v);
    {
      Stream s(ctx);
      kv_store(s, sc.device_kv(pool), TokenPages{bt, bs, bp, n_tok}, bk, bv, 45);
      s.run();
    }
    std::vector<uint8_t> got = read_back<uint8_t>(ctx, pool, before.size());
    std::vector<uint8_t> want = before;
    std::vector<bool> written(want.size(), false);
    for (int64_t t = 0; t < n_tok; ++t)
      for (auto part : {kv::Cache::Part::K, kv::Cache::Part::V}) {
        const uint8_t* row = sc.rows(sc.token_seq[t], part).row(sc.positions[t]);
        const size_t off = static_cast<size_t>(row - sc.cache->data());
        kernels::store_kv_row(type, (part == kv::Cache::Part::K ? k : v).data() + t * 45, 45, want.data() + off);
        std::fill(written.begin() + off, written.begin() + off + sc.cache->row_bytes(), true);
      }
    // F32, F16, BF16 are integer conversions (round to nearest even, as util/fp16.h): byte for byte.
    // So is Q8_0 on lavapipe, whose f32 division is correctly rounded as the CPU's.
    if (type != GgmlType::Q8_0 || ctx.info().type == "cpu") {
      size_t first = 0;
      while (first < got.size() && got[first] == want[first]) ++first;
      EXPECT_EQ(first, got.size()) << type_name(type) << ": first differing byte " << first << " of " << got.size()
                                   << (first < got.size() && written[first] ? " (in a written row)"
                                                                            : " (outside the rows)");
      continue;
    }
    // Q8_0 elsewhere: the scale amax / 127 and the reciprocal are f32 divisions, which Vulkan lets a
    // driver do in 2.5 ulp instead of correctly rounded, so a scale may be one f16 step off and a quant
    // one step off where x / d falls within that of a half. Everything else byte for byte.
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (!written[i] && got[i] != want[i]) ++bad;
    EXPECT_EQ(bad, 0) << "bytes outside the written rows changed";
    for (size_t i = 0; i < got.size();) {
      if (!written[i]) {
        ++i;
        continue;
      }
      for (size_t b = 0; b < sc.cache->row_bytes(); b += 34) {  // each block of the row
        uint16_t dg, dw;
        std::memcpy(&dg, &got[i + b], 2);
        std::memcpy(&dw, &want[i + b], 2);
        EXPECT_LE(std::abs(int(dg) - int(dw)), 1) << "scale at byte " << i + b;
        for (size_t j = 0; j < 32; ++j)
          EXPECT_LE(std::abs(int(int8_t(got[i + b + 2 + j])) - int(int8_t(want[i + b + 2 + j]))), 1)
              << "quant at byte " << i + b + 2 + j;
        for (size_t j = 13; j < 32 && b == 34; ++j) EXPECT_EQ(got[i + b + 2 + j], 0) << "tail padding";
      }
      i += sc.cache->row_bytes();
    }
  }
}

TEST(VkAttention, RefusesALayoutThatDoesNotMatchTheElementType) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  Scene sc(GgmlType::F16, 2, 40, 4);
  Buffer pool = ctx.buffer(sc.cache->bytes(), MemoryKind::Device), idx = device_zeros<int32_t>(ctx, 4),
         q = device_zeros<float>(ctx, 4 * 40);
  PagedKv kv = sc.device_kv(pool);
  kv.element = GgmlType::Q8_0;  // rows of 80 halves read as Q8_0 would be 102 bytes, not 160
  Stream s(ctx);
  try {
    attention(s, kv, TokenPages{idx, idx, idx, 1}, q, q, 4, 2, 40, 0.1f);
    FAIL() << "a Q8_0 reading of F16 rows was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are 102 bytes, not 160"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moe::vk
