// engine.cpp: the serving loop. One thread owns the model's use, the KV cache and the scheduler's
// running sequences; other threads (submit, cancel, embed, stats) touch the queues and the scheduler's
// waiting queue only under `mu`. Each step:
//   1. take cancellations, and run one chunk of the oldest embedding job (at most a step's token budget:
//      a long embedding input is spread over several steps, interleaved with decode, and a job whose
//      caller has gone is dropped between chunks),
//   2. ask the Scheduler for this step's chunks (it admits, reserves KV, preempts; scheduler.h),
//   3. forward the batch, sample where a token is due (each sequence's Sampler runs its chain of logits
//      processors), stream text out, finish sequences.
// Callbacks are never called under `mu`, so a callback may submit the next request.
#include "engine/engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "engine/scheduler.h"
#include "engine/stop_matcher.h"
#include "grammar/grammar.h"
#include "hf/hf.h"
#include "kv/cache.h"
#include "model/lora.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "error";
}

namespace {

using Clock = std::chrono::steady_clock;

const EngineConfig& checked(const EngineConfig& cfg) {
  if (cfg.max_num_seqs < 1 || cfg.max_num_seqs > 1024) fail("max_num_seqs must be in 1..1024, got ", cfg.max_num_seqs);
  if (cfg.max_num_batched_tokens < 1 || cfg.max_num_batched_tokens > (1 << 20))
    fail("max_num_batched_tokens must be in 1..1048576, got ", cfg.max_num_batched_tokens);
  if (cfg.max_queue < 0) fail("max_queue must not be negative");
  return cfg;
}

}  // namespace

// A request inside the engine: what the scheduler knows plus sampling and streaming state.
struct Sequence : ScheduledSequence {
  Request req;
  Callbacks cb;
  int64_t n_generated = 0;
  std::unique_ptr<sampling::Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::unique_ptr<StopMatcher> stops;
  grammar::GrammarProcessor* grammar = nullptr;  // owned by `sampler` when the output is constrained
  Clock::time_point submitted;
  double ttft_s = -1;
};

// Every ScheduledSequence the engine's scheduler holds is a Sequence.
static Sequence& as_sequence(ScheduledSequence* s) { return static_cast<Sequence&>(*s); }

struct Engine::Impl {
  EngineConfig cfg;
  std::shared_ptr<const LoadedModel> lm;
  model::Model& model;
  const tokenizer::Tokenizer& tok;
  std::vector<int32_t> eot_ids;
  // Built on first use (a request with logprobs or a grammar), so engines that never need them (moe
  // run) do not hold a copy of the vocabulary.
  std::once_flag token_text_once, grammar_vocab_once;
  std::shared_ptr<const std::vector<std::string>> token_text_;  // each id's own text
  std::shared_ptr<const grammar::Vocabulary> grammar_vocab_;
  std::unique_ptr<kv::Cache> cache;
  int64_t max_len = 0;

  // Shared with other threads, under mu.
  mutable std::mutex mu;
  std::condition_variable cv;       // wakes the loop
  std::condition_variable idle_cv;  // wakes drain()
  std::unique_ptr<Scheduler> sched;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> live;  // every queued or running request
  std::unordered_set<uint64_t> cancel_requests;
  // An embedding input, computed one chunk per step on the spare KV slot. The caller's thread may set
  // `cancelled` at any time; the loop checks it before each chunk. The front of embed_jobs is the one
  // in progress (it stays queued until finished, so drain() waits for it).
  struct EmbedJob {
    std::vector<int32_t> tokens;
    std::promise<std::vector<float>> result;
    std::atomic<bool> cancelled{false};
    // Loop-owned progress.
    int64_t done = 0;          // tokens already forwarded
    std::vector<double> sum;   // of their final hidden states
  };
  std::deque<std::shared_ptr<EmbedJob>> embed_jobs;
  uint64_t next_id = 1;
  bool stopping = false;
  bool accepting = true;
  int64_t n_running_shared = 0;
  Stats shared_stats;

