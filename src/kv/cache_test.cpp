// cache_test.cpp: the paged KV cache's sizing (the planner's formula, exactly), block tables, the
// free pool, reference counts, and its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "kv/cache.h"
#include "util/error.h"

namespace moe::kv {
namespace {

const Geometry kMixtral{KvType::F16, 32, 8, 128};

TEST(KvCache, SizedWithThePlannersFormula) {
  EXPECT_EQ(kv_bytes_per_token(KvType::F16, 32, 8, 128), 131072u);
  EXPECT_EQ(Cache::bytes_per_block(kMixtral), 16u * 131072u);
  for (KvType t : {KvType::F32, KvType::F16, KvType::BF16, KvType::Q8_0}) {
    Geometry g{t, 5, 4, 8};  // stories260K: a row of 32 values
    Cache c(g, 3);
    EXPECT_EQ(c.bytes(), 3 * kBlockTokens * kv_bytes_per_token(t, 5, 4, 8)) << kv_type_name(t);
    EXPECT_EQ(c.row_bytes() * 2 * 5 * kBlockTokens, c.block_bytes());
    // Layer l's K rows, then its V rows, tile the block without overlap.
    for (int64_t l = 0; l < 5; ++l) {
      EXPECT_EQ(c.v_offset(l), c.k_offset(l) + kBlockTokens * c.row_bytes());
      EXPECT_LE(c.v_offset(l) + kBlockTokens * c.row_bytes(), c.block_bytes());
    }
  }
  EXPECT_EQ(Cache::blocks_for_bytes(kMixtral, 16u * 131072u * 10 + 5), 10);
  EXPECT_EQ(Cache::blocks_for_tokens(0), 0);
  EXPECT_EQ(Cache::blocks_for_tokens(16), 1);
  EXPECT_EQ(Cache::blocks_for_tokens(17), 2);
}

TEST(KvCache, SequencesGrowShrinkAndFree) {
  Cache c({KvType::F16, 2, 2, 4}, 6);
  EXPECT_EQ(c.n_free_blocks(), 6);
  EXPECT_EQ(c.blocks_needed(1, 33), 3);
  c.reserve(1, 33);
  EXPECT_EQ(c.capacity(1), 48);
  EXPECT_EQ(c.block_table(1).size(), 3u);
  c.reserve(1, 20);  // already there
  EXPECT_EQ(c.n_free_blocks(), 3);
  c.set_length(1, 33);
  EXPECT_EQ(c.length(1), 33);
  EXPECT_THROW(c.set_length(1, 49), Error);
  c.reserve(2, 16);
  EXPECT_EQ(c.sequences(), (std::vector<int32_t>{1, 2}));
  std::set<int32_t> used(c.block_table(1).begin(), c.block_table(1).end());
  used.insert(c.block_table(2).begin(), c.block_table(2).end());
  EXPECT_EQ(used.size(), 4u);  // distinct blocks
  EXPECT_TRUE(c.can_allocate(2));
  EXPECT_FALSE(c.can_allocate(3));
  // Too many: an error, and nothing changes.
  EXPECT_THROW(c.reserve(3, 16 * 3), Error);
  EXPECT_FALSE(c.has_sequence(3));
  EXPECT_EQ(c.n_free_blocks(), 2);
  c.truncate(1, 10);
  EXPECT_EQ(c.block_table(1).size(), 1u);
  EXPECT_EQ(c.length(1), 10);
  EXPECT_EQ(c.n_free_blocks(), 4);
  c.free_sequence(2);
  EXPECT_FALSE(c.has_sequence(2));
  EXPECT_EQ(c.length(2), 0);
  EXPECT_EQ(c.n_free_blocks(), 5);
  c.clear();
  EXPECT_EQ(c.n_free_blocks(), 6);
  EXPECT_THROW(c.block_table(1), Error);
}

TEST(KvCache, SharedBlocksAreReferenceCounted) {
  Cache c({KvType::F16, 1, 1, 8}, 4);
  c.reserve(1, 32);
  const int32_t shared = c.block_table(1)[0];
  c.append_block(2, shared);  // sequence 2 reuses sequence 1's first block (a common prefix)
  EXPECT_EQ(c.ref_count(shared), 2);
  c.reserve(2, 20);  // and gets a block of its own after it
  EXPECT_EQ(c.block_table(2).size(), 2u);
  c.free_sequence(1);
  EXPECT_EQ(c.ref_count(shared), 1);  // still held by sequence 2
  EXPECT_EQ(c.n_free_blocks(), 4 - 2);
  c.free_sequence(2);
  EXPECT_EQ(c.ref_count(shared), 0);
  EXPECT_EQ(c.n_free_blocks(), 4);
  EXPECT_THROW(c.release(shared), Error);
  EXPECT_THROW(c.retain(shared), Error);
  EXPECT_THROW(c.retain(4), Error);
  const int32_t b = c.allocate_block();
  c.retain(b);
  c.release(b);
  c.release(b);
  EXPECT_EQ(c.n_free_blocks(), 4);
}

TEST(KvTypes, OneTableNamesSizesAndElements) {
  EXPECT_EQ(kv_type_names(), "f16, bf16, q8_0, f32");
  for (KvType t : {KvType::F32, KvType::F16, KvType::BF16, KvType::Q8_0}) {
    ASSERT_EQ(parse_kv_type(kv_type_name(t)), t);
    EXPECT_EQ(kv_type_of_element(kv_type_info(t).element), t);
  }
  EXPECT_FALSE(parse_kv_type("fp8").has_value());  // not offered: the cache cannot store it
  EXPECT_FALSE(kv_type_of_element(GgmlType::Q4_0).has_value());
  EXPECT_EQ(kv_row_bytes(KvType::F32, 10), 40u);
  EXPECT_EQ(kv_row_bytes(KvType::BF16, 10), 20u);
  EXPECT_EQ(kv_row_bytes(KvType::Q8_0, 32), 34u);
  EXPECT_EQ(kv_row_bytes(KvType::Q8_0, 33), 68u);  // whole blocks
  EXPECT_EQ(kv_bytes_per_token_layer(KvType::Q8_0, 2, 8), 2u * 34u);
}

TEST(KvCache, RowsFollowTheBlockLayout) {
  // Layer l's K rows of a block come after the K and V rows of layers < l; V rows follow K rows.
  Cache c({KvType::F16, 3, 2, 4}, 4);
  c.reserve(7, 40);  // 3 blocks
  const std::vector<int32_t>& table = c.block_table(7);
  EXPECT_EQ(c.element_type(), GgmlType::F16);
  for (int64_t layer = 0; layer < 3; ++layer)
    for (int64_t pos : {0, 15, 16, 39}) {
      const uint8_t* block = c.data() + static_cast<size_t>(table[pos / kBlockTokens]) * c.block_bytes();
      const size_t in_block = static_cast<size_t>(pos % kBlockTokens) * c.row_bytes();
      EXPECT_EQ(c.rows(table.data(), layer, Cache::Part::K).row(pos), block + c.k_offset(layer) + in_block);
      EXPECT_EQ(c.rows(table.data(), layer, Cache::Part::V).row(pos), block + c.v_offset(layer) + in_block);
      EXPECT_EQ(c.row_for_write(table.data(), layer, Cache::Part::V, pos), block + c.v_offset(layer) + in_block);
    }
}

TEST(KvCache, ReserveAllIsAllOrNothing) {
  Cache c({KvType::F16, 1, 1, 8}, 3);
  const std::vector<std::pair<int32_t, int64_t>> too_much{{1, 32}, {2, 17}};  // 2 + 2 blocks
  EXPECT_THROW(c.reserve_all(too_much), Error);
  EXPECT_EQ(c.n_used_blocks(), 0);
  EXPECT_FALSE(c.has_sequence(1));
  const std::vector<std::pair<int32_t, int64_t>> fits{{1, 32}, {2, 5}};
  c.reserve_all(fits);
  EXPECT_EQ(c.block_table(1).size(), 2u);
  EXPECT_EQ(c.block_table(2).size(), 1u);
  EXPECT_EQ(c.n_free_blocks(), 0);
}

TEST(KvCache, ExhaustionAndBadGeometry) {
  Cache c({KvType::F32, 1, 1, 4}, 1);
  c.allocate_block();
  EXPECT_THROW(c.allocate_block(), Error);
  EXPECT_THROW(Cache({KvType::F16, 0, 1, 4}, 1), Error);
  EXPECT_THROW(Cache({KvType::F16, 1, 1, 4}, 0), Error);
  EXPECT_THROW(Cache({KvType::F16, 1, 1, 4}, int64_t{1} << 40), Error);
  EXPECT_THROW(Cache::blocks_for_tokens(-1), Error);
}

}  // namespace
}  // namespace moe::kv
