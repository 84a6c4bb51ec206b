// engine.cpp: the serving loop. One thread owns the model, the KV cache and the prefix cache; other
// threads only touch the queues below under `mu`. Each step:
//   1. take cancellations and embedding jobs,
//   2. admit waiting requests while fewer than max_num_seqs run (reusing cached prefix blocks),
//   3. build one batch: a decode token for each running sequence that has finished its prompt, then
//      prompt chunks, all under max_num_batched_tokens; reserve KV blocks for it, evicting cached
//      prefixes and then preempting the newest sequences (recomputed later) when the pool is short,
//   4. forward, sample where a token is due, stream text out, finish sequences.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "engine/json_constraint.h"
#include "engine/prefix_cache.h"
#include "engine/stop_matcher.h"
#include "kv/cache.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread_pool.h"

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

// Known end-of-turn markers of chat templates; those that are single tokens of the vocabulary and
// appear in the template text stop generation like EOS.
const char* const kEndOfTurnMarkers[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

struct Sequence {
  uint64_t id = 0;
  int32_t slot = -1;                 // KV-cache sequence id while admitted
  Request req;
  Callbacks cb;
  std::vector<int32_t> tokens;       // prompt, then generated tokens
  int64_t n_prompt = 0;
  int64_t n_computed = 0;            // tokens whose K/V are in the cache
  int64_t n_cached_prompt = 0;       // prompt tokens taken from the prefix cache (first admission)
  int64_t n_generated = 0;
  bool admitted_once = false;
  std::unique_ptr<sampling::Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::unique_ptr<StopMatcher> stops;
  std::unique_ptr<JsonConstraint> json;
  Clock::time_point submitted;
  double ttft_s = -1;
  bool cancelled = false;
};

struct Engine::Impl {
  EngineConfig cfg;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<model::Model> model;
  tokenizer::Tokenizer tok;
  std::unique_ptr<tmpl::ChatTemplate> chat;
  std::vector<int32_t> eot_ids;
  std::vector<std::string> token_text;  // each id's own text (for logprobs and the JSON constraint)
  std::unique_ptr<kv::Cache> cache;
  std::unique_ptr<PrefixCache> prefix;
  int64_t max_len = 0;

  // Shared with other threads, under mu.
  mutable std::mutex mu;
  std::condition_variable cv;       // wakes the loop
  std::condition_variable idle_cv;  // wakes drain()
  std::deque<std::unique_ptr<Sequence>> waiting;
  std::unordered_set<uint64_t> cancel_requests;
  struct EmbedJob {
    std::vector<int32_t> tokens;
    std::promise<std::vector<float>> result;
  };
  std::deque<EmbedJob> embed_jobs;
  uint64_t next_id = 1;
  bool stopping = false;
  bool accepting = true;
  int64_t n_running_shared = 0;
  Stats shared_stats;

  // Loop-owned.
  std::vector<std::unique_ptr<Sequence>> running;
  std::vector<int32_t> free_slots;
  model::Batch batch;
  model::ForwardResult result;
  std::thread loop_thread;

  explicit Impl(const EngineConfig& c);
  ~Impl();
  void loop();
  bool step();
  void admit(std::unique_ptr<Sequence> s);
  void finish(Sequence& s, FinishReason r, const std::string& error = {});
  void release_slot(Sequence& s);
  bool make_room(int64_t blocks, const Sequence* keep);
  void run_embed_jobs(std::deque<EmbedJob>& jobs);
  void emit_token(Sequence& s, const sampling::Sampled& sampled, bool& done, FinishReason& why,
                  Delta::TokenRouting* routing = nullptr);
  void publish_stats();
};

Engine::Impl::Impl(const EngineConfig& c) : cfg(c) {
  if (cfg.max_num_seqs < 1 || cfg.max_num_seqs > 1024) fail("max_num_seqs must be in 1..1024, got ", cfg.max_num_seqs);
  if (cfg.max_num_batched_tokens < 1 || cfg.max_num_batched_tokens > (1 << 20))
    fail("max_num_batched_tokens must be in 1..1048576, got ", cfg.max_num_batched_tokens);
  if (cfg.max_queue < 0) fail("max_queue must not be negative");
  pool = std::make_unique<ThreadPool>(cfg.n_threads > 0 ? cfg.n_threads : physical_core_count());
  model::ModelOptions mo;
  mo.pool = pool.get();
  mo.max_batch_tokens = cfg.max_num_batched_tokens;
  model = model::Model::load(cfg.model_path, mo);
  tok = tokenizer::Tokenizer::from_gguf(model->file());
  const auto& hp = model->hparams();

  // Chat template: the override (a built-in name, a file, or template text), else the model's own,
  // else the ChatML built-in.
  std::string source;
  if (!cfg.chat_template_override.empty()) {
    if (auto b = tmpl::builtin_template(cfg.chat_template_override)) source = *b;
    else if (std::string f = read_text_file(cfg.chat_template_override); !f.empty()) source = f;
    else if (cfg.chat_template_override.find("{%") != std::string::npos || cfg.chat_template_override.find("{{") != std::string::npos)
      source = cfg.chat_template_override;
    else
      fail("chat template '", cfg.chat_template_override, "' is neither a built-in (",
           [] { std::string s; for (auto& n : tmpl::builtin_template_names()) s += (s.empty() ? "" : ", ") + n; return s; }(),
           "), a readable file, nor template text");
  } else if (auto t = model->file().get_string("tokenizer.chat_template")) {
    source = *t;
  } else {
    source = *tmpl::builtin_template("chatml");
    log_info("the model has no chat template; using the built-in 'chatml' (choose with --chat-template)");
  }
  chat = std::make_unique<tmpl::ChatTemplate>(source);
  for (const char* m : kEndOfTurnMarkers)
    if (source.find(m) != std::string::npos)
      if (auto id = tok.token_id(m)) eot_ids.push_back(*id);

  token_text.resize(static_cast<size_t>(tok.n_vocab()));
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    int32_t one[1] = {id};
    token_text[static_cast<size_t>(id)] = tok.decode_continuation(one);
  }

  // KV pool: the memory budget, or room for max_num_seqs sequences of max_model_len tokens.
  kv::Geometry g = model->kv_geometry(cfg.kv_type);
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
  prefix = std::make_unique<PrefixCache>(*cache);
  // Slots 0..max_num_seqs-1 hold running sequences; slot max_num_seqs is the embeddings' own.
  for (int32_t s = cfg.max_num_seqs - 1; s >= 0; --s) free_slots.push_back(s);
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
  for (auto& s : running) finish(*s, FinishReason::Cancelled);
  for (auto& s : waiting) finish(*s, FinishReason::Cancelled);
  for (auto& j : embed_jobs) j.result.set_exception(std::make_exception_ptr(Error("the engine is shutting down")));
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

void Engine::Impl::release_slot(Sequence& s) {
  if (s.slot < 0) return;
  if (cfg.enable_prefix_caching && cache->has_sequence(s.slot)) {
    // Keep the computed full blocks of this sequence's tokens for later requests.
    int64_t full = std::min<int64_t>(s.n_computed, static_cast<int64_t>(s.tokens.size())) / kv::kBlockTokens;
    prefix->insert(s.tokens, cache->block_table(s.slot), full);
  }
  cache->free_sequence(s.slot);
  free_slots.push_back(s.slot);
  s.slot = -1;
}

// Frees at least `blocks` blocks: first cached prefixes nobody uses, then running sequences from the
// newest (their work is recomputed when they are admitted again). Never preempts `keep`.
bool Engine::Impl::make_room(int64_t blocks, const Sequence* keep) {
  if (cache->can_allocate(blocks)) return true;
  if (prefix->evict_until_free(blocks)) return true;
  while (!cache->can_allocate(blocks)) {
    auto victim = std::find_if(running.rbegin(), running.rend(), [&](const auto& s) { return s.get() != keep; });
    if (victim == running.rend()) return false;
    std::unique_ptr<Sequence> s = std::move(*victim);
    running.erase(std::next(victim).base());
    // Recompute from scratch on readmission: the prompt becomes prompt + what was generated so far.
    cache->free_sequence(s->slot);
    free_slots.push_back(s->slot);
    s->slot = -1;
    s->n_computed = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      shared_stats.preemptions++;
      waiting.push_front(std::move(s));
    }
    prefix->evict_until_free(blocks);
  }
  return true;
}