  // Loop-owned.
  model::Batch batch;
  model::ForwardResult result;
  std::thread loop_thread;

  Impl(std::shared_ptr<const LoadedModel> m, const EngineConfig& c);
  ~Impl();
  void loop();
  bool step();
  void finish(Sequence& s, FinishReason r, const std::string& error = {});
  void retire(Sequence& s, FinishReason r, const std::string& error = {});
  bool run_embed_chunk();
  void emit_token(Sequence& s, const sampling::Sampled& sampled, bool& done, FinishReason& why,
                  Delta::TokenRouting* routing = nullptr);
  void publish_stats();
  const std::shared_ptr<const std::vector<std::string>>& token_text();
  const std::shared_ptr<const grammar::Vocabulary>& grammar_vocabulary();
};

const std::shared_ptr<const std::vector<std::string>>& Engine::Impl::token_text() {
  std::call_once(token_text_once, [&] {
    auto texts = std::make_shared<std::vector<std::string>>(static_cast<size_t>(tok.n_vocab()));
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
      int32_t one[1] = {id};
      (*texts)[static_cast<size_t>(id)] = tok.decode_continuation(one);
    }
    token_text_ = std::move(texts);
  });
  return token_text_;
}

const std::shared_ptr<const grammar::Vocabulary>& Engine::Impl::grammar_vocabulary() {
  std::call_once(grammar_vocab_once, [&] { grammar_vocab_ = std::make_shared<const grammar::Vocabulary>(*token_text()); });
  return grammar_vocab_;
}

namespace {
// response_format json_object: one grammar for every request, compiled once.
std::shared_ptr<const grammar::Grammar> json_object_grammar() {
  static const std::shared_ptr<const grammar::Grammar> g = grammar::compile_gbnf(grammar::json_object_gbnf());
  return g;
}
}  // namespace

Engine::Impl::Impl(std::shared_ptr<const LoadedModel> m, const EngineConfig& c)
    : cfg(checked(c)), lm(std::move(m)), model(*lm->model), tok(*lm->tokenizer), eot_ids(lm->prompts->end_of_turn_ids()) {
  const auto& hp = model.hparams();
  // A Hugging Face checkpoint's generation_config.json may list several EOS ids (hf.h: kEosIdsKey);
  // those beyond the tokenizer's EOS stop generation like it (they join the end-of-turn ids).
  if (auto ids = model.file().get_int_array(hf::kEosIdsKey))
    for (const int64_t id : *ids)
      if (id >= 0 && id < tok.n_vocab() && id != tok.eos_id() &&
          std::find(eot_ids.begin(), eot_ids.end(), id) == eot_ids.end())
        eot_ids.push_back(static_cast<int32_t>(id));

  // KV pool: the memory budget, or room for max_num_seqs sequences of max_model_len tokens.
  kv::Geometry g = model.kv_geometry(cfg.kv_type);
  int64_t want_len = cfg.max_model_len > 0 ? cfg.max_model_len : hp.n_ctx_train;
  if (want_len <= 0) want_len = 4096;
  int64_t n_blocks = cfg.memory_budget > 0
                         ? kv::Cache::blocks_for_bytes(g, cfg.memory_budget)
                         : kv::Cache::blocks_for_tokens(want_len) * cfg.max_num_seqs;
  if (n_blocks < 1) fail("the memory budget of ", cfg.memory_budget, " bytes holds no KV block (one block is ",
                         kv::Cache::bytes_per_block(g), " bytes)");
  cache = std::make_unique<kv::Cache>(g, n_blocks);
  max_len = std::min<int64_t>(want_len, n_blocks * kv::kBlockTokens);
  if (cfg.max_model_len > 0 && max_len < cfg.max_model_len)
    log_warn("max_model_len ", cfg.max_model_len, " does not fit the KV pool; capped at ", max_len);
  SchedulerConfig sc;
  sc.max_num_seqs = cfg.max_num_seqs;
  sc.max_num_batched_tokens = cfg.max_num_batched_tokens;
  sc.enable_prefix_caching = cfg.enable_prefix_caching;
  sched = std::make_unique<Scheduler>(*cache, sc);
  publish_stats();
  loop_thread = std::thread([this] { loop(); });
}

