// kv_pool.h: how big the serving KV pool is, from the memory that is really there. `moe serve` sizes
// its pool with plan_kv_pool and hands the result to the engine as EngineConfig::memory_budget;
// `moe plan --serve` prints the same plan, and /metrics shows the same figures, so there is one answer.
//
// The rule. `usable` = available memory (MemAvailable or the cgroup's room, or --memory-available) x
// the utilization fraction (--memory-utilization, default 0.9). What must stay resident comes off
// first: weights that are not backed by the file (none while the model is mmap'd), the forward-pass
// workspace and the runtime overhead (plan_memory's terms). What is left is the *anonymous room*: KV
// pages beyond it would get the process killed, so a context of which not even one sequence fits there
// is refused at start, with what would fit. The mmap'd weights are clean file pages the OS can drop and
// re-read, so they never make the process fail; but a pool that pushes them out of the page cache makes
// every token read the file, so the pool leaves them room as far as it can: pool = the anonymous room
// less the mapped weights, at least one sequence of max_model_len and at most max_model_len x
// max_num_seqs, in whole blocks. Mapped weights that do not fit beside it are reported as paged.
// An explicit --memory-budget replaces the sizing (the plan still reports what it leaves).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "kv/kv_types.h"
#include "model/hparams.h"
#include "plan/layout.h"
#include "plan/memory.h"

namespace moe::plan {

struct PoolOptions {
  int64_t max_model_len = 0;          // tokens per sequence; 0: the model's training context
  bool max_model_len_given = false;   // asked for explicitly (else a context that does not fit is capped)
  int64_t max_num_seqs = 16;
  kv::KvType kv_type = kv::KvType::F16;
  int64_t batch_tokens = 512;         // tokens per engine step: sizes the workspace
  int n_threads = 1;
  int http_threads = 0;               // serve_http_threads(max_num_seqs) for `moe serve`
  uint64_t process_base_bytes = 0;    // process_base_bytes(current_rss_bytes()) at start
  uint64_t available = 0;             // bytes the process may still use
  std::string available_source;       // "MemAvailable", "cgroup v2 ...", "--memory-available"
  double utilization = 0.9;           // fraction of `available` to plan for, in (0, 1]
  uint64_t memory_budget = 0;         // explicit KV pool bytes (--memory-budget); 0: size from memory
  bool weights_mapped = true;         // weights used in place from the mmap'd file (pageable)
  uint64_t lora_bytes = 0;            // LoRA adapters that may be held in memory at once (resident)
};

struct PoolPlan {
  PoolOptions options;
  int64_t max_model_len = 0;          // resolved (capped to what fits when it was not given)
  bool ctx_capped = false;            // the default context did not fit and was cut to max_model_len
  MemoryPlan memory;                  // plan_memory at max_model_len x max_num_seqs (the cap)
  uint64_t usable = 0;                // available x utilization
  uint64_t weights_resident = 0;      // weights that must stay resident (not file-backed)
  uint64_t weights_mapped = 0;        // weights mapped from the file (pageable)
  uint64_t weights_cached = 0;        // of those, what fits in the page cache beside the pool
  uint64_t fixed = 0;                 // weights_resident + LoRA adapters + workspace + overhead
  uint64_t anon_room = 0;             // usable - fixed: most the pool may take without being killed
  uint64_t block_bytes = 0;           // one KV block (kv::kBlockTokens tokens)
  int64_t seq_blocks = 0;             // blocks of one sequence of max_model_len tokens
  int64_t cap_blocks = 0;             // seq_blocks x max_num_seqs
  int64_t kv_blocks = 0;              // the pool
  uint64_t kv_bytes = 0;              // kv_blocks x block_bytes (pass as EngineConfig::memory_budget)
  std::string limited_by;             // "max-model-len x max-num-seqs", "available memory", "--memory-budget"
  uint64_t weights_paged() const { return weights_mapped - weights_cached; }
  int64_t full_sequences() const { return seq_blocks > 0 ? kv_blocks / seq_blocks : 0; }
};

// The HTTP worker threads `moe serve` runs (a stream holds one for its whole answer): planned as
// overhead, so the plan and the server agree.
inline int serve_http_threads(int64_t max_num_seqs) {
  return static_cast<int>(std::max<int64_t>(128, 4 * max_num_seqs + 64));
}

// Plans the pool for `hp` with `weights` (the file's layout) and its parsed metadata. Throws moe::Error
// with the planner's answer (the longest context that fits one sequence, and the memory the asked one
// needs) when not even one sequence of an explicitly asked context fits, or nothing fits at all; and for
// bad options (utilization outside (0, 1], no available memory, a budget of no whole block).
PoolPlan plan_kv_pool(const model::HParams& hp, const WeightsLayout& weights, const Metadata& metadata,
                      const PoolOptions& options);

// The plan in a few lines ("memory: ..."), as `moe serve` prints it at start and `moe plan --serve`.
std::string describe_pool(const PoolPlan& plan);

}  // namespace moe::plan