void Engine::Impl::admit(std::unique_ptr<Sequence> s) {
  s->slot = free_slots.back();
  free_slots.pop_back();
  // Reuse cached full blocks of the known tokens, always leaving at least the last token to compute
  // (its logits are needed) and never the block that token falls in (it will be written).
  int64_t known = static_cast<int64_t>(s->tokens.size());
  if (cfg.enable_prefix_caching) {
    int64_t max_blocks = (known - 1) / kv::kBlockTokens;
    auto blocks = prefix->match(s->tokens, max_blocks);
    for (int32_t b : blocks) cache->append_block(s->slot, b);
    s->n_computed = static_cast<int64_t>(blocks.size()) * kv::kBlockTokens;
    if (s->n_computed > 0) cache->set_length(s->slot, s->n_computed);
  }
  if (!s->admitted_once) {
    s->n_cached_prompt = std::min(s->n_computed, s->n_prompt);
    s->admitted_once = true;
  }
  running.push_back(std::move(s));
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
    if (s.json) s.json->advance(token_text[static_cast<size_t>(id)]);
    d.text = s.stops->push(s.decoder->push(id));
    d.token_ids.push_back(id);
    if (s.req.sampling.top_logprobs >= 0) {
      d.chosen.push_back({id, token_text[static_cast<size_t>(id)], sampled.logprob});
      std::vector<TokenLogprob> top;
      for (const auto& t : sampled.top) top.push_back({t.id, token_text[static_cast<size_t>(t.id)], t.logprob});
      d.top.push_back(std::move(top));
    }
    if (routing) d.routing.push_back(std::move(*routing));  // routing trace (opt-in)
  }
  if (is_stop_token || s.stops->stopped()) {
    done = true;
    why = FinishReason::Stop;
  } else if (s.n_generated >= s.req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= max_len) {
    done = true;
    why = FinishReason::Length;
  }
  if ((!d.text.empty() || !d.token_ids.empty()) && s.cb.on_delta) s.cb.on_delta(d);
}