Engine::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (loop_thread.joinable()) loop_thread.join();
  // Whatever is left gets a Cancelled finish, so no client waits forever.
  for (ScheduledSequence* s : sched->running()) finish(as_sequence(s), FinishReason::Cancelled);
  for (ScheduledSequence* s : sched->waiting()) finish(as_sequence(s), FinishReason::Cancelled);
  for (auto& j : embed_jobs) j->result.set_exception(std::make_exception_ptr(Error("the engine is shutting down")));
}

void Engine::Impl::finish(Sequence& s, FinishReason r, const std::string& error) {
  if (s.decoder && s.stops && r != FinishReason::Cancelled && r != FinishReason::Error) {
    std::string tail = s.stops->push(s.decoder->flush());
    tail += s.stops->flush();
    if (!tail.empty() && s.cb.on_delta) {
      Delta d;
      d.text = std::move(tail);
      s.cb.on_delta(d);
    }
  }
  Usage u;
  u.prompt_tokens = s.n_prompt;
  u.completion_tokens = s.n_generated;
  u.cached_prompt_tokens = s.n_cached_prompt;
  u.time_to_first_token_s = s.ttft_s < 0 ? 0 : s.ttft_s;
  if (s.cb.on_finish) s.cb.on_finish(r, u, error);
  s.cb = {};
}

// A running sequence is over: its blocks go back (full ones to the prefix cache), its client hears why,
// and the engine forgets it.
void Engine::Impl::retire(Sequence& s, FinishReason r, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu);
    sched->release(&s);
  }
  finish(s, r, error);
  std::unique_ptr<Sequence> gone;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(s.id);
    gone = std::move(it->second);
    live.erase(it);
  }
}

void Engine::Impl::emit_token(Sequence& s, const sampling::Sampled& sampled, bool& done, FinishReason& why,
                              Delta::TokenRouting* routing) {
  int32_t id = sampled.id;
  s.tokens.push_back(id);
  s.n_generated++;
  if (s.ttft_s < 0) s.ttft_s = std::chrono::duration<double>(Clock::now() - s.submitted).count();
  bool is_stop_token = (!s.req.ignore_eos && id == tok.eos_id()) ||
                       std::find(s.req.stop_token_ids.begin(), s.req.stop_token_ids.end(), id) != s.req.stop_token_ids.end() ||
                       (!s.req.ignore_eos && std::find(eot_ids.begin(), eot_ids.end(), id) != eot_ids.end());
  Delta d;
  if (!is_stop_token) {
    d.text = s.stops->push(s.decoder->push(id));
    d.token_ids.push_back(id);
    if (s.req.sampling.top_logprobs >= 0) {
      const std::vector<std::string>& text = *token_text();
      d.chosen.push_back({id, text[static_cast<size_t>(id)], sampled.logprob});
      std::vector<TokenLogprob> top;
      for (const auto& t : sampled.top) top.push_back({t.id, text[static_cast<size_t>(t.id)], t.logprob});
      d.top.push_back(std::move(top));
    }
    if (routing) d.routing.push_back(std::move(*routing));  // routing trace (opt-in)
  }
  if (is_stop_token || s.stops->stopped()) {
    done = true;
    why = FinishReason::Stop;
  } else if (s.grammar && s.grammar->complete()) {
    // Nothing can follow: done. "length" when the budget forced the grammar's shortest completion.
    done = true;
    why = s.grammar->budget_forced() ? FinishReason::Length : FinishReason::Stop;
  } else if (s.n_generated >= s.req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= max_len) {
    done = true;
    why = FinishReason::Length;
  }
  if ((!d.text.empty() || !d.token_ids.empty()) && s.cb.on_delta) s.cb.on_delta(d);
}

