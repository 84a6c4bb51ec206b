// scheduler_test.cpp: the Scheduler alone, without a model: a tiny KV pool (one layer, one head of 4
// f32 values per block row) and sequences that are only token lists. Admission under max_num_seqs,
// the chunked-prefill token budget with decode tokens first, preemption of the newest when the pool
// runs short, and prefix reuse are each checked against counts derived from the 16-token block size.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>

#include "engine/scheduler.h"

namespace moe::engine {
namespace {

constexpr int64_t B = kv::kBlockTokens;

kv::Geometry tiny_geometry() {
  kv::Geometry g;
  g.type = kv::KvType::F32;
  g.n_layer = 1;
  g.n_head_kv = 1;
  g.head_dim = 4;
  return g;
}

// Owns the sequences (as the engine does) and plays the engine's part after each step: commit the
// chunks and append one token to every sequence that sampled.
struct Harness {
  kv::Cache cache;
  Scheduler sched;
  std::vector<std::unique_ptr<ScheduledSequence>> seqs;

  Harness(int64_t n_blocks, SchedulerConfig cfg) : cache(tiny_geometry(), n_blocks), sched(cache, cfg) {}

  ScheduledSequence* add(int64_t n_prompt, int32_t first_token = 1) {
    auto s = std::make_unique<ScheduledSequence>();
    s->id = seqs.size() + 1;
    s->tokens.resize(static_cast<size_t>(n_prompt));
    std::iota(s->tokens.begin(), s->tokens.end(), first_token);
    s->n_prompt = n_prompt;
    sched.enqueue(s.get());
    seqs.push_back(std::move(s));
    return seqs.back().get();
  }
  std::vector<ScheduledChunk> step() {
    auto plan = sched.schedule();
    std::vector<bool> samples;
    for (const auto& c : plan) samples.push_back(c.samples());
    Scheduler::commit(plan);
    for (size_t i = 0; i < plan.size(); ++i)
      if (samples[i]) plan[i].seq->tokens.push_back(7);
    return plan;
  }
};

int64_t planned_tokens(const std::vector<ScheduledChunk>& plan) {
  int64_t n = 0;
  for (const auto& c : plan) n += c.end - c.begin;
  return n;
}

TEST(Scheduler, AdmitsAtMostMaxNumSeqsFirstComeFirstServed) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  cfg.max_num_batched_tokens = 1000;
  Harness h(64, cfg);
  auto* a = h.add(5);
  auto* b = h.add(6);
  auto* c = h.add(7);
  auto plan = h.step();
  ASSERT_EQ(h.sched.running().size(), 2u);
  EXPECT_EQ(h.sched.running()[0], a);
  EXPECT_EQ(h.sched.running()[1], b);
  ASSERT_EQ(h.sched.waiting().size(), 1u);
  EXPECT_EQ(h.sched.waiting().front(), c);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(planned_tokens(plan), 11);
  EXPECT_EQ(a->n_computed, 5);  // whole prompts, each then sampled a token
  EXPECT_EQ(a->tokens.size(), 6u);
  // When one finishes, the waiting one takes its slot.
  h.sched.release(a);
  EXPECT_EQ(a->slot, -1);
  plan = h.step();
  EXPECT_EQ(h.sched.running().size(), 2u);
  EXPECT_TRUE(h.sched.waiting().empty());
  EXPECT_GE(c->slot, 0);
  EXPECT_NE(c->slot, b->slot);
  // b decodes one token, c prefills its 7.
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].seq, b);
  EXPECT_EQ(plan[0].end - plan[0].begin, 1);
  EXPECT_EQ(plan[1].seq, c);
  EXPECT_EQ(plan[1].end - plan[1].begin, 7);
  EXPECT_EQ(h.sched.remove_waiting(12345), nullptr);
}

TEST(Scheduler, ChunkedPrefillStaysUnderTheTokenBudgetWithDecodeFirst) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 4;
  cfg.max_num_batched_tokens = 20;
  Harness h(64, cfg);
  auto* small = h.add(3);
  auto plan = h.step();  // small's prompt, whole
  ASSERT_EQ(plan.size(), 1u);
  auto* big = h.add(50);
  // Steps: small decodes 1 token each time; big gets the rest of the 20-token budget per step.
  int64_t big_done = 0;
  int steps = 0;
  while (big_done < 50) {
    plan = h.step();
    ++steps;
    ASSERT_LE(planned_tokens(plan), cfg.max_num_batched_tokens);
    ASSERT_EQ(plan.front().seq, small);  // decode first
    EXPECT_EQ(plan.front().end - plan.front().begin, 1);
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[1].seq, big);
    EXPECT_EQ(plan[1].begin, big_done);
    big_done = plan[1].end;
    // It samples (and so grows by one token) only after its last chunk.
    EXPECT_EQ(static_cast<int64_t>(big->tokens.size()), big_done == 50 ? 51 : 50);
  }
  // 50 prompt tokens at 19 per step: 19, 19, 12.
  EXPECT_EQ(steps, 3);
  EXPECT_EQ(big->n_computed, 50);
  EXPECT_EQ(static_cast<int64_t>(big->tokens.size()), 51);  // it sampled after its last chunk
}

