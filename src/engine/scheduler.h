// scheduler.h: the per-step decision of the serving engine, apart from the model so it can be tested
// alone. It holds the waiting queue and the running set (non-owning: the engine owns the requests) and
// the KV bookkeeping (block tables in kv::Cache, the prefix cache). Each call to schedule():
//   1. admits waiting sequences, first come first served, while fewer than max_num_seqs run and the
//      pool can hold the newcomer's known tokens plus one block (admitting into a full pool would only
//      preempt somebody who is then readmitted: thrashing), reusing cached full prefix blocks;
//   2. plans one batch: a decode token for each running sequence whose prompt is done, then prompt
//      chunks, under max_num_batched_tokens, reserving KV blocks for each; when the pool is short it
//      evicts unused cached prefixes, then preempts the newest running sequences (they go back to the
//      front of the queue and are recomputed from their tokens when readmitted).
// It is not thread-safe: the engine calls it under its own mutex.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "engine/prefix_cache.h"
#include "kv/cache.h"

namespace moe::engine {

// What the scheduler knows of one request.
struct ScheduledSequence {
  uint64_t id = 0;
  int32_t slot = -1;              // KV-cache sequence id while admitted
  std::vector<int32_t> tokens;    // prompt, then generated tokens
  int64_t n_prompt = 0;
  int64_t n_computed = 0;         // tokens whose K/V are in the cache
  int64_t n_cached_prompt = 0;    // prompt tokens taken from the prefix cache at first admission
  bool admitted_once = false;
  uint64_t prefix_key = 0;        // what its K/V depend on besides the tokens: its LoRA adapter's id (0:
                                  // the base); the prefix cache shares blocks only within one key
};

struct SchedulerConfig {
  int max_num_seqs = 16;                 // running sequences at once (KV slots 0..max_num_seqs-1)
  int64_t max_num_batched_tokens = 512;  // tokens per step
  bool enable_prefix_caching = true;
};

// Tokens [begin, end) of `seq` go into this step's batch; the step samples for it when end reaches the
// sequence's last known token.
struct ScheduledChunk {
  ScheduledSequence* seq;
  int64_t begin, end;
  bool samples() const { return end == static_cast<int64_t>(seq->tokens.size()); }
};

class Scheduler {
 public:
  Scheduler(kv::Cache& cache, const SchedulerConfig& config);

  void enqueue(ScheduledSequence* s);                // to the back of the queue
  ScheduledSequence* remove_waiting(uint64_t id);    // the queued sequence, or null
  // A running sequence is done (finished, cancelled or failed): its computed full blocks stay in the
  // prefix cache, its slot and its blocks are freed, and it leaves the running set.
  void release(ScheduledSequence* s);
  // Admits what fits and plans this step's batch (KV reserved for every chunk). Empty when nothing runs
  // or no chunk could get KV memory.
  std::vector<ScheduledChunk> schedule();
  // The chunks were computed: their tokens' K/V are now in the cache.
  static void commit(const std::vector<ScheduledChunk>& chunks);
  // Frees at least `blocks` blocks: unused cached prefixes first, then running sequences from the newest
  // (preempted). Never preempts `keep`. False when even that cannot free enough.
  bool make_room(int64_t blocks, const ScheduledSequence* keep);

  const std::vector<ScheduledSequence*>& running() const { return running_; }
  const std::deque<ScheduledSequence*>& waiting() const { return waiting_; }
  int64_t preemptions() const { return preemptions_; }
  // A KV slot of its own for one-off passes (embeddings), never given to a sequence.
  int32_t spare_slot() const { return cfg_.max_num_seqs; }
  const PrefixCache& prefix_cache() const { return prefix_; }
  const kv::Cache& cache() const { return cache_; }

 private:
  void admit(ScheduledSequence* s);
  bool is_running(const ScheduledSequence* s) const;

  kv::Cache& cache_;
  SchedulerConfig cfg_;
  PrefixCache prefix_;
  std::deque<ScheduledSequence*> waiting_;
  std::vector<ScheduledSequence*> running_;  // admission order: the back is the newest
  std::vector<int32_t> free_slots_;
  int64_t preemptions_ = 0;
};

}  // namespace moe::engine