// One chunk of the oldest embedding job: at most max_num_batched_tokens tokens, so that a 2,000-token
// input (or 64 of them) holds the loop for a step's worth of work at a time, not for the whole request.
// Returns false when there was no job.
bool Engine::Impl::run_embed_chunk() {
  std::shared_ptr<EmbedJob> job;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (embed_jobs.empty()) return false;
    job = embed_jobs.front();
  }
  const int32_t slot = sched->spare_slot();
  const int64_t n_embd = model.hparams().n_embd;
  const int64_t n = static_cast<int64_t>(job->tokens.size());
  bool finished = false;
  int64_t forwarded = 0;
  std::vector<float> out;
  std::exception_ptr failure;
  try {
    if (job->cancelled.load()) throw Error("the embedding was cancelled: its caller has gone");
    if (job->done == 0) {
      if (n == 0) throw Error("the input is empty");
      if (n > max_len) throw Error(cat("the input is ", n, " tokens, ", n - max_len, " more than the context of ", max_len));
      std::lock_guard<std::mutex> lock(mu);
      // The whole input's blocks are taken at the start, so the chunks that follow cannot run short.
      if (!sched->make_room(cache->blocks_needed(slot, n), nullptr)) throw Error("not enough KV memory for the input");
      cache->reserve(slot, n);
      job->sum.assign(static_cast<size_t>(n_embd), 0.0);
    }
    const int64_t end = std::min(n, job->done + static_cast<int64_t>(cfg.max_num_batched_tokens));
    model::Batch b;
    for (int64_t i = job->done; i < end; ++i) b.add(job->tokens[static_cast<size_t>(i)], static_cast<int32_t>(i), slot, true);
    model::ForwardOptions fo;
    fo.logits = false;
    fo.hidden = true;
    model::ForwardResult r;
    model.forward(b, *cache, r, fo);
    for (int64_t o = 0; o < r.n_outputs; ++o)
      for (int64_t j = 0; j < n_embd; ++j)
        job->sum[static_cast<size_t>(j)] += r.hidden[static_cast<size_t>(o * n_embd + j)];
    forwarded = end - job->done;
    job->done = end;
    if (job->done == n) {
      cache->free_sequence(slot);
      double norm = 0;
      for (double v : job->sum) norm += v * v;
      norm = std::sqrt(norm);
      out.resize(static_cast<size_t>(n_embd));
      for (int64_t j = 0; j < n_embd; ++j)
        out[static_cast<size_t>(j)] = static_cast<float>(norm > 0 ? job->sum[static_cast<size_t>(j)] / norm : 0.0);
      finished = true;
    }
  } catch (...) {
    if (cache->has_sequence(slot)) cache->free_sequence(slot);
    failure = std::current_exception();
    finished = true;
  }
  {
    // Counted and dequeued before the caller hears of it, so what it reads next is up to date.
    std::lock_guard<std::mutex> lock(mu);
    shared_stats.embedding_tokens_total += forwarded;
    if (finished) embed_jobs.pop_front();
  }
  if (failure) job->result.set_exception(failure);
  else if (finished) job->result.set_value(std::move(out));
  return true;
}

void Engine::Impl::publish_stats() {
  std::lock_guard<std::mutex> lock(mu);
  shared_stats.running = static_cast<int64_t>(sched->running().size());
  shared_stats.waiting = static_cast<int64_t>(sched->waiting().size());
  shared_stats.kv_blocks_total = cache->n_blocks();
  shared_stats.kv_blocks_used = cache->n_used_blocks();
  shared_stats.prefix_cache_queries = sched->prefix_cache().queries();
  shared_stats.prefix_cache_hits = sched->prefix_cache().hits();
  shared_stats.preemptions = sched->preemptions();
  shared_stats.expert_tokens = model.expert_token_counts();
}

