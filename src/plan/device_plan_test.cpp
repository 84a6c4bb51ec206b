// device_plan_test.cpp: the KV pool of `moe serve --device vulkan` against the device budget
// (device_plan.h fit_pool_to_device), on the full Mixtral 8x7B Q4_K_M layout: a card that holds
// everything leaves the host plan alone; the KV mirror takes the room all experts leave; when the
// experts do not all fit it gets one sequence; less than one sequence is refused, naming the flags; the
// mirror never spans more than one storage-buffer binding.
#include "plan/device_plan.h"

#include <gtest/gtest.h>

#include "plan/plan_testing.h"
#include "util/error.h"

namespace moe::plan {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

struct Case {
  Planned m = preset("mixtral-8x7b", "Q4_K_M");
  PoolPlan pool;
  uint64_t must = 0, experts = 0;  // the card's fixed part + workspace, and all experts
  Case() {
    PoolOptions o;
    o.available = 512 * kGiB;  // the host is not the bound here: 16 sequences of 4,096 tokens
    o.available_source = "--memory-available";
    o.max_model_len = 4096;
    o.max_model_len_given = true;
    o.max_num_seqs = 16;
    o.n_threads = 2;
    pool = plan_kv_pool(m.hp, m.weights, m.metadata, o);
    const model::PlacementSizes sizes = placement_sizes_of(m.hp, m.weights);
    for (const auto& layer : sizes.expert_bytes)
      for (uint64_t b : layer) experts += b;
    must = sizes.fixed_bytes + model::VulkanBackend::device_workspace_bytes(m.hp, 512);
  }
  uint64_t one_seq() const { return static_cast<uint64_t>(pool.seq_blocks) * pool.block_bytes; }
};

TEST(DevicePool, ACardThatHoldsEverythingKeepsTheHostPlan) {
  Case c;
  const PoolPlan before = c.pool;
  ASSERT_EQ(before.kv_blocks, 16 * 4096 / 16);
  fit_pool_to_device(c.pool, c.m.hp, c.m.weights, c.must + c.experts + before.kv_bytes, 512);
  EXPECT_EQ(c.pool.kv_blocks, before.kv_blocks);
  EXPECT_EQ(c.pool.limited_by, before.limited_by);
}

TEST(DevicePool, TheMirrorTakesTheRoomAllExpertsLeave) {
  Case c;
  const int64_t blocks = c.pool.seq_blocks + 44;  // more than one sequence, fewer than the host's 16
  const uint64_t room = static_cast<uint64_t>(blocks) * c.pool.block_bytes + c.pool.block_bytes / 2;
  fit_pool_to_device(c.pool, c.m.hp, c.m.weights, c.must + c.experts + room, 512);
  EXPECT_EQ(c.pool.kv_blocks, blocks);
  EXPECT_EQ(c.pool.kv_bytes, static_cast<uint64_t>(blocks) * c.pool.block_bytes);
  EXPECT_EQ(c.pool.limited_by, "device memory (--gpu-memory)");
}

TEST(DevicePool, ExpertsThatDoNotAllFitLeaveOneSequence) {
  Case c;
  // A 24 GB card: the experts (about 23 GB of the 26 GB file) do not all fit.
  fit_pool_to_device(c.pool, c.m.hp, c.m.weights, 24 * kGiB, 512);
  EXPECT_EQ(c.pool.kv_blocks, c.pool.seq_blocks);
  EXPECT_EQ(c.pool.full_sequences(), 1);
  EXPECT_NE(c.pool.limited_by.find("one sequence"), std::string::npos) << c.pool.limited_by;
}

TEST(DevicePool, LessThanOneSequenceIsRefusedNamingTheFlags) {
  Case c;
  try {
    fit_pool_to_device(c.pool, c.m.hp, c.m.weights, c.must + c.one_seq() - 1, 512);
    FAIL() << "a budget below one sequence was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("-c"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--gpu-memory"), std::string::npos) << msg;
  }
  // Exactly one sequence beside the fixed part is enough.
  fit_pool_to_device(c.pool, c.m.hp, c.m.weights, c.must + c.one_seq(), 512);
  EXPECT_EQ(c.pool.kv_blocks, c.pool.seq_blocks);
}

TEST(DevicePool, TheMirrorFitsOneStorageBinding) {
  Case c;
  const uint64_t binding = 4 * c.one_seq() + c.pool.block_bytes / 3;  // room for all 16 sequences, binding for 4
  fit_pool_to_device(c.pool, c.m.hp, c.m.weights, c.must + c.experts + c.pool.kv_bytes, 512, binding);
  EXPECT_EQ(c.pool.kv_blocks, 4 * c.pool.seq_blocks);
  EXPECT_EQ(c.pool.limited_by, "one storage-buffer binding of the device");
  EXPECT_THROW(fit_pool_to_device(c.pool, c.m.hp, c.m.weights, 64 * kGiB, 512, c.one_seq() - 1), Error);
}

}  // namespace
}  // namespace moe::plan
