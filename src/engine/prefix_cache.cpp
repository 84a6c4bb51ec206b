// prefix_cache.cpp: hash-chained block lookup with LRU eviction.
#include "engine/prefix_cache.h"

#include <algorithm>

namespace moe::engine {

PrefixCache::~PrefixCache() { clear(); }

uint64_t PrefixCache::chain_hash(uint64_t parent, std::span<const int32_t> block_tokens) {
  // FNV-1a over the parent hash and the token ids, then a final mix (splitmix64).
  uint64_t h = 1469598103934665603ull ^ parent;
  for (int32_t t : block_tokens) {
    for (int i = 0; i < 4; ++i) {
      h ^= static_cast<uint8_t>(static_cast<uint32_t>(t) >> (8 * i));
      h *= 1099511628211ull;
    }
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

uint64_t PrefixCache::chain_root(uint64_t key) {
  // The base keeps root 0; an adapter's root is its id mixed (splitmix64) and never 0. Entries store
  // their parent and match() compares it, so chains of different keys cannot meet even on a collision.
  if (key == 0) return 0;
  uint64_t h = key + 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

std::vector<int32_t> PrefixCache::match(std::span<const int32_t> tokens, int64_t max_blocks, uint64_t key) {
  std::vector<int32_t> blocks;
  int64_t n = std::min<int64_t>(max_blocks, static_cast<int64_t>(tokens.size()) / kv::kBlockTokens);
  uint64_t parent = chain_root(key);
  queries_ += n;
  for (int64_t b = 0; b < n; ++b) {
    auto block_tokens = tokens.subspan(static_cast<size_t>(b * kv::kBlockTokens), kv::kBlockTokens);
    uint64_t h = chain_hash(parent, block_tokens);
    auto it = entries_.find(h);
    if (it == entries_.end() || it->second.parent != parent ||
        !std::equal(block_tokens.begin(), block_tokens.end(), it->second.tokens.begin()))
      break;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    blocks.push_back(it->second.block);
    parent = h;
  }
  hits_ += static_cast<int64_t>(blocks.size());
  return blocks;
}

void PrefixCache::insert(std::span<const int32_t> tokens, const std::vector<int32_t>& table, int64_t n_full,
                         uint64_t key) {
  n_full = std::min<int64_t>({n_full, static_cast<int64_t>(table.size()),
                              static_cast<int64_t>(tokens.size()) / kv::kBlockTokens});
  uint64_t parent = chain_root(key);
  for (int64_t b = 0; b < n_full; ++b) {
    auto block_tokens = tokens.subspan(static_cast<size_t>(b * kv::kBlockTokens), kv::kBlockTokens);
    uint64_t h = chain_hash(parent, block_tokens);
    auto it = entries_.find(h);
    if (it == entries_.end()) {
      int32_t block = table[static_cast<size_t>(b)];
      cache_.retain(block);
      lru_.push_front(h);
      entries_.emplace(h, Entry{block, parent, std::vector<int32_t>(block_tokens.begin(), block_tokens.end()), lru_.begin()});
    } else if (it->second.parent != parent ||
               !std::equal(block_tokens.begin(), block_tokens.end(), it->second.tokens.begin())) {
      return;  // a hash collision: leave the chain as it is
    } else {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    }
    parent = h;
  }
}

bool PrefixCache::evict_until_free(int64_t n_free) {
  // Walk from the least recently used end; only blocks no sequence holds (ref count 1) free memory.
  // A child evicted before its parent is fine: match() stops at the first missing block.
  auto it = lru_.end();
  while (cache_.n_free_blocks() < n_free && it != lru_.begin()) {
    --it;
    auto e = entries_.find(*it);
    if (cache_.ref_count(e->second.block) == 1) {
      cache_.release(e->second.block);
      entries_.erase(e);
      it = lru_.erase(it);
    }
  }
  return cache_.n_free_blocks() >= n_free;
}

void PrefixCache::clear() {
  for (auto& [h, e] : entries_) cache_.release(e.block);
  entries_.clear();
  lru_.clear();
}

}  // namespace moe::engine