// One engine step; returns false when there was nothing to do.
bool Engine::Impl::step() {
  std::unordered_set<uint64_t> cancels;
  std::vector<Sequence*> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu);
    cancels.swap(cancel_requests);
    for (ScheduledSequence* s : sched->running())
      if (cancels.count(s->id)) cancelled.push_back(&as_sequence(s));
  }
  for (Sequence* s : cancelled) retire(*s, FinishReason::Cancelled);
  const bool embedded = run_embed_chunk();

  std::vector<ScheduledChunk> plan;
  bool any_running;
  {
    std::lock_guard<std::mutex> lock(mu);
    plan = sched->schedule();
    any_running = !sched->running().empty();
  }
  if (!any_running) {
    publish_stats();
    return embedded;
  }
  if (plan.empty()) {
    publish_stats();
    return true;
  }
  batch.clear();
  for (const auto& c : plan)
    for (int64_t i = c.begin; i < c.end; ++i)
      batch.add(c.seq->tokens[static_cast<size_t>(i)], static_cast<int32_t>(i), c.seq->slot, i == c.end - 1 && c.samples(),
                as_sequence(c.seq).req.adapter.get());

  // Routing trace (opt-in per request): the model copies each output's top-k only when one asks.
  model::ForwardOptions fwd;
  fwd.routing = std::any_of(plan.begin(), plan.end(), [](const ScheduledChunk& c) { return as_sequence(c.seq).req.routing_trace; });
  try {
    model.forward(batch, *cache, result, fwd);
  } catch (const std::exception& e) {
    // Should not happen (the batch is built valid); fail its sequences rather than the server.
    log_error("forward failed: ", e.what());
    for (const auto& c : plan) retire(as_sequence(c.seq), FinishReason::Error, e.what());
    publish_stats();
    return true;
  }

  // Sample for every sequence whose last known token was in the batch (flags taken before any token
  // is appended).
  std::vector<bool> samples;
  for (const auto& c : plan) samples.push_back(c.samples());
  Scheduler::commit(plan);
  const int64_t n_vocab = model.hparams().n_vocab;
  int64_t out_row = 0;
  std::vector<Sequence*> done_seqs;
  std::vector<FinishReason> done_why;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (!samples[i]) continue;  // a prompt chunk: no output yet
    Sequence& s = as_sequence(plan[i].seq);
    std::span<const float> row(result.logits.data() + out_row * n_vocab, static_cast<size_t>(n_vocab));
    ++out_row;
    const int64_t left = std::min(s.req.max_tokens - s.n_generated, max_len - static_cast<int64_t>(s.tokens.size()));
    sampling::Sampled sampled = s.sampler->sample(row, s.tokens, left);
    bool done = false;
    FinishReason why = FinishReason::Stop;
    Delta::TokenRouting routing;  // routing trace (opt-in): output row out_row - 1 of this step
    if (s.req.routing_trace) {
      const auto& hp = model.hparams();
      routing.n_layer = static_cast<int32_t>(hp.n_layer);
      routing.k = static_cast<int32_t>(std::max<int64_t>(hp.n_expert_used, 1));
      const auto per = static_cast<size_t>(routing.n_layer) * static_cast<size_t>(routing.k);
      const auto at = static_cast<size_t>(out_row - 1) * per;
      routing.experts.assign(result.routing_experts.begin() + at, result.routing_experts.begin() + at + per);
      routing.weights.assign(result.routing_weights.begin() + at, result.routing_weights.begin() + at + per);
    }
    emit_token(s, sampled, done, why, s.req.routing_trace ? &routing : nullptr);
    if (done) {
      done_seqs.push_back(&s);
      done_why.push_back(why);
    }
  }
  for (size_t i = 0; i < done_seqs.size(); ++i) retire(*done_seqs[i], done_why[i]);
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& c : plan)  // prompt tokens computed this step (recomputation counts again)
      shared_stats.prompt_tokens_total += std::max<int64_t>(0, std::min(c.end, c.seq->n_prompt) - c.begin);
    shared_stats.generated_tokens_total += out_row;
  }
  publish_stats();
  return true;
}

void Engine::Impl::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] {
        return stopping || !sched->waiting().empty() || !sched->running().empty() || !embed_jobs.empty() ||
               !cancel_requests.empty();
      });
      if (stopping) return;
      n_running_shared = static_cast<int64_t>(sched->running().size());
    }
    step();
    {
      std::lock_guard<std::mutex> lock(mu);
      n_running_shared = static_cast<int64_t>(sched->running().size());
      if (sched->running().empty() && sched->waiting().empty()) idle_cv.notify_all();
    }
  }
}

