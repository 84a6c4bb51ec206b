// kv_pool_test.cpp: the serving KV pool from available memory on the issue's own case (the full
// Mixtral 8x7B, 28 GB of Q4_K_M weights, and a 24 GiB machine), each limit of the rule in kv_pool.h
// (the max-model-len x max-num-seqs cap, the room beside the mapped weights, one sequence when the
// weights cannot all stay cached, the refusal, the capped default context, --memory-budget), and the
// invariant that the pool never exceeds the anonymous room, over a sweep of memory sizes.
#include "plan/kv_pool.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kv/cache.h"
#include "plan/plan_testing.h"
#include "util/error.h"

namespace moe::plan {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

PoolOptions options(uint64_t available, int64_t ctx, int64_t seqs) {
  PoolOptions o;
  o.available = available;
  o.available_source = "--memory-available";
  o.max_model_len = ctx;
  o.max_model_len_given = ctx > 0;
  o.max_num_seqs = seqs;
  o.n_threads = 2;
  return o;
}

std::string error_of(const Planned& m, const PoolOptions& o) {
  try {
    plan_kv_pool(m.hp, m.weights, m.metadata, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(KvPool, SmallModelIsCappedByContextTimesSequences) {
  const Planned m = preset("tiny-mixtral", "Q8_0");
  const PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, options(16 * kGiB, 4096, 4));
  EXPECT_EQ(p.seq_blocks, 4096 / 16);
  EXPECT_EQ(p.kv_blocks, 4 * 4096 / 16);
  EXPECT_EQ(p.limited_by, "max-model-len x max-num-seqs");
  EXPECT_EQ(p.full_sequences(), 4);
  EXPECT_EQ(p.kv_bytes, static_cast<uint64_t>(p.kv_blocks) * p.block_bytes);
  EXPECT_EQ(p.block_bytes, kv::Cache::bytes_per_block({kv::KvType::F16, m.hp.n_layer, m.hp.n_head_kv, m.hp.head_dim}));
  EXPECT_EQ(p.weights_paged(), 0u);
  EXPECT_EQ(p.weights_cached, p.weights_mapped);
  EXPECT_EQ(p.usable, static_cast<uint64_t>(16 * kGiB * 0.9));
}

TEST(KvPool, TheIssuesMixtralOnTwentyFourGiBStartsWithOneSequenceAndPagedWeights) {
  // 28 GB of Q4_K_M weights do not fit in 24 GiB x 0.9: they are paged from the file whatever the pool,
  // so the pool is one sequence of the full 32K context (4.29 GB), not 16 (68.7 GB).
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  const PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, options(24 * kGiB, 0, 16));
  EXPECT_EQ(p.max_model_len, 32768);
  EXPECT_FALSE(p.ctx_capped);
  EXPECT_EQ(p.kv_blocks, 32768 / 16);
  EXPECT_EQ(p.kv_bytes, 32768ull * 131072ull);
  EXPECT_EQ(p.limited_by, "available memory");
  EXPECT_GT(p.weights_paged(), 0u);
  EXPECT_EQ(p.weights_cached, p.anon_room - p.kv_bytes);
  EXPECT_NE(describe_pool(p).find("read from the file as needed"), std::string::npos) << describe_pool(p);
}

TEST(KvPool, WeightsThatFitAreLeftRoomInThePageCache) {
  // Q2_K Mixtral (17 GB) on 24 GiB: the pool takes what is left beside the weights, not the weights' room.
  const Planned m = preset("mixtral-8x7b", "Q2_K");
  const PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, options(24 * kGiB, 8192, 16));
  EXPECT_EQ(p.limited_by, "available memory");
  EXPECT_EQ(p.weights_paged(), 0u);
  EXPECT_EQ(p.kv_blocks, static_cast<int64_t>((p.anon_room - p.weights_mapped) / p.block_bytes));
  EXPECT_GE(p.kv_blocks, p.seq_blocks);
  EXPECT_LT(p.kv_blocks, p.cap_blocks);
  EXPECT_LE(p.fixed + p.weights_mapped + p.kv_bytes, p.usable);
  EXPECT_GT(p.fixed + p.weights_mapped + p.kv_bytes + p.block_bytes, p.usable);
}

TEST(KvPool, UtilizationScalesTheUsableMemory) {
  const Planned m = preset("mixtral-8x7b", "Q2_K");
  PoolOptions o = options(24 * kGiB, 8192, 16);
  o.utilization = 0.5;
  const PoolPlan half = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_EQ(half.usable, 12 * kGiB);
  o.utilization = 1.0;
  const PoolPlan all = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_EQ(all.usable, 24 * kGiB);
  EXPECT_GT(all.kv_blocks, half.kv_blocks);
  for (double bad : {0.0, -0.5, 1.01, std::nan("")}) {
    o.utilization = bad;
    EXPECT_NE(error_of(m, o).find("--memory-utilization"), std::string::npos) << bad;
  }
}

TEST(KvPool, AContextThatCannotFitIsRefusedWithWhatWouldFit) {
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  // 2 GiB x 0.9 cannot hold one 32K sequence (4.29 GB) beside the workspace and overhead.
  const std::string e = error_of(m, options(2 * kGiB, 32768, 1));
  EXPECT_NE(e.find("not even one sequence of 32,768 tokens fits"), std::string::npos) << e;
  EXPECT_NE(e.find("what fits: one sequence of at most"), std::string::npos) << e;
  EXPECT_NE(e.find("-c "), std::string::npos) << e;
  EXPECT_NE(e.find("--memory-available"), std::string::npos) << e;
  // The context it names does fit, and one more block does not.
  const size_t at = e.find("(-c ");
  ASSERT_NE(at, std::string::npos) << e;
  const int64_t fits = std::stoll(e.substr(at + 4));
  EXPECT_EQ(fits % 16, 0);
  const PoolPlan ok = plan_kv_pool(m.hp, m.weights, m.metadata, options(2 * kGiB, fits, 1));
  EXPECT_EQ(ok.kv_blocks, fits / 16);
  EXPECT_FALSE(error_of(m, options(2 * kGiB, fits + 16, 1)).empty());
  // So little memory that not even the workspace fits: still refused, saying so.
  const std::string none = error_of(m, options(1u << 20, 16, 1));
  EXPECT_NE(none.find("not even one KV block"), std::string::npos) << none;
}

TEST(KvPool, TheModelsOwnContextIsCappedToWhatFitsWhenNotAskedFor) {
  const Planned m = preset("mixtral-8x7b", "Q4_K_M");
  const PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, options(2 * kGiB, 0, 4));
  EXPECT_TRUE(p.ctx_capped);
  EXPECT_LT(p.max_model_len, 32768);
  EXPECT_EQ(p.max_model_len, p.kv_blocks * 16);
  EXPECT_EQ(p.memory.ctx, p.max_model_len);
  EXPECT_LE(p.kv_bytes, p.anon_room);
  EXPECT_NE(describe_pool(p).find("-c to choose"), std::string::npos);
}

