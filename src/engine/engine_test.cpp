// engine_test.cpp: the serving engine on the bundled default model (models/stories260K-moe.gguf, part
// of the repository): batch invariance, prefix caching, preemption under a small KV pool,
// cancellation, stop strings, JSON-constrained output, embeddings, and the request errors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/engine.h"
#include "grammar/grammar.h"
#include "model/hparams.h"
#include "testutil/fixtures.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace moe::engine {
namespace {

std::string default_model() { return moe::testing::source_dir() + "/models/stories260K-moe.gguf"; }

EngineConfig base_config() {
  EngineConfig c;
  c.model_path = default_model();
  c.n_threads = 2;
  c.max_num_seqs = 8;
  c.max_model_len = 256;
  c.max_num_batched_tokens = 64;
  return c;
}

struct Result {
  std::string text;
  std::vector<int32_t> ids;
  FinishReason reason = FinishReason::Error;
  Usage usage;
  int deltas = 0;
};

// Submits a request and returns a future of its whole result.
std::future<Result> start(Engine& e, Request r, uint64_t* id_out = nullptr, std::function<void(uint64_t)> on_first = nullptr) {
  auto state = std::make_shared<std::pair<Result, std::promise<Result>>>();
  auto fut = state->second.get_future();
  auto id_holder = std::make_shared<std::atomic<uint64_t>>(0);
  Callbacks cb;
  cb.on_delta = [state, id_holder, on_first](const Delta& d) {
    state->first.text += d.text;
    state->first.ids.insert(state->first.ids.end(), d.token_ids.begin(), d.token_ids.end());
    if (state->first.deltas++ == 0 && on_first) on_first(id_holder->load());
  };
  cb.on_finish = [state](FinishReason why, const Usage& u, const std::string&) {
    state->first.reason = why;
    state->first.usage = u;
    state->second.set_value(state->first);
  };
  uint64_t id = e.submit(std::move(r), std::move(cb));
  id_holder->store(id);
  if (id_out) *id_out = id;
  return fut;
}

Request greedy(const Engine& e, const std::string& prompt, int64_t max_tokens) {
  Request r;
  r.prompt = e.tokenizer().encode(prompt, true);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

TEST(Engine, GreedyTextIsTheSameAloneAndInABusyBatch) {
  Engine e(base_config());
  Result alone = start(e, greedy(e, "Once upon a time", 48)).get();
  ASSERT_EQ(alone.reason, FinishReason::Length);
  ASSERT_EQ(alone.ids.size(), 48u);
  EXPECT_FALSE(alone.text.empty());
  std::vector<std::future<Result>> others;
  const char* prompts[] = {"The cat", "Lily wanted", "One day", "Tom and Sue", "A big dog", "The sun", "Mom said"};
  for (int i = 0; i < 7; ++i) {
    Request r = greedy(e, prompts[i], 40 + i);
    r.sampling.temperature = 0.9f;
    r.sampling.seed = 100 + i;
    others.push_back(start(e, std::move(r)));
  }
  Result busy = start(e, greedy(e, "Once upon a time", 48)).get();
  for (auto& f : others) EXPECT_EQ(f.get().reason, FinishReason::Length);
  EXPECT_EQ(busy.ids, alone.ids);
  EXPECT_EQ(busy.text, alone.text);
}

TEST(Engine, SameSeedSameTextDifferentSeedDifferentText) {
  Engine e(base_config());
  auto run = [&](uint64_t seed) {
    Request r = greedy(e, "Once upon a time", 40);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    return start(e, std::move(r)).get().text;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Engine, PrefixCacheReusesBlocksAndGivesTheSameText) {
  EngineConfig c = base_config();
  Engine cached(c);
  c.enable_prefix_caching = false;
  Engine plain(c);
  std::string prefix = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";
  Result first = start(cached, greedy(cached, prefix + " One day", 24)).get();
  Result second = start(cached, greedy(cached, prefix + " Then", 24)).get();
  Result reference = start(plain, greedy(plain, prefix + " Then", 24)).get();
  EXPECT_EQ(first.usage.cached_prompt_tokens, 0);
  int64_t prompt = static_cast<int64_t>(cached.tokenizer().encode(prefix + " Then", true).size());
  EXPECT_GE(second.usage.cached_prompt_tokens, 16);
  EXPECT_LE(second.usage.cached_prompt_tokens, prompt - 1);
  EXPECT_EQ(second.ids, reference.ids);
  Stats s = cached.stats();
  EXPECT_GT(s.prefix_cache_hits, 0);
  EXPECT_GE(s.prefix_cache_queries, s.prefix_cache_hits);
  EXPECT_EQ(plain.stats().prefix_cache_hits, 0);
}

TEST(Engine, PreemptsWhenTheKvPoolRunsOutAndStillAnswersExactly) {
  EngineConfig c = base_config();
  c.enable_prefix_caching = false;
  c.max_model_len = 128;
  c.max_num_seqs = 6;
  const char* prompts[] = {"The cat", "Lily wanted", "One day", "Tom and Sue", "A big dog", "The sun"};
  std::vector<Result> expected;
  uint64_t block_bytes;
  {
    Engine reference(c);
    const auto& hp = reference.hparams();
    block_bytes = kv::kBlockTokens * kv::kv_bytes_per_token(c.kv_type, hp.n_layer, hp.n_head_kv, hp.head_dim);
    for (const char* p : prompts) expected.push_back(start(reference, greedy(reference, p, 80)).get());
  }
  // 12 blocks (192 tokens) for six sequences that grow to ~85 tokens each: some must be preempted.
  c.memory_budget = 12 * block_bytes;
  Engine e(c);
  EXPECT_EQ(e.stats().kv_blocks_total, 12);
  std::vector<std::future<Result>> futures;
  for (const char* p : prompts) futures.push_back(start(e, greedy(e, p, 80)));
  for (size_t i = 0; i < futures.size(); ++i) {
    Result r = futures[i].get();
    EXPECT_EQ(r.reason, FinishReason::Length) << prompts[i];
    EXPECT_EQ(r.ids, expected[i].ids) << prompts[i];
    EXPECT_EQ(r.text, expected[i].text) << prompts[i];
  }
  EXPECT_GT(e.stats().preemptions, 0);
  // Everything returns to the pool (stats are published at the end of the step that finished them).
  for (int i = 0; i < 200 && e.stats().kv_blocks_used != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
}

TEST(Engine, CancelStopsAtOnceAndFreesBlocks) {
  EngineConfig c = base_config();
  c.enable_prefix_caching = false;
  Engine e(c);
  std::promise<void> first_delta;
  auto fired = std::make_shared<std::atomic<bool>>(false);
  uint64_t id = 0;
  Request r = greedy(e, "Once upon a time", 200);
  r.ignore_eos = true;
  auto fut = start(e, std::move(r), &id, [&, fired](uint64_t) {
    if (!fired->exchange(true)) first_delta.set_value();
  });
  first_delta.get_future().wait();
  e.cancel(id);
  Result res = fut.get();
  EXPECT_EQ(res.reason, FinishReason::Cancelled);
  EXPECT_LT(res.usage.completion_tokens, 200);
  for (int i = 0; i < 100 && e.stats().kv_blocks_used != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(e.stats().kv_blocks_used, 0);
  // A queued request can be cancelled too, and cancelling an unknown id is harmless.
  e.cancel(987654);
  EXPECT_EQ(start(e, greedy(e, "The dog", 8)).get().reason, FinishReason::Length);
}

TEST(Engine, StopStringsEndTheTextBeforeTheStop) {
  Engine e(base_config());
  Result full = start(e, greedy(e, "Once upon a time", 64)).get();
  // Stop on a word the greedy story contains.
  size_t pos = full.text.find("She");
  ASSERT_NE(pos, std::string::npos) << full.text;
  Request r = greedy(e, "Once upon a time", 64);
  r.stop = {"She"};
  Result stopped = start(e, std::move(r)).get();
  EXPECT_EQ(stopped.reason, FinishReason::Stop);
  EXPECT_EQ(stopped.text, full.text.substr(0, pos));
}

TEST(Engine, JsonObjectModeAlwaysGivesOneCompleteObject) {
  Engine e(base_config());
  // Short budgets force the closing text early; long ones let the model write; greedy and sampled.
  for (int64_t max_tokens : {3, 8, 24, 120}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      Request r = greedy(e, "Once upon a time", max_tokens);
      r.sampling.temperature = seed == 1 ? 0.0f : 0.8f;
      r.sampling.seed = seed;
      r.sampling.json_object = true;
      Result res = start(e, std::move(r)).get();
      grammar::Matcher check(grammar::compile_gbnf(grammar::json_object_gbnf()));
      EXPECT_TRUE(check.advance(res.text)) << res.text;
      EXPECT_TRUE(check.complete()) << max_tokens << ": " << res.text;
      EXPECT_TRUE(res.reason == FinishReason::Stop || res.reason == FinishReason::Length) << res.text;
      auto parsed = nlohmann::json::parse(res.text, nullptr, false);
      EXPECT_TRUE(parsed.is_object()) << res.text;
      EXPECT_LE(res.usage.completion_tokens, max_tokens);
    }
  }
}

// Issue 12: with any budget that can hold an object at all, the output parses; a budget that cannot
// (one token, when the vocabulary has no "{}" token) is refused at submit rather than answered with
// something unparseable.
TEST(Engine, JsonObjectWithTinyBudgetsParsesOrIsRefused) {
  Engine e(base_config());
  for (int64_t max_tokens = 1; max_tokens <= 5; ++max_tokens) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      Request r = greedy(e, "Once upon a time", max_tokens);
      r.sampling.temperature = 1.0f;
      r.sampling.seed = seed;
      r.sampling.json_object = true;
      auto vocab_has_pair = !e.tokenizer().encode("{}", false).empty() && e.tokenizer().encode("{}", false).size() == 1;
      if (max_tokens == 1 && !vocab_has_pair) {
        EXPECT_THROW(e.submit(std::move(r), {}), Error);
        continue;
      }
      Result res = start(e, std::move(r)).get();
      auto parsed = nlohmann::json::parse(res.text, nullptr, false);
      EXPECT_TRUE(parsed.is_object()) << max_tokens << ": " << res.text;
      // "length" when the budget forced the closing, "stop" if the model closed it by itself.
      EXPECT_TRUE(res.reason == FinishReason::Stop || res.reason == FinishReason::Length) << res.text;
    }
  }
}

TEST(Engine, GrammarConstrainsAndStopsWhenNothingCanFollow) {
  Engine e(base_config());
  auto g = grammar::compile_gbnf(R"(root ::= "The " ("cat" | "dog") " sat" [.!])");
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    Request r = greedy(e, "Once upon a time", 64);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.sampling.grammar = g;
    Result res = start(e, std::move(r)).get();
    grammar::Matcher m(g);
    EXPECT_TRUE(m.advance(res.text) && m.complete()) << res.text;
    EXPECT_EQ(res.reason, FinishReason::Stop);
  }
  // logit_bias: +100 on one token makes greedy pick it every time; out-of-range ids are refused.
  Request r = greedy(e, "Once upon a time", 5);
  int32_t id = e.tokenizer().encode(" the", false).back();
  r.sampling.logit_bias = {{id, 100.0f}};
  r.ignore_eos = true;
  Result res = start(e, std::move(r)).get();
  std::string expect;
  for (int i = 0; i < 5; ++i) expect += e.tokenizer().decode_continuation(std::vector<int32_t>{id});
  EXPECT_EQ(res.text.size(), expect.size()) << res.text;
  Request bad = greedy(e, "x", 5);
  bad.sampling.logit_bias = {{e.tokenizer().n_vocab(), 1.0f}};
  EXPECT_THROW(e.submit(std::move(bad), {}), Error);
}

TEST(Engine, EmbeddingsAreUnitLengthAndDeterministic) {
  Engine e(base_config());
  auto a = e.embed(e.tokenizer().encode("The cat sat on the mat.", true));
  auto b = e.embed(e.tokenizer().encode("The cat sat on the mat.", true));
  auto c = e.embed(e.tokenizer().encode("A big red ball rolled away.", true));
  ASSERT_EQ(static_cast<int64_t>(a.size()), e.hparams().n_embd);
  double n = 0;
  for (float v : a) n += static_cast<double>(v) * v;
  EXPECT_NEAR(n, 1.0, 1e-5);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_THROW(e.embed({}), Error);
  EXPECT_THROW(e.embed({1, 99999}), Error);
}

// A stream that records, at each of its tokens, how many embedding tokens the engine has forwarded so
// far; `gate` (optional) runs on the engine thread after each token and may block it.
struct WatchedStream {
  std::mutex mu;
  std::vector<int64_t> embedded_at_token;
  std::vector<std::chrono::steady_clock::time_point> times;
};

std::future<FinishReason> start_watched(Engine& e, WatchedStream& w, int64_t max_tokens, std::function<void()> gate,
                                        uint64_t* id_out = nullptr) {
  Request r;
  r.prompt = e.tokenizer().encode("Once upon a time", true);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sampling.temperature = 0;
  auto done = std::make_shared<std::promise<FinishReason>>();
  auto fut = done->get_future();
  Callbacks cb;
  cb.on_delta = [&e, &w, gate](const Delta&) {
    {
      std::lock_guard<std::mutex> lock(w.mu);
      w.embedded_at_token.push_back(e.stats().embedding_tokens_total);
      w.times.push_back(std::chrono::steady_clock::now());
    }
    if (gate) gate();
  };
  cb.on_finish = [done](FinishReason why, const Usage&, const std::string&) { done->set_value(why); };
  uint64_t id = e.submit(std::move(r), std::move(cb));
  if (id_out) *id_out = id;
  return fut;
}

TEST(Engine, EmbeddingsAreChunkedAndInterleavedWithDecodeSteps) {
  // Four 240-token inputs with a step budget of 16 tokens: between two tokens of a running stream the
  // engine may forward at most one chunk (16 embedding tokens), never a whole input (240) as before.
  EngineConfig c = base_config();
  c.max_num_batched_tokens = 16;
  Engine e(c);
  std::vector<int32_t> input = e.tokenizer().encode(std::string(2000, 'a'), true);
  input.resize(240);
  std::vector<std::vector<int32_t>> inputs;
  for (int k = 0; k < 4; ++k) {
    inputs.push_back(input);
    inputs.back()[10] = static_cast<int32_t>(100 + k);
  }
  WatchedStream w;
  std::promise<void> first_token;
  std::atomic<bool> signalled{false};
  auto stream = start_watched(e, w, 200, [&] {
    if (!signalled.exchange(true)) first_token.set_value();
  });
  first_token.get_future().wait();
  std::vector<std::vector<float>> chunked;
  for (const auto& in : inputs) chunked.push_back(e.embed(in));
  EXPECT_EQ(stream.get(), FinishReason::Length);
  int64_t max_step = 0, overlapped = 0;
  double max_gap_ms = 0;
  for (size_t k = 1; k < w.embedded_at_token.size(); ++k) {
    const int64_t d = w.embedded_at_token[k] - w.embedded_at_token[k - 1];
    max_step = std::max(max_step, d);
    if (d > 0) ++overlapped;
    max_gap_ms = std::max(max_gap_ms, std::chrono::duration<double, std::milli>(w.times[k] - w.times[k - 1]).count());
  }
  EXPECT_EQ(e.stats().embedding_tokens_total, 4 * 240);
  EXPECT_GT(overlapped, 0) << "the embeddings ran while no token was generated: nothing was tested";
  EXPECT_LE(max_step, c.max_num_batched_tokens) << "an inter-token gap held " << max_step << " embedding tokens";
  std::printf("[ info ] max inter-token gap while embedding: %.2f ms, at most %lld embedding tokens per gap\n",
              max_gap_ms, static_cast<long long>(max_step));
  // Chunking changes how the work is cut, not the vectors: an engine with a budget of the whole input
  // gives the same ones (within float rounding of the attention over chunks).
  EngineConfig whole = base_config();
  whole.max_num_batched_tokens = 256;
  Engine e2(whole);
  for (size_t k = 0; k < inputs.size(); ++k) {
    std::vector<float> v = e2.embed(inputs[k]);
    ASSERT_EQ(v.size(), chunked[k].size());
    for (size_t j = 0; j < v.size(); ++j) EXPECT_NEAR(v[j], chunked[k][j], 1e-5f) << "input " << k << " dim " << j;
  }
}

TEST(Engine, AnAbandonedEmbeddingStopsBetweenChunks) {
  // The engine thread is held (inside a stream's token callback) right after the step that forwarded
  // the input's first chunk; the caller gives up then; the engine must drop the input before its next
  // chunk: exactly one chunk of the 240 tokens is ever computed, and a later request still works.
  EngineConfig c = base_config();
  c.max_num_batched_tokens = 16;
  Engine e(c);
  std::vector<int32_t> input = e.tokenizer().encode(std::string(2000, 'a'), true);
  input.resize(240);
  std::mutex mu;
  std::condition_variable cv;
  bool paused = false, released = false;
  WatchedStream w;
  uint64_t stream_id = 0;
  auto stream = start_watched(e, w, 200, [&] {
    if (e.stats().embedding_tokens_total == 0) return;
    std::unique_lock<std::mutex> lock(mu);
    if (released) return;
    paused = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  }, &stream_id);
  auto gone = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return paused;
  };
  std::optional<std::vector<float>> v = e.embed_until(input, gone);
  EXPECT_FALSE(v.has_value());
  {
    std::lock_guard<std::mutex> lock(mu);
    released = true;
  }
  cv.notify_all();
  // A request queued after the abandoned one completes, so the engine has dealt with it by then.
  EXPECT_EQ(e.embed(e.tokenizer().encode("A big red ball.", true)).size(), static_cast<size_t>(e.hparams().n_embd));
  const int64_t small = static_cast<int64_t>(e.tokenizer().encode("A big red ball.", true).size());
  EXPECT_EQ(e.stats().embedding_tokens_total, c.max_num_batched_tokens + small);
  e.cancel(stream_id);
  stream.get();
}