// ---------------------------------------------------------------------------------------------------

Engine::Engine(std::shared_ptr<const LoadedModel> model, const EngineConfig& config)
    : impl_(std::make_unique<Impl>(std::move(model), config)) {}

LoadOptions load_options(const EngineConfig& config) {
  LoadOptions lo;
  lo.n_threads = config.n_threads;
  lo.max_batch_tokens = config.max_num_batched_tokens;
  lo.chat_template_override = config.chat_template_override;
  lo.device = config.device;
  lo.gpu_memory = config.gpu_memory;
  return lo;
}

Engine::Engine(const EngineConfig& config) {
  impl_ = std::make_unique<Impl>(load_model(config.model_path, load_options(checked(config))), config);
}

Engine::~Engine() = default;

uint64_t Engine::submit(Request request, Callbacks callbacks) {
  Impl& m = *impl_;
  int64_t n = static_cast<int64_t>(request.prompt.size());
  if (n == 0) throw Error("the prompt is empty");
  if (n >= m.max_len)
    throw Error(cat("the prompt is ", n, " tokens, ", n - m.max_len + 1, " more than the context of ", m.max_len,
                    " tokens allows (at least one token must be left to generate)"));
  for (int32_t t : request.prompt)
    if (t < 0 || t >= m.tok.n_vocab()) throw Error(cat("token id ", t, " is out of range [0, ", m.tok.n_vocab(), ")"));
  if (request.max_tokens < 1) throw Error("max_tokens must be at least 1");
  if (request.adapter && !(request.adapter->geometry() == model::LoraGeometry::of(m.model.hparams())))
    throw Error(cat("the LoRA adapter '", request.adapter->name(), "' was made for a base of another shape (or Q/K row order)"));
  sampling::Params sp;
  sp.temperature = request.sampling.temperature;
  sp.top_k = request.sampling.top_k;
  sp.top_p = request.sampling.top_p;
  sp.min_p = request.sampling.min_p;
  sp.repeat_penalty = request.sampling.repetition_penalty;
  sp.presence_penalty = request.sampling.presence_penalty;
  sp.frequency_penalty = request.sampling.frequency_penalty;
  sp.n_top_logprobs = std::max(0, request.sampling.top_logprobs);
  sp.repeat_last_n = request.sampling.repeat_last_n;
  sp.seed = request.sampling.seed ? *request.sampling.seed : std::random_device{}();
  sampling::Sampler::validate(sp);

  auto s = std::make_unique<Sequence>();
  s->tokens = request.prompt;
  s->n_prompt = n;
  s->prefix_key = request.adapter ? request.adapter->id() : 0;
  s->sampler = std::make_unique<sampling::Sampler>(sp);
  for (const auto& [id, bias] : request.sampling.logit_bias) {
    if (id < 0 || id >= m.tok.n_vocab()) throw Error(cat("logit_bias: token id ", id, " is out of range [0, ", m.tok.n_vocab(), ")"));
    if (!(bias >= -100.0f && bias <= 100.0f)) throw Error(cat("logit_bias: the bias of token ", id, " must be in [-100, 100]"));
  }
  if (!request.sampling.logit_bias.empty())
    s->sampler->add_constraint(std::make_unique<sampling::LogitBiasProcessor>(request.sampling.logit_bias));
  std::shared_ptr<const grammar::Grammar> g = request.sampling.grammar;
  if (!g && request.sampling.json_object) g = json_object_grammar();
  if (g) {
    // The tokens that end the sequence may only come where the grammar accepts.
    std::vector<int32_t> ends = request.stop_token_ids;
    if (!request.ignore_eos) {
      if (m.tok.eos_id() >= 0) ends.push_back(m.tok.eos_id());
      ends.insert(ends.end(), m.eot_ids.begin(), m.eot_ids.end());
    }
    auto p = std::make_unique<grammar::GrammarProcessor>(g, m.grammar_vocabulary(), std::move(ends));
    // A budget too small for any sentence of the grammar cannot give a parseable answer: refuse it.
    constexpr int64_t kCheckBelow = 8;
    if (request.max_tokens < kCheckBelow) {
      int64_t need = p->min_tokens(request.max_tokens);
      if (need > request.max_tokens)
        throw Error(cat("max_tokens ", request.max_tokens, " is too small for the requested output format: its shortest "
                        "valid output takes more tokens"));
    }
    s->grammar = p.get();
    s->sampler->add_constraint(std::move(p));
  }
  s->decoder = std::make_unique<tokenizer::StreamDecoder>(m.tok, true);
  s->stops = std::make_unique<StopMatcher>(request.stop);
  s->req = std::move(request);
  s->cb = std::move(callbacks);
  s->submitted = Clock::now();
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.accepting) throw Error("the engine is shutting down");
    if (static_cast<int64_t>(m.sched->waiting().size()) >= m.cfg.max_queue) throw QueueFull();
    id = s->id = m.next_id++;
    m.sched->enqueue(s.get());
    m.live.emplace(id, std::move(s));
  }
  m.cv.notify_all();
  return id;
}

