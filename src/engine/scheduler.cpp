// scheduler.cpp: admission, batch planning and preemption (see scheduler.h).
#include "engine/scheduler.h"

#include <algorithm>

#include "util/error.h"

namespace moe::engine {

Scheduler::Scheduler(kv::Cache& cache, const SchedulerConfig& config) : cache_(cache), cfg_(config), prefix_(cache) {
  if (cfg_.max_num_seqs < 1) fail("max_num_seqs must be at least 1, got ", cfg_.max_num_seqs);
  if (cfg_.max_num_batched_tokens < 1) fail("max_num_batched_tokens must be at least 1, got ", cfg_.max_num_batched_tokens);
  for (int32_t s = cfg_.max_num_seqs - 1; s >= 0; --s) free_slots_.push_back(s);
}

void Scheduler::enqueue(ScheduledSequence* s) { waiting_.push_back(s); }

ScheduledSequence* Scheduler::remove_waiting(uint64_t id) {
  auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const ScheduledSequence* s) { return s->id == id; });
  if (it == waiting_.end()) return nullptr;
  ScheduledSequence* s = *it;
  waiting_.erase(it);
  return s;
}

bool Scheduler::is_running(const ScheduledSequence* s) const {
  return std::find(running_.begin(), running_.end(), s) != running_.end();
}

void Scheduler::release(ScheduledSequence* s) {
  if (s->slot >= 0) {
    if (cfg_.enable_prefix_caching && cache_.has_sequence(s->slot)) {
      // Keep the computed full blocks of this sequence's tokens for later requests.
      int64_t full = std::min<int64_t>(s->n_computed, static_cast<int64_t>(s->tokens.size())) / kv::kBlockTokens;
      prefix_.insert(s->tokens, cache_.block_table(s->slot), full, s->prefix_key);
    }
    cache_.free_sequence(s->slot);
    free_slots_.push_back(s->slot);
    s->slot = -1;
  }
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
}

bool Scheduler::make_room(int64_t blocks, const ScheduledSequence* keep) {
  if (cache_.can_allocate(blocks)) return true;
  if (prefix_.evict_until_free(blocks)) return true;
  while (!cache_.can_allocate(blocks)) {
    auto victim = std::find_if(running_.rbegin(), running_.rend(), [&](const ScheduledSequence* s) { return s != keep; });
    if (victim == running_.rend()) return false;
    ScheduledSequence* s = *victim;
    running_.erase(std::next(victim).base());
    // Recompute from scratch on readmission: the prompt becomes prompt + what was generated so far.
    cache_.free_sequence(s->slot);
    free_slots_.push_back(s->slot);
    s->slot = -1;
    s->n_computed = 0;
    ++preemptions_;
    waiting_.push_front(s);
    prefix_.evict_until_free(blocks);
  }
  return true;
}

void Scheduler::admit(ScheduledSequence* s) {
  s->slot = free_slots_.back();
  free_slots_.pop_back();
  // Reuse cached full blocks of the known tokens, always leaving at least the last token to compute
  // (its logits are needed) and never the block that token falls in (it will be written).
  int64_t known = static_cast<int64_t>(s->tokens.size());
  if (cfg_.enable_prefix_caching) {
    int64_t max_blocks = (known - 1) / kv::kBlockTokens;
    auto blocks = prefix_.match(s->tokens, max_blocks, s->prefix_key);
    for (int32_t b : blocks) cache_.append_block(s->slot, b);
    s->n_computed = static_cast<int64_t>(blocks.size()) * kv::kBlockTokens;
    if (s->n_computed > 0) cache_.set_length(s->slot, s->n_computed);
  }
  if (!s->admitted_once) {
    s->n_cached_prompt = std::min(s->n_computed, s->n_prompt);
    s->admitted_once = true;
  }
  running_.push_back(s);
}

std::vector<ScheduledChunk> Scheduler::schedule() {
  while (static_cast<int>(running_.size()) < cfg_.max_num_seqs && !waiting_.empty()) {
    int64_t need = kv::Cache::blocks_for_tokens(static_cast<int64_t>(waiting_.front()->tokens.size())) + 1;
    if (!running_.empty() && !cache_.can_allocate(need) && !prefix_.evict_until_free(need)) break;
    ScheduledSequence* s = waiting_.front();
    waiting_.pop_front();
    admit(s);
  }
  std::vector<ScheduledChunk> plan;
  if (running_.empty()) return plan;

  // Decode tokens first (latency), then prompt chunks (throughput). make_room never preempts the
  // sequence it makes room for, so `s` keeps its slot.
  int64_t budget = cfg_.max_num_batched_tokens;
  auto plan_for = [&](ScheduledSequence& s) {
    int64_t todo = static_cast<int64_t>(s.tokens.size()) - s.n_computed;
    if (todo <= 0 || budget <= 0) return;
    int64_t take = std::min(todo, budget);
    if (!make_room(cache_.blocks_needed(s.slot, s.n_computed + take), &s)) return;
    cache_.reserve(s.slot, s.n_computed + take);
    plan.push_back({&s, s.n_computed, s.n_computed + take});
    budget -= take;
  };
  // Snapshot the pointers: make_room may move sequences from running_ back to waiting_.
  std::vector<ScheduledSequence*> decoding, prefilling;
  for (ScheduledSequence* s : running_)
    (static_cast<int64_t>(s->tokens.size()) - s->n_computed == 1 ? decoding : prefilling).push_back(s);
  for (ScheduledSequence* s : decoding)
    if (is_running(s)) plan_for(*s);
  for (ScheduledSequence* s : prefilling)
    if (is_running(s)) plan_for(*s);
  // Drop plans of sequences preempted after they were planned.
  plan.erase(std::remove_if(plan.begin(), plan.end(), [&](const ScheduledChunk& c) { return !is_running(c.seq); }),
             plan.end());
  return plan;
}

void Scheduler::commit(const std::vector<ScheduledChunk>& chunks) {
  for (const auto& c : chunks) c.seq->n_computed = c.end;
}

}  // namespace moe::engine