TEST(Engine, RejectsBadRequestsWithClearErrors) {
  EngineConfig c = base_config();
  c.max_model_len = 64;
  c.max_queue = 0;
  Engine e(c);
  Request too_long;
  too_long.prompt.assign(80, 5);
  try {
    e.submit(too_long, {});
    FAIL() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("17 more than the context of 64"), std::string::npos) << err.what();
  }
  Request bad_id;
  bad_id.prompt = {1, 100000};
  EXPECT_THROW(e.submit(bad_id, {}), Error);
  Request empty;
  EXPECT_THROW(e.submit(empty, {}), Error);
  Request ok = greedy(e, "Hi", 4);
  EXPECT_THROW(e.submit(ok, {}), QueueFull);  // max_queue 0: nothing may wait
  Request bad_sampling = greedy(e, "Hi", 4);
  bad_sampling.sampling.top_p = -1;
  EXPECT_THROW(e.submit(bad_sampling, {}), Error);
}

TEST(Engine, ChatPromptHasExactlyOneBos) {
  const nlohmann::ordered_json messages = {{{"role", "user"}, {"content", "Hi"}}};
  // ChatML (the fallback for this model) writes no BOS: the engine adds the model's one.
  Engine chatml(base_config());
  const auto& tok = chatml.tokenizer();
  auto ids = chatml.chat_prompt(messages);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 1);
  // Mixtral's template writes "<s>" itself, which must become that one BOS, not a second.
  EngineConfig c = base_config();
  c.chat_template_override = "mixtral";
  Engine mixtral(c);
  ids = mixtral.chat_prompt(messages);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 1);
  EXPECT_THROW(mixtral.chat_prompt({{{"role", "assistant"}, {"content", "first"}}}), Error);  // template raises
}

TEST(Engine, DrainFinishesInFlightRequests) {
  Engine e(base_config());
  std::vector<std::future<Result>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(start(e, greedy(e, "Once upon a time", 30)));
  e.drain();
  for (auto& f : fs) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    EXPECT_EQ(f.get().reason, FinishReason::Length);
  }
  EXPECT_THROW(e.submit(greedy(e, "Hi", 4), {}), Error);
}

}  // namespace
}  // namespace moe::engine