void Engine::Impl::run_embed_jobs(std::deque<EmbedJob>& jobs) {
  const int32_t slot = cfg.max_num_seqs;  // reserved for embeddings
  const int64_t n_embd = model->hparams().n_embd;
  for (auto& job : jobs) {
    try {
      int64_t n = static_cast<int64_t>(job.tokens.size());
      if (n == 0) throw Error("the input is empty");
      if (n > max_len) throw Error(cat("the input is ", n, " tokens, ", n - max_len, " more than the context of ", max_len));
      if (!make_room(cache->blocks_needed(slot, n), nullptr))
        throw Error("not enough KV memory for the input");
      model::Batch b;
      for (int64_t i = 0; i < n; ++i) b.add(job.tokens[static_cast<size_t>(i)], static_cast<int32_t>(i), slot, true);
      model::ForwardOptions fo;
      fo.logits = false;
      fo.hidden = true;
      model::ForwardResult r;
      model->forward(b, *cache, r, fo);
      cache->free_sequence(slot);
      std::vector<double> sum(static_cast<size_t>(n_embd), 0.0);
      for (int64_t o = 0; o < r.n_outputs; ++o)
        for (int64_t j = 0; j < n_embd; ++j) sum[static_cast<size_t>(j)] += r.hidden[static_cast<size_t>(o * n_embd + j)];
      double norm = 0;
      for (double v : sum) norm += v * v;
      norm = std::sqrt(norm);
      std::vector<float> out(static_cast<size_t>(n_embd));
      for (int64_t j = 0; j < n_embd; ++j) out[static_cast<size_t>(j)] = static_cast<float>(norm > 0 ? sum[static_cast<size_t>(j)] / norm : 0.0);
      job.result.set_value(std::move(out));
    } catch (...) {
      if (cache->has_sequence(slot)) cache->free_sequence(slot);
      job.result.set_exception(std::current_exception());
    }
  }
}

