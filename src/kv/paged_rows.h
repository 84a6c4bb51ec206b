// paged_rows.h: the address of a KV row in the paged cache. This is the one place that turns (block
// table, layer, K or V, position) into bytes: kv::Cache builds these views (Cache::rows) and the model
// writes and the attention kernel reads through row(), so the block layout is written down once.
#pragma once
#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"

namespace moe::kv {

// One sequence's K (or V) rows of one layer, paged: position p lives in block blocks[p / block_tokens]
// at byte offset + (p % block_tokens) * row_bytes from that block's start.
struct PagedRows {
  const uint8_t* pool = nullptr;   // the cache's block pool
  const int32_t* blocks = nullptr; // the sequence's block table
  size_t block_bytes = 0;
  size_t offset = 0;               // of this layer's K (or V) rows within a block
  size_t row_bytes = 0;            // one token's K (or V) in one layer
  int64_t block_tokens = 16;
  GgmlType type = GgmlType::F16;   // the row encoding (kv_type_info(...).element)

  const uint8_t* row(int64_t pos) const {
    return pool + static_cast<size_t>(blocks[pos / block_tokens]) * block_bytes + offset +
           static_cast<size_t>(pos % block_tokens) * row_bytes;
  }
};

}  // namespace moe::kv