TEST(KvPool, MemoryBudgetOverridesTheSizing) {
  const Planned m = preset("tiny-mixtral", "Q8_0");
  PoolOptions o = options(16 * kGiB, 1024, 4);
  const uint64_t block = plan_kv_pool(m.hp, m.weights, m.metadata, o).block_bytes;
  o.memory_budget = 100 * block + block / 2;
  PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_EQ(p.kv_blocks, 100);
  EXPECT_EQ(p.limited_by, "--memory-budget");
  // A budget below one asked-for sequence is refused; below the model's default context, it caps it.
  o.memory_budget = 10 * block;
  EXPECT_NE(error_of(m, o).find("less than one sequence"), std::string::npos) << error_of(m, o);
  o.max_model_len = 0;
  o.max_model_len_given = false;
  p = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_TRUE(p.ctx_capped);
  EXPECT_EQ(p.max_model_len, 160);
  o.memory_budget = block - 1;
  EXPECT_NE(error_of(m, o).find("holds no KV block"), std::string::npos);
  // A budget beyond what is available starts, with a warning in the description.
  o.memory_budget = 4 * kGiB;
  o.available = 1 * kGiB;
  p = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_NE(describe_pool(p).find("may kill"), std::string::npos) << describe_pool(p);
}

TEST(KvPool, ResidentWeightsComeOffFirst) {
  const Planned m = preset("mixtral-8x7b", "Q2_K");
  PoolOptions o = options(24 * kGiB, 8192, 16);
  o.weights_mapped = false;
  const PoolPlan p = plan_kv_pool(m.hp, m.weights, m.metadata, o);
  EXPECT_EQ(p.weights_mapped, 0u);
  EXPECT_EQ(p.weights_resident, p.memory.file_bytes);
  EXPECT_EQ(p.fixed, p.weights_resident + p.memory.workspace_bytes + p.memory.overhead_bytes);
  EXPECT_EQ(p.kv_blocks, static_cast<int64_t>(p.anon_room / p.block_bytes));
}

TEST(KvPool, ThePoolNeverExceedsTheAnonymousRoomOverASweepOfSizes) {
  const Planned m = preset("mixtral-8x7b", "Q3_K_M");
  for (uint64_t mib = 64; mib <= 96 * 1024; mib = mib * 5 / 4 + 7) {
    for (int64_t seqs : {1, 3, 16}) {
      PoolOptions o = options(mib << 20, 0, seqs);
      PoolPlan p;
      try {
        p = plan_kv_pool(m.hp, m.weights, m.metadata, o);
      } catch (const Error&) {
        continue;  // nothing fits: refused
      }
      ASSERT_GE(p.kv_blocks, p.seq_blocks) << mib;
      ASSERT_LE(p.kv_blocks, p.cap_blocks) << mib;
      ASSERT_LE(p.kv_bytes, p.anon_room) << mib << " MiB, " << seqs << " seqs";
      ASSERT_LE(p.fixed + p.kv_bytes, p.usable) << mib;
      ASSERT_EQ(p.weights_cached + p.weights_paged(), p.weights_mapped);
      ASSERT_LE(p.fixed + p.kv_bytes + p.weights_cached, p.usable);
    }
  }
}

}  // namespace
}  // namespace moe::plan
