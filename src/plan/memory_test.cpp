// memory_test.cpp: the planner's arithmetic on the numbers (Mixtral KV sizes), every KV type,
// budget fitting, size parsing and the errors a user can cause.
#include "plan/memory.h"

#include <gtest/gtest.h>

#include "kv/cache.h"
#include "model/model.h"
#include "plan/plan_testing.h"
#include "util/error.h"

namespace moe::plan {
namespace {

MemoryPlan plan(const Planned& p, int64_t ctx, kv::KvType t, int64_t seqs = 1) {
  MemoryOptions o;
  o.ctx = ctx;
  o.kv_type = t;
  o.seqs = seqs;
  return plan_memory(p.hp, p.weights, p.metadata, o);
}

TEST(Memory, MixtralKvNumbers) {
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  EXPECT_EQ(plan(m, 32768, kv::KvType::F16).kv_bytes_per_token, 131'072u);
  // The seed's "2.1 GB" for a 32K context with an 8-bit cache is 2^31 bytes of values; q8_0 adds a
  // 2-byte scale per 32 values: 34/32 of that.
  EXPECT_EQ(plan(m, 32768, kv::KvType::Q8_0).kv_bytes, 2'147'483'648u / 32 * 34);
  EXPECT_EQ(plan(m, 32768, kv::KvType::F32).kv_bytes, 4 * 2'147'483'648ull);
  EXPECT_EQ(plan(m, 32768, kv::KvType::BF16).kv_bytes, 2 * 2'147'483'648ull);
  EXPECT_EQ(plan(m, 32768, kv::KvType::F16, 4).kv_bytes, 4 * 2 * 2'147'483'648ull);
  // Whole blocks of 16 tokens per sequence: 17 tokens take 2 blocks, for each of 3 sequences.
  MemoryPlan p = plan(m, 17, kv::KvType::F16, 3);
  EXPECT_EQ(p.kv_blocks, 6);
  EXPECT_EQ(p.kv_bytes, 6u * 16u * 131'072u);
  // The cache's own sizing agrees with the planner's block.
  kv::Geometry g{kv::KvType::F16, 32, 8, 128};
  EXPECT_EQ(kv::Cache::bytes_per_block(g), 16u * 131'072u);
}

TEST(Memory, TotalsAddUp) {
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  MemoryOptions o;
  o.ctx = 8192;
  o.n_threads = 2;
  o.process_base_bytes = 10u << 20;
  MemoryPlan p = plan_memory(m.hp, m.weights, m.metadata, o);
  EXPECT_EQ(p.weights_bytes, 28'447'727'616u);
  EXPECT_GT(p.file_bytes, p.weights_bytes);
  EXPECT_LT(p.file_bytes - p.weights_bytes, 2u << 20);  // header, vocabulary, padding
  EXPECT_EQ(p.workspace_bytes, model::Model::workspace_bytes(m.hp, 512, 2));
  EXPECT_EQ(p.overhead_bytes, p.overhead.total());
  EXPECT_GE(p.overhead.process, 10u << 20);
  EXPECT_GT(p.overhead.metadata, 32000u * sizeof(gguf::Value));  // the token array alone
  EXPECT_EQ(p.total_bytes, p.file_bytes + p.kv_bytes + p.workspace_bytes + p.overhead_bytes);
  // ctx 0 means the training context.
  o.ctx = 0;
  EXPECT_EQ(plan_memory(m.hp, m.weights, m.metadata, o).ctx, 32768);
}

TEST(Memory, FitBudget) {
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  MemoryPlan p = plan(m, 32768, kv::KvType::F16);
  // 24 GiB: below the 28.45 GB of weights; the error says by how much.
  Fit small = fit_budget(m.hp, p, 24ull << 30);
  EXPECT_FALSE(small.weights_fit);
  EXPECT_FALSE(small.fits);
  EXPECT_EQ(small.max_ctx, 0);
  EXPECT_EQ(small.max_seqs, 0);
  try {
    require_weights_fit(p, 24ull << 30);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than the budget"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2.68 GB"), std::string::npos) << e.what();  // 28.45+ - 25.77
  }
  // 32 GiB: 34.36 GB - 28.45 GB of weights leaves ~5.8 GB: 32K f16 (4.29 GB) fits for one sequence.
  Fit f = fit_budget(m.hp, p, 32ull << 30);
  EXPECT_TRUE(f.fits);
  EXPECT_EQ(f.max_ctx, 32768);  // capped at the training context
  EXPECT_EQ(f.max_seqs, 1);
  // The boundary is exact: the total fits a budget of exactly total_bytes, not one byte less.
  EXPECT_TRUE(fit_budget(m.hp, p, p.total_bytes).fits);
  Fit tight = fit_budget(m.hp, p, p.total_bytes - 1);
  EXPECT_FALSE(tight.fits);
  EXPECT_EQ(tight.max_ctx, 32768 - 16);
  EXPECT_EQ(tight.max_seqs, 0);
  // max_ctx and max_seqs are consistent with plans at those values.
  Fit g = fit_budget(m.hp, plan(m, 4096, kv::KvType::F16), 30ull << 30);
  EXPECT_LE(plan(m, 4096, kv::KvType::F16, g.max_seqs).total_bytes, 30ull << 30);
  EXPECT_GT(plan(m, 4096, kv::KvType::F16, g.max_seqs + 1).total_bytes, 30ull << 30);
}

TEST(Memory, BadInput) {
  const Planned m = preset("tiny-mixtral", "Q4_0");
  EXPECT_THROW(plan(m, -1, kv::KvType::F16), Error);
  EXPECT_THROW(plan(m, kMaxPlanCtx + 1, kv::KvType::F16), Error);
  EXPECT_NO_THROW(plan(m, kMaxPlanCtx, kv::KvType::F16));
  EXPECT_THROW(plan(m, 16, kv::KvType::F16, 0), Error);
}

TEST(Memory, ParseSize) {
  EXPECT_EQ(parse_size("24GiB"), 24ull << 30);
  EXPECT_EQ(parse_size("24 GiB"), 24ull << 30);
  EXPECT_EQ(parse_size("24gib"), 24ull << 30);
  EXPECT_EQ(parse_size("24G"), 24ull << 30);
  EXPECT_EQ(parse_size("24GB"), 24'000'000'000ull);
  EXPECT_EQ(parse_size("24e9"), 24'000'000'000ull);
  EXPECT_EQ(parse_size("1.5TiB"), 3ull << 39);
  EXPECT_EQ(parse_size("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_size("100"), 100u);
  EXPECT_EQ(parse_size("100b"), 100u);
  for (const char* bad : {"", "GiB", "-1GiB", "0", "0.1", "24XB", "nan", "inf", "1e30", "0x10", "24 G B"})
    EXPECT_THROW(parse_size(bad), Error) << bad;
}

TEST(Memory, Devices) {
  EXPECT_EQ(find_device("RTX4090").bytes, 24ull << 30);
  EXPECT_EQ(find_device("h200").bytes, 141ull << 30);
  EXPECT_EQ(find_device("a100").bytes, 80ull << 30);
  EXPECT_GT(find_device("host").bytes, 1ull << 28);
  EXPECT_THROW(find_device("tpu"), Error);
  EXPECT_EQ(format_bytes(28'447'727'616u), "28.45 GB (26.49 GiB)");
}

}  // namespace
}  // namespace moe::plan
