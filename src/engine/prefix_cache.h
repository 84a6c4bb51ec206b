// prefix_cache.h: prefix caching over the paged KV cache. A full block of a prompt is identified by
// the hash chain of all tokens up to its end (the block's own 16 tokens plus its parent's hash), so
// two prompts that share a system prompt share its blocks: the cache keeps one reference to each
// registered block, a new sequence appends the matching blocks to its table instead of recomputing
// them, and blocks only the cache still holds are evicted least-recently-used when the pool runs dry.
// Registered blocks are full and never written again, so sharing needs no copy-on-write.
// A block's K/V depend on the LoRA adapter that computed them as well as on the tokens, so every chain
// starts from a key (the adapter's id; 0 for the base): blocks are never shared between adapters.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/cache.h"

namespace moe::engine {

class PrefixCache {
 public:
  explicit PrefixCache(kv::Cache& cache) : cache_(cache) {}
  ~PrefixCache();

  // The longest run of cached full blocks that starts `tokens`, at most max_blocks long. Counts a
  // query and the hits. The blocks are not retained: append them to a sequence right away.
  std::vector<int32_t> match(std::span<const int32_t> tokens, int64_t max_blocks, uint64_t key = 0);
  // Registers the sequence's full blocks covering tokens[0, n_full_blocks * 16) (already computed).
  void insert(std::span<const int32_t> tokens, const std::vector<int32_t>& block_table, int64_t n_full_blocks,
              uint64_t key = 0);
  // Releases least-recently-used blocks that no sequence uses until `n_free` blocks are free or none is
  // left to evict; returns whether the pool now has n_free free blocks.
  bool evict_until_free(int64_t n_free);
  void clear();

  int64_t queries() const { return queries_; }  // blocks looked up
  int64_t hits() const { return hits_; }        // blocks found
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }

 private:
  struct Entry {
    int32_t block;
    uint64_t parent;
    std::vector<int32_t> tokens;  // the block's tokens, to rule out hash collisions
    std::list<uint64_t>::iterator lru;
  };
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> block_tokens);
  static uint64_t chain_root(uint64_t key);  // the "parent" of a chain's first block
  kv::Cache& cache_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // front: most recently used
  int64_t queries_ = 0, hits_ = 0;
};

}  // namespace moe::engine
