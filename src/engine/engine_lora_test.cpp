// engine_lora_test.cpp: LoRA adapters through the serving engine, on the bundled default model with
// random adapters built in memory (bind_lora): a sequence's greedy text with an adapter is the same alone
// and inside a busy step that mixes other adapters and the base; the prefix cache shares blocks within
// one adapter and never between adapters (or an adapter and the base); an adapter of another base is
// refused at submit.
#include <gtest/gtest.h>

#include <future>
#include <random>

#include "engine/engine.h"
#include "model/lora.h"
#include "quant/quant.h"
#include "testutil/fixtures.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace moe::engine {
namespace {

EngineConfig config() {
  EngineConfig c;
  c.model_path = moe::testing::source_dir() + "/models/stories260K-moe.gguf";
  c.n_threads = 2;
  c.max_num_seqs = 8;
  c.max_model_len = 256;
  c.max_num_batched_tokens = 64;
  return c;
}

// A random F16 adapter of rank r on q, v, o and every expert's w1/w2/w3, kept with its bytes.
struct RandomAdapter {
  std::vector<std::vector<uint8_t>> storage;
  std::shared_ptr<const model::LoraAdapter> adapter;
};

RandomAdapter random_adapter(const model::HParams& hp, int64_t r, uint32_t seed, const std::string& name) {
  RandomAdapter out;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<model::LoraTensor> tensors;
  auto add = [&](const std::string& n, int64_t rows, int64_t cols, float scale) {
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (float& x : v) x = scale * normal(rng);
    std::vector<uint8_t> bytes(v.size() * 2);
    quant::quantize_row(GgmlType::F16, v.data(), bytes.data(), rows * cols);
    out.storage.push_back(std::move(bytes));
    tensors.push_back({n, GgmlType::F16, {rows, cols}, out.storage.back().data(), out.storage.back().size()});
  };
  const int64_t E = hp.n_embd, QD = hp.n_head * hp.head_dim, KD = hp.n_head_kv * hp.head_dim, F = hp.n_ff;
  auto pair = [&](const std::string& m, int64_t in, int64_t o) {
    add(m + ".lora_A.weight", r, in, 1.0f / std::sqrt(static_cast<float>(in)));
    add(m + ".lora_B.weight", o, r, 0.5f);
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = cat("base_model.model.model.layers.", l, ".");
    pair(p + "self_attn.q_proj", E, QD);
    pair(p + "self_attn.v_proj", E, KD);
    pair(p + "self_attn.o_proj", QD, E);
    for (int64_t e = 0; e < hp.n_expert; ++e) {
      const std::string x = cat(p, "block_sparse_moe.experts.", e, ".");
      pair(x + "w1", E, F);
      pair(x + "w3", E, F);
      pair(x + "w2", F, E);
    }
  }
  model::LoraConfig c;
  c.rank = r;
  c.alpha = static_cast<double>(r);
  auto w = model::bind_lora(hp, c, tensors, model::QkRowOrder::Interleaved, name);
  out.adapter = std::make_shared<model::LoraAdapter>(name, std::vector<model::LoraAdapter::Part>{{w, w->scale}});
  return out;
}

struct Result {
  std::vector<int32_t> ids;
  FinishReason reason = FinishReason::Error;
  Usage usage;
};

std::future<Result> start(Engine& e, Request r) {
  auto state = std::make_shared<std::pair<Result, std::promise<Result>>>();
  auto fut = state->second.get_future();
  Callbacks cb;
  cb.on_delta = [state](const Delta& d) { state->first.ids.insert(state->first.ids.end(), d.token_ids.begin(), d.token_ids.end()); };
  cb.on_finish = [state](FinishReason why, const Usage& u, const std::string&) {
    state->first.reason = why;
    state->first.usage = u;
    state->second.set_value(state->first);
  };
  e.submit(std::move(r), std::move(cb));
  return fut;
}

Request greedy(const Engine& e, const std::string& prompt, int64_t n, std::shared_ptr<const model::LoraAdapter> a) {
  Request r;
  r.prompt = e.tokenizer().encode(prompt, true);
  r.max_tokens = n;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  r.adapter = std::move(a);
  return r;
}

TEST(EngineLora, GreedyTextWithAnAdapterIsTheSameAloneAndBesideOthers) {
  Engine e(config());
  const RandomAdapter a = random_adapter(e.hparams(), 4, 1, "a"), b = random_adapter(e.hparams(), 8, 2, "b");
  const Result base = start(e, greedy(e, "Once upon a time", 32, nullptr)).get();
  const Result alone = start(e, greedy(e, "Once upon a time", 32, a.adapter)).get();
  ASSERT_EQ(alone.reason, FinishReason::Length);
  EXPECT_NE(alone.ids, base.ids);  // the adapter changes the text
  std::vector<std::future<Result>> others;
  const char* prompts[] = {"The cat", "Lily wanted", "One day", "Tom and Sue", "A big dog"};
  for (int i = 0; i < 5; ++i) {
    Request r = greedy(e, prompts[i], 30 + i, i % 3 == 0 ? nullptr : (i % 3 == 1 ? a.adapter : b.adapter));
    r.sampling.temperature = 0.8f;
    r.sampling.seed = 50 + i;
    others.push_back(start(e, std::move(r)));
  }
  auto busy_a = start(e, greedy(e, "Once upon a time", 32, a.adapter));
  auto busy_base = start(e, greedy(e, "Once upon a time", 32, nullptr));
  for (auto& f : others) EXPECT_EQ(f.get().reason, FinishReason::Length);
  EXPECT_EQ(busy_a.get().ids, alone.ids);
  EXPECT_EQ(busy_base.get().ids, base.ids);
}

TEST(EngineLora, PrefixCacheNeverSharesBlocksBetweenAdapters) {
  EngineConfig c = config();
  Engine cached(c);
  c.enable_prefix_caching = false;
  Engine plain(c);
  const RandomAdapter a = random_adapter(cached.hparams(), 4, 3, "a"), b = random_adapter(cached.hparams(), 4, 4, "b");
  const std::string prompt =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";
  const Result a1 = start(cached, greedy(cached, prompt, 16, a.adapter)).get();
  const Result b1 = start(cached, greedy(cached, prompt, 16, b.adapter)).get();
  const Result base1 = start(cached, greedy(cached, prompt, 16, nullptr)).get();
  const Result a2 = start(cached, greedy(cached, prompt, 16, a.adapter)).get();
  EXPECT_EQ(a1.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(b1.usage.cached_prompt_tokens, 0);     // a's blocks are not b's
  EXPECT_EQ(base1.usage.cached_prompt_tokens, 0);  // nor the base's
  EXPECT_GE(a2.usage.cached_prompt_tokens, 16);    // but a's own are reused
  EXPECT_EQ(a2.ids, a1.ids);
  EXPECT_EQ(b1.ids, start(plain, greedy(plain, prompt, 16, b.adapter)).get().ids);
  EXPECT_EQ(base1.ids, start(plain, greedy(plain, prompt, 16, nullptr)).get().ids);
}

TEST(EngineLora, AnAdapterOfAnotherBaseIsRefusedAtSubmit) {
  Engine e(config());
  model::HParams other = e.hparams();
  other.n_ff *= 2;
  const RandomAdapter a = random_adapter(other, 2, 5, "elsewhere");
  try {
    start(e, greedy(e, "Hi", 4, a.adapter));
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("'elsewhere' was made for a base of another shape"), std::string::npos)
        << err.what();
  }
}

}  // namespace
}  // namespace moe::engine
