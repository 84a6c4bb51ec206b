// cache.h: the paged KV cache. One pool of fixed-size blocks (kBlockTokens tokens each) is allocated
// once from a byte budget or a token count; each sequence owns a block table mapping its positions to
// blocks, grown on demand and returned to the pool when the sequence ends. Blocks are reference
// counted so that several sequences can share the blocks of a common prefix (prefix caching).
//
// Block layout: for each layer, the K rows of the block's 16 tokens, then their V rows; one row is a
// token's n_head_kv * head_dim values of the element type. So a block is exactly
// kBlockTokens * kv_bytes_per_token(type, n_layer, n_head_kv, head_dim) bytes, the planner's formula.
//
// The cache owns this layout: rows() is the only way to a row's bytes (kv/paged_rows.h), and
// reserve()/reserve_all() are the only ways blocks are taken for a sequence's positions. The model
// writes and the attention kernel reads rows through those views (kernels/attention.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kv/kv_types.h"
#include "kv/paged_rows.h"

namespace moe::kv {

struct Geometry {
  KvType type = KvType::F16;
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
};

class Cache {
 public:
  // Pool sizing with the planner's formula. Throws moe::Error on a bad geometry or overflow.
  static uint64_t bytes_per_block(const Geometry& g);
  static int64_t blocks_for_bytes(const Geometry& g, uint64_t budget_bytes);  // floor
  static int64_t blocks_for_tokens(int64_t n_tokens);                         // ceil(n / kBlockTokens)

  // Allocates n_blocks blocks (at least 1). Throws moe::Error on a bad geometry or when the allocation
  // fails.
  Cache(const Geometry& g, int64_t n_blocks);
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  const Geometry& geometry() const { return geom_; }
  int64_t n_blocks() const { return n_blocks_; }
  int64_t n_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t n_used_blocks() const { return n_blocks_ - n_free_blocks(); }
  uint64_t bytes() const { return static_cast<uint64_t>(n_blocks_) * block_bytes_; }
  size_t block_bytes() const { return block_bytes_; }
  size_t row_bytes() const { return row_bytes_; }  // one token's K (or V) in one layer
  // Byte offset, within a block, of layer l's first K (or V) row.
  size_t k_offset(int64_t layer) const { return static_cast<size_t>(layer) * 2 * kBlockTokens * row_bytes_; }
  size_t v_offset(int64_t layer) const { return k_offset(layer) + kBlockTokens * row_bytes_; }
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  // How the rows' values are encoded (kv_type_info(geometry().type).element).
  GgmlType element_type() const { return element_; }

  // --- row addresses ----------------------------------------------------------------------------
  enum class Part { K, V };
  // Layer `layer`'s K (or V) rows of the sequence whose block table is `blocks` (block_table(seq).data(),
  // which the caller may keep for a step: tables change only in reserve/truncate/free).
  PagedRows rows(const int32_t* blocks, int64_t layer, Part part) const {
    return PagedRows{data_.get(), blocks, block_bytes_, part == Part::K ? k_offset(layer) : v_offset(layer), row_bytes_,
                     kBlockTokens, element_};
  }
  // The row of position `pos` in those rows, for writing (the position's block must be reserved).
  uint8_t* row_for_write(const int32_t* blocks, int64_t layer, Part part, int64_t pos) {
    return data_.get() + (rows(blocks, layer, part).row(pos) - data_.get());
  }

  // --- sequences -------------------------------------------------------------------------------
  bool has_sequence(int32_t seq) const { return seqs_.count(seq) != 0; }
  // Positions [0, length) of the sequence hold valid K/V (0 for an unknown sequence).
  int64_t length(int32_t seq) const;
  void set_length(int32_t seq, int64_t n_tokens);  // the model calls this after writing; <= capacity
  // Tokens the sequence's blocks can hold.
  int64_t capacity(int32_t seq) const;
  const std::vector<int32_t>& block_table(int32_t seq) const;  // throws for an unknown sequence
  // Blocks that reserve(seq, n_tokens) would take from the pool.
  int64_t blocks_needed(int32_t seq, int64_t n_tokens) const;
  bool can_allocate(int64_t n_blocks) const { return n_blocks <= n_free_blocks(); }
  // Grows the sequence's table to hold positions [0, n_tokens) (creating the sequence if new).
  // Throws moe::Error, changing nothing, when the pool has too few free blocks.
  void reserve(int32_t seq, int64_t n_tokens);
  // reserve() for several sequences (each at most once), all or nothing: throws moe::Error naming the
  // shortfall, changing nothing, when the pool cannot hold them all. A forward step calls this.
  void reserve_all(std::span<const std::pair<int32_t, int64_t>> seq_tokens);
  // Drops positions >= n_tokens, returning blocks no longer needed.
  void truncate(int32_t seq, int64_t n_tokens);
  void free_sequence(int32_t seq);
  void clear();  // every sequence freed
  std::vector<int32_t> sequences() const;

  // --- blocks (for prefix sharing) -------------------------------------------------------------
  // Takes a free block (reference count 1); throws moe::Error when none is free.
  int32_t allocate_block();
  void retain(int32_t block);
  void release(int32_t block);  // returns the block to the pool when its count drops to 0
  int32_t ref_count(int32_t block) const;
  // Appends an existing block to a sequence's table (retaining it); the sequence is created if new.
  void append_block(int32_t seq, int32_t block);

 private:
  struct Sequence {
    std::vector<int32_t> blocks;
    int64_t length = 0;
  };
  void check_block(int32_t block) const;
  Geometry geom_;
  GgmlType element_ = GgmlType::F16;
  int64_t n_blocks_ = 0;
  size_t row_bytes_ = 0;
  size_t block_bytes_ = 0;
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], FreeDeleter> data_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<int32_t> refs_;
  std::unordered_map<int32_t, Sequence> seqs_;
};

}  // namespace moe::kv