void Engine::Impl::publish_stats() {
  std::lock_guard<std::mutex> lock(mu);
  shared_stats.running = static_cast<int64_t>(running.size());
  shared_stats.waiting = static_cast<int64_t>(waiting.size());
  shared_stats.kv_blocks_total = cache->n_blocks();
  shared_stats.kv_blocks_used = cache->n_used_blocks();
  shared_stats.prefix_cache_queries = prefix->queries();
  shared_stats.prefix_cache_hits = prefix->hits();
  shared_stats.expert_tokens = model->expert_token_counts();
}

// One engine step; returns false when there was nothing to do.
bool Engine::Impl::step() {
  std::unordered_set<uint64_t> cancels;
  std::deque<EmbedJob> embeds;
  {
    std::lock_guard<std::mutex> lock(mu);
    cancels.swap(cancel_requests);
    embeds.swap(embed_jobs);
  }
  for (auto it = running.begin(); it != running.end();) {
    if (cancels.count((*it)->id)) {
      release_slot(**it);
      finish(**it, FinishReason::Cancelled);
      it = running.erase(it);
    } else {
      ++it;
    }
  }
  if (!embeds.empty()) run_embed_jobs(embeds);

  // Admission, first come first served, only while the pool can hold the request's known tokens
  // plus one more block without preempting anybody: admitting into a full pool would just preempt
  // a running sequence, which would be readmitted and preempt again (thrashing).
  while (static_cast<int>(running.size()) < cfg.max_num_seqs) {
    std::unique_ptr<Sequence> s;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (waiting.empty()) break;
      int64_t need = kv::Cache::blocks_for_tokens(static_cast<int64_t>(waiting.front()->tokens.size())) + 1;
      if (!running.empty() && !cache->can_allocate(need) && !prefix->evict_until_free(need)) break;
      s = std::move(waiting.front());
      waiting.pop_front();
    }
    admit(std::move(s));
  }
  if (running.empty()) {
    publish_stats();
    return !embeds.empty();
  }

  // Build the batch: decode tokens first (latency), then prompt chunks (throughput).
  batch.clear();
  int64_t budget = cfg.max_num_batched_tokens;
  struct Planned { Sequence* s; int64_t begin, end; };
  std::vector<Planned> plan;
  // make_room never preempts the sequence it makes room for, so `s` keeps its slot.
  auto plan_for = [&](Sequence& s) {
    int64_t todo = static_cast<int64_t>(s.tokens.size()) - s.n_computed;
    if (todo <= 0 || budget <= 0) return;
    int64_t take = std::min(todo, budget);
    if (!make_room(cache->blocks_needed(s.slot, s.n_computed + take), &s)) return;
    cache->reserve(s.slot, s.n_computed + take);
    plan.push_back({&s, s.n_computed, s.n_computed + take});
    budget -= take;
  };
  // Snapshot the pointers: make_room may move sequences from `running` back to `waiting`.
  std::vector<Sequence*> decoding, prefilling;
  for (auto& s : running) (static_cast<int64_t>(s->tokens.size()) - s->n_computed == 1 ? decoding : prefilling).push_back(s.get());
  auto still_running = [&](Sequence* p) {
    return std::any_of(running.begin(), running.end(), [&](const auto& s) { return s.get() == p; });
  };
  for (Sequence* s : decoding)
    if (still_running(s)) plan_for(*s);
  for (Sequence* s : prefilling)
    if (still_running(s)) plan_for(*s);
  // Drop plans of sequences preempted after they were planned.
  plan.erase(std::remove_if(plan.begin(), plan.end(), [&](const Planned& p) { return !still_running(p.s); }), plan.end());
  if (plan.empty()) {
    publish_stats();
    return true;
  }
  for (const auto& p : plan)
    for (int64_t i = p.begin; i < p.end; ++i)
      batch.add(p.s->tokens[static_cast<size_t>(i)], static_cast<int32_t>(i), p.s->slot,
                i == p.end - 1 && p.end == static_cast<int64_t>(p.s->tokens.size()));

  // Routing trace (opt-in per request): the model copies each output's top-k only when one asks.
  model::ForwardOptions fwd;
  fwd.routing = std::any_of(plan.begin(), plan.end(), [](const Planned& p) { return p.s->req.routing_trace; });
  try {
    model->forward(batch, *cache, result, fwd);
  } catch (const std::exception& e) {
    // Should not happen (the batch is built valid); fail its sequences rather than the server.
    log_error("forward failed: ", e.what());
    for (const auto& p : plan) p.s->cancelled = true;
    for (auto it = running.begin(); it != running.end();) {
      if ((*it)->cancelled) {
        release_slot(**it);
        finish(**it, FinishReason::Error, e.what());
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    publish_stats();
    return true;
  }

  // Sample for every sequence whose last known token was in the batch.
  const int64_t n_vocab = model->hparams().n_vocab;
  std::vector<float> masked;
  int64_t out_row = 0;
  std::vector<Sequence*> done_seqs;
  std::vector<FinishReason> done_why;
  for (const auto& p : plan) {
    Sequence& s = *p.s;
    s.n_computed = p.end;
    if (p.end != static_cast<int64_t>(s.tokens.size())) continue;  // a prompt chunk: no output yet
    const float* logits = result.logits.data() + out_row * n_vocab;
    ++out_row;
    std::span<const float> row(logits, static_cast<size_t>(n_vocab));
    if (s.json) {
      // Constrained decoding: only tokens that keep the output a prefix of one JSON object; once the
      // object is complete, only end-of-sequence.
      // When the tokens left are no more than the characters needed to close the object, only
      // tokens that spell a prefix of the closing text are allowed (one character per token at worst).
      masked.assign(logits, logits + n_vocab);
      const float ninf = -std::numeric_limits<float>::infinity();
      const bool complete = s.json->complete();
      const int64_t left = std::min(s.req.max_tokens - s.n_generated, max_len - static_cast<int64_t>(s.tokens.size()));
      const std::string closing = complete ? std::string() : s.json->closing_suffix();
      const bool force_close = !complete && left <= static_cast<int64_t>(closing.size());
      bool any = false;
      for (int64_t id = 0; id < n_vocab; ++id) {
        const std::string& t = token_text[static_cast<size_t>(id)];
        bool ok = complete      ? id == tok.eos_id()
                  : force_close ? !t.empty() && closing.compare(0, t.size(), t) == 0
                                : !t.empty() && s.json->accepts(t);
        if (!ok) masked[static_cast<size_t>(id)] = ninf;
        any = any || ok;
      }
      if (!any) masked.assign(logits, logits + n_vocab);  // a vocabulary without the needed characters
      row = std::span<const float>(masked.data(), masked.size());
    }
    sampling::Sampled sampled = s.sampler->sample(row, s.tokens);
    bool done = false;
    FinishReason why = FinishReason::Stop;
    Delta::TokenRouting routing;  // routing trace (opt-in): output row out_row - 1 of this step
    if (s.req.routing_trace) {
      const auto& hp = model->hparams();
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
  for (size_t i = 0; i < done_seqs.size(); ++i) {
    Sequence* s = done_seqs[i];
    auto it = std::find_if(running.begin(), running.end(), [&](const auto& r) { return r.get() == s; });
    release_slot(*s);
    finish(*s, done_why[i]);
    running.erase(it);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& p : plan)  // prompt tokens computed this step (recomputation counts again)
      shared_stats.prompt_tokens_total += std::max<int64_t>(0, std::min(p.end, p.s->n_prompt) - p.begin);
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
        return stopping || !waiting.empty() || !running.empty() || !embed_jobs.empty() || !cancel_requests.empty();
      });
      if (stopping) return;
      n_running_shared = static_cast<int64_t>(running.size());
    }
    step();
    {
      std::lock_guard<std::mutex> lock(mu);
      n_running_shared = static_cast<int64_t>(running.size());
      if (running.empty() && waiting.empty()) idle_cv.notify_all();
    }
  }
}

