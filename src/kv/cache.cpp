// cache.cpp: block pool, reference counts and per-sequence block tables of the paged KV cache.
#include "kv/cache.h"

#include <algorithm>
#include <cstdlib>

#include "util/checked.h"
#include "util/error.h"

namespace moe::kv {
namespace {

constexpr int64_t kMaxBlocks = int64_t{1} << 30;  // block ids are int32

void check_geometry(const Geometry& g) {
  if (g.n_layer <= 0 || g.n_head_kv <= 0 || g.head_dim <= 0)
    fail("KV cache geometry must be positive (layers ", g.n_layer, ", KV heads ", g.n_head_kv, ", head size ",
         g.head_dim, ")");
  if (g.n_layer > 4096 || g.n_head_kv > 4096 || g.head_dim > 4096)
    fail("KV cache geometry is out of range (layers ", g.n_layer, ", KV heads ", g.n_head_kv, ", head size ",
         g.head_dim, ")");
}

}  // namespace

void Cache::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

uint64_t Cache::bytes_per_block(const Geometry& g) {
  check_geometry(g);
  return checked_mul(static_cast<uint64_t>(kBlockTokens), kv_bytes_per_token(g.type, g.n_layer, g.n_head_kv, g.head_dim),
                     "KV block bytes");
}

int64_t Cache::blocks_for_bytes(const Geometry& g, uint64_t budget_bytes) {
  return static_cast<int64_t>(std::min<uint64_t>(budget_bytes / bytes_per_block(g), kMaxBlocks));
}

int64_t Cache::blocks_for_tokens(int64_t n_tokens) {
  if (n_tokens < 0) fail("negative token count ", n_tokens);
  return (n_tokens + kBlockTokens - 1) / kBlockTokens;
}

Cache::Cache(const Geometry& g, int64_t n_blocks) : geom_(g), element_(kv_type_info(g.type).element) {
  block_bytes_ = bytes_per_block(g);
  row_bytes_ = kv_row_bytes(g.type, g.n_head_kv * g.head_dim);
  if (n_blocks < 1) fail("the KV cache needs at least one block of ", kBlockTokens, " tokens");
  if (n_blocks > kMaxBlocks) fail("KV cache of ", n_blocks, " blocks is too large");
  n_blocks_ = n_blocks;
  uint64_t total = checked_mul(static_cast<uint64_t>(n_blocks), block_bytes_, "KV cache bytes");
  auto rounded = align_up(total, 64);
  if (!rounded) fail("KV cache bytes overflow");
  // aligned_alloc does not touch the pages: a large pool costs memory only as it fills.
  data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, *rounded)));
  if (!data_) fail("cannot allocate ", total, " bytes for the KV cache (", n_blocks, " blocks)");
  refs_.assign(static_cast<size_t>(n_blocks), 0);
  free_.reserve(static_cast<size_t>(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));  // block 0 first
}

Cache::~Cache() = default;

void Cache::check_block(int32_t block) const {
  if (block < 0 || block >= n_blocks_) fail("KV block id ", block, " is out of range [0, ", n_blocks_, ")");
}

int64_t Cache::length(int32_t seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.length;
}

void Cache::set_length(int32_t seq, int64_t n_tokens) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) fail("unknown KV sequence ", seq);
  if (n_tokens < 0 || n_tokens > capacity(seq))
    fail("KV sequence ", seq, ": length ", n_tokens, " exceeds its capacity ", capacity(seq));
  it->second.length = n_tokens;
}

int64_t Cache::capacity(int32_t seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size()) * kBlockTokens;
}

const std::vector<int32_t>& Cache::block_table(int32_t seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) fail("unknown KV sequence ", seq);
  return it->second.blocks;
}

int64_t Cache::blocks_needed(int32_t seq, int64_t n_tokens) const {
  auto it = seqs_.find(seq);
  int64_t have = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  return std::max<int64_t>(0, blocks_for_tokens(n_tokens) - have);
}

void Cache::reserve(int32_t seq, int64_t n_tokens) {
  const int64_t need = blocks_needed(seq, n_tokens);
  if (!can_allocate(need))
    fail("KV cache is full: sequence ", seq, " needs ", need, " more blocks of ", kBlockTokens, " tokens, ",
         n_free_blocks(), " of ", n_blocks_, " are free");
  Sequence& s = seqs_[seq];
  for (int64_t i = 0; i < need; ++i) s.blocks.push_back(allocate_block());
}

void Cache::reserve_all(std::span<const std::pair<int32_t, int64_t>> seq_tokens) {
  int64_t need = 0;
  for (const auto& [seq, n_tokens] : seq_tokens) need += blocks_needed(seq, n_tokens);
  if (!can_allocate(need))
    fail("KV cache is full: this batch needs ", need, " more blocks, ", n_free_blocks(), " of ", n_blocks_, " are free");
  for (const auto& [seq, n_tokens] : seq_tokens) reserve(seq, n_tokens);
}

void Cache::truncate(int32_t seq, int64_t n_tokens) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  if (n_tokens < 0) fail("negative KV truncation length ", n_tokens);
  Sequence& s = it->second;
  const auto keep = static_cast<size_t>(blocks_for_tokens(n_tokens));
  while (s.blocks.size() > keep) {
    release(s.blocks.back());
    s.blocks.pop_back();
  }
  s.length = std::min(s.length, n_tokens);
}

void Cache::free_sequence(int32_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (int32_t b : it->second.blocks) release(b);
  seqs_.erase(it);
}

void Cache::clear() {
  while (!seqs_.empty()) free_sequence(seqs_.begin()->first);
}

std::vector<int32_t> Cache::sequences() const {
  std::vector<int32_t> ids;
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

int32_t Cache::allocate_block() {
  if (free_.empty()) fail("KV cache is full: all ", n_blocks_, " blocks are in use");
  int32_t b = free_.back();
  free_.pop_back();
  refs_[static_cast<size_t>(b)] = 1;
  return b;
}

void Cache::retain(int32_t block) {
  check_block(block);
  if (refs_[static_cast<size_t>(block)] == 0) fail("KV block ", block, " is free and cannot be retained");
  ++refs_[static_cast<size_t>(block)];
}

void Cache::release(int32_t block) {
  check_block(block);
  int32_t& r = refs_[static_cast<size_t>(block)];
  if (r == 0) fail("KV block ", block, " released more often than retained");
  if (--r == 0) free_.push_back(block);
}

int32_t Cache::ref_count(int32_t block) const {
  check_block(block);
  return refs_[static_cast<size_t>(block)];
}

void Cache::append_block(int32_t seq, int32_t block) {
  retain(block);
  seqs_[seq].blocks.push_back(block);
}

}  // namespace moe::kv