void Engine::cancel(uint64_t id) {
  Impl& m = *impl_;
  std::unique_ptr<Sequence> queued;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.sched->remove_waiting(id)) {
      auto it = m.live.find(id);
      queued = std::move(it->second);
      m.live.erase(it);
    } else {
      m.cancel_requests.insert(id);
    }
  }
  if (queued) m.finish(*queued, FinishReason::Cancelled);
  m.cv.notify_all();
}

std::vector<float> Engine::embed(const std::vector<int32_t>& tokens) { return *embed_until(tokens, {}); }

std::optional<std::vector<float>> Engine::embed_until(const std::vector<int32_t>& tokens,
                                                      const std::function<bool()>& cancelled) {
  Impl& m = *impl_;
  for (int32_t t : tokens)
    if (t < 0 || t >= m.tok.n_vocab()) throw Error(cat("token id ", t, " is out of range [0, ", m.tok.n_vocab(), ")"));
  auto job = std::make_shared<Impl::EmbedJob>();
  job->tokens = tokens;
  std::future<std::vector<float>> f = job->result.get_future();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.accepting) throw Error("the engine is shutting down");
    m.embed_jobs.push_back(job);
  }
  m.cv.notify_all();
  if (cancelled) {
    while (f.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
      if (cancelled()) {
        job->cancelled = true;  // the loop drops it before its next chunk and frees its KV blocks
        m.cv.notify_all();
        return std::nullopt;
      }
    }
  }
  return f.get();
}

void Engine::drain() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  m.accepting = false;
  m.idle_cv.wait(lock, [&] { return m.sched->waiting().empty() && m.n_running_shared == 0 && m.embed_jobs.empty(); });
}

Stats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stats s = impl_->shared_stats;
  s.waiting = static_cast<int64_t>(impl_->sched->waiting().size());
  s.preemptions = impl_->sched->preemptions();
  return s;
}

const LoadedModel& Engine::model() const { return *impl_->lm; }
const tokenizer::Tokenizer& Engine::tokenizer() const { return impl_->tok; }
const model::HParams& Engine::hparams() const { return impl_->model.hparams(); }
int64_t Engine::max_model_len() const { return impl_->max_len; }
const EngineConfig& Engine::config() const { return impl_->cfg; }
const PromptBuilder& Engine::prompt_builder() const { return *impl_->lm->prompts; }
const tmpl::ChatTemplate& Engine::chat_template() const { return prompt_builder().chat_template(); }
std::vector<int32_t> Engine::chat_prompt(const nlohmann::ordered_json& messages) const {
  return prompt_builder().chat_prompt(messages);
}
const std::vector<int32_t>& Engine::end_of_turn_ids() const { return impl_->eot_ids; }

}  // namespace moe::engine