// ---------------------------------------------------------------------------------------------------

Engine::Engine(const EngineConfig& config) : impl_(std::make_unique<Impl>(config)) {}
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
  s->sampler = std::make_unique<sampling::Sampler>(sp);
  s->decoder = std::make_unique<tokenizer::StreamDecoder>(m.tok, true);
  s->stops = std::make_unique<StopMatcher>(request.stop);
  if (request.sampling.json_object) s->json = std::make_unique<JsonConstraint>();
  s->req = std::move(request);
  s->cb = std::move(callbacks);
  s->submitted = Clock::now();
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.accepting) throw Error("the engine is shutting down");
    if (static_cast<int64_t>(m.waiting.size()) >= m.cfg.max_queue) throw QueueFull();
    id = s->id = m.next_id++;
    m.waiting.push_back(std::move(s));
  }
  m.cv.notify_all();
  return id;
}

void Engine::cancel(uint64_t id) {
  Impl& m = *impl_;
  std::unique_ptr<Sequence> queued;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = std::find_if(m.waiting.begin(), m.waiting.end(), [&](const auto& s) { return s->id == id; });
    if (it != m.waiting.end()) {
      queued = std::move(*it);
      m.waiting.erase(it);
    } else {
      m.cancel_requests.insert(id);
    }
  }
  if (queued) m.finish(*queued, FinishReason::Cancelled);
  m.cv.notify_all();
}