TEST(Scheduler, PreemptsTheNewestWhenThePoolRunsShortAndRecomputesIt) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 3;
  cfg.max_num_batched_tokens = 1000;
  cfg.enable_prefix_caching = false;
  // 6 blocks. Three prompts of 2B-1 tokens are admitted (the pool is empty) and take 2 blocks each.
  Harness h(6, cfg);
  auto* a = h.add(2 * B - 1);
  auto* b = h.add(2 * B - 1);
  auto* c = h.add(2 * B - 1, 100);
  h.step();
  EXPECT_EQ(h.sched.running().size(), 3u);
  EXPECT_EQ(h.cache.n_used_blocks(), 6);
  // Position 2B-1 still fits their second block; position 2B needs a third block each.
  h.step();
  EXPECT_EQ(h.sched.preemptions(), 0);
  auto plan = h.step();
  // a and b take the 2 blocks that preempting c (the newest) freed.
  EXPECT_EQ(h.sched.preemptions(), 1);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].seq, a);
  EXPECT_EQ(plan[1].seq, b);
  ASSERT_EQ(h.sched.waiting().size(), 1u);
  EXPECT_EQ(h.sched.waiting().front(), c);
  EXPECT_EQ(c->n_computed, 0);
  EXPECT_EQ(c->slot, -1);
  EXPECT_EQ(h.cache.n_used_blocks(), 6);
  // c is not readmitted while its 2B+1 tokens plus a block do not fit (no thrashing).
  h.step();
  EXPECT_EQ(h.sched.running().size(), 2u);
  EXPECT_EQ(h.sched.preemptions(), 1);
  // Once the others are done it comes back and recomputes every token it had, prompt and generated.
  const int64_t had = static_cast<int64_t>(c->tokens.size());
  EXPECT_EQ(had, 2 * B + 1);
  h.sched.release(a);
  h.sched.release(b);
  EXPECT_EQ(h.cache.n_used_blocks(), 0);
  plan = h.step();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].seq, c);
  EXPECT_EQ(plan[0].begin, 0);
  EXPECT_EQ(plan[0].end, had);
  EXPECT_EQ(c->n_cached_prompt, 0);
}

TEST(Scheduler, MakeRoomNeverPreemptsTheSequenceItServesAndFailsWhenNothingIsLeft) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  cfg.enable_prefix_caching = false;
  Harness h(4, cfg);
  auto* a = h.add(B);
  h.step();
  EXPECT_FALSE(h.sched.make_room(5, a));  // only a runs; the pool has 4 blocks
  EXPECT_EQ(h.sched.running().size(), 1u);
  EXPECT_EQ(h.sched.preemptions(), 0);
  EXPECT_TRUE(h.sched.make_room(4, nullptr));  // a goes back to the queue
  EXPECT_EQ(h.sched.preemptions(), 1);
  EXPECT_TRUE(h.sched.running().empty());
  EXPECT_EQ(h.cache.n_used_blocks(), 0);
}

TEST(Scheduler, PrefixReuseSkipsCachedFullBlocksButNeverTheLastToken) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  cfg.max_num_batched_tokens = 1000;
  Harness h(32, cfg);
  auto* first = h.add(3 * B + 5);
  h.step();
  h.sched.release(first);  // its 3 full blocks go to the prefix cache
  EXPECT_EQ(h.sched.prefix_cache().size(), 3);
  // Same first 3*B+5 tokens: 3 blocks are reused, the remaining 5 tokens computed.
  auto* same = h.add(3 * B + 5);
  auto plan = h.step();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(same->n_cached_prompt, 3 * B);
  EXPECT_EQ(plan[0].begin, 3 * B);
  EXPECT_EQ(plan[0].end, 3 * B + 5);
  h.sched.release(same);
  // A prompt of exactly 2*B of the same tokens: only 1 block is reused, so its last token is computed.
  auto* exact = h.add(2 * B);
  plan = h.step();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(exact->n_cached_prompt, B);
  EXPECT_EQ(plan[0].begin, B);
  h.sched.release(exact);
  // Different tokens share nothing.
  auto* other = h.add(3 * B, 1000);
  plan = h.step();
  EXPECT_EQ(other->n_cached_prompt, 0);
  EXPECT_EQ(plan[0].begin, 0);
  EXPECT_EQ(h.sched.prefix_cache().hits(), 4);  // 3 blocks, then 1
  EXPECT_GT(h.sched.prefix_cache().queries(), h.sched.prefix_cache().hits());
  // With prefix caching off nothing is kept.
  cfg.enable_prefix_caching = false;
  Harness off(32, cfg);
  auto* x = off.add(3 * B + 5);
  off.step();
  off.sched.release(x);
  EXPECT_EQ(off.sched.prefix_cache().size(), 0);
  EXPECT_EQ(off.cache.n_used_blocks(), 0);
}

TEST(Scheduler, RejectsABadConfiguration) {
  kv::Cache cache(tiny_geometry(), 4);
  SchedulerConfig cfg;
  cfg.max_num_seqs = 0;
  EXPECT_ANY_THROW(Scheduler(cache, cfg));
  cfg.max_num_seqs = 1;
  cfg.max_num_batched_tokens = 0;
  EXPECT_ANY_THROW(Scheduler(cache, cfg));
}

}  // namespace
}  // namespace moe::engine