std::vector<float> Engine::embed(const std::vector<int32_t>& tokens) {
  Impl& m = *impl_;
  for (int32_t t : tokens)
    if (t < 0 || t >= m.tok.n_vocab()) throw Error(cat("token id ", t, " is out of range [0, ", m.tok.n_vocab(), ")"));
  std::future<std::vector<float>> f;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.accepting) throw Error("the engine is shutting down");
    m.embed_jobs.push_back({tokens, {}});
    f = m.embed_jobs.back().result.get_future();
  }
  m.cv.notify_all();
  return f.get();
}

void Engine::drain() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  m.accepting = false;
  m.idle_cv.wait(lock, [&] { return m.waiting.empty() && m.n_running_shared == 0 && m.embed_jobs.empty(); });
}

Stats Engine::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Stats s = impl_->shared_stats;
  s.waiting = static_cast<int64_t>(impl_->waiting.size());
  return s;
}

const tokenizer::Tokenizer& Engine::tokenizer() const { return impl_->tok; }
const tmpl::ChatTemplate& Engine::chat_template() const { return *impl_->chat; }
const model::HParams& Engine::hparams() const { return impl_->model->hparams(); }
int64_t Engine::max_model_len() const { return impl_->max_len; }
const EngineConfig& Engine::config() const { return impl_->cfg; }
const std::vector<int32_t>& Engine::end_of_turn_ids() const { return impl_->eot_ids; }

std::vector<int32_t> Engine::chat_prompt(const nlohmann::ordered_json& messages) const {
  const tokenizer::Tokenizer& tok = impl_->tok;
  const int32_t bos = tok.bos_id();
  tmpl::RenderOptions opts;
  opts.add_generation_prompt = true;
  opts.bos_token = bos >= 0 ? tok.piece(bos) : "";
  opts.eos_token = tok.eos_id() >= 0 ? tok.piece(tok.eos_id()) : "";
  std::vector<int32_t> ids = tok.encode(impl_->chat->render(messages, opts), /*add_bos=*/false, /*parse_special=*/true);
  if (tok.add_bos() && bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
  return ids;
}

}  // namespace moe::engine
