// grammar_mask_bench.cpp: the cost of one constrained step's token mask (grammar/grammar.h) with the
// real Mixtral vocabulary (32000 tokens). The states are those met while writing a typical object under
// the json_object grammar (every prefix of kObject: structure, keys, string values, numbers, literals, an
// array), so the mean is over a realistic mix. "Cold" builds each mask from scratch (a fresh processor
// per object: trie walk plus new automaton states); "Warm" is the steady state of a long generation,
// where states repeat and the mask comes from the per-state cache. A schema benchmark times compiling a
// large JSON schema. The vocabulary is ../shared/models/mixtral-tokenizer.model (or $MOE_FIXTURES/...);
// without it the mask benchmarks report an error.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

namespace {

const char kObject[] = R"({"name": "Tom the cat", "age": 3, "weight_kg": 4.25e0, "tags": ["small", "grey"], "indoor": true, "owner": null})";

std::string fixture_path(const std::string& rel) {
  const char* env = std::getenv("MOE_FIXTURES");
  if (env && *env) return std::string(env) + "/" + rel;
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared" / rel).string();
}

struct Setup {
  std::shared_ptr<const moe::grammar::Vocabulary> vocab;
  std::vector<int32_t> object_tokens;  // kObject as single-byte tokens (every prefix is a state)
  int32_t eos = -1;
};

const Setup* setup() {
  static const Setup* s = []() -> const Setup* {
    const std::string path = fixture_path("models/mixtral-tokenizer.model");
    if (!std::filesystem::exists(path)) return nullptr;
    auto tok = moe::tokenizer::Tokenizer::from_sentencepiece_file(path);
    std::vector<std::string> text(static_cast<size_t>(tok.n_vocab()));
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
      int32_t one[1] = {id};
      text[static_cast<size_t>(id)] = tok.decode_continuation(one);
    }
    auto* out = new Setup;
    for (const char* c = kObject; *c; ++c) {
      int32_t found = -1;
      for (int32_t id = 0; id < tok.n_vocab() && found < 0; ++id)
        if (text[static_cast<size_t>(id)] == std::string(1, *c)) found = id;
      out->object_tokens.push_back(found);
    }
    out->eos = tok.eos_id();
    out->vocab = std::make_shared<const moe::grammar::Vocabulary>(std::move(text));
    return out;
  }();
  return s;
}

std::shared_ptr<const moe::grammar::Grammar> json_object() {
  static auto g = moe::grammar::compile_gbnf(moe::grammar::json_object_gbnf());
  return g;
}

void BM_GrammarMask_JsonObject_Cold(benchmark::State& state) {
  const Setup* s = setup();
  if (!s) return state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
  std::vector<float> logits(static_cast<size_t>(s->vocab->n_vocab()), 0.0f);
  moe::sampling::SequenceContext ctx;
  int64_t masks = 0;
  for (auto _ : state) {
    moe::grammar::GrammarProcessor p(json_object(), s->vocab, {s->eos});
    for (int32_t t : s->object_tokens) {
      p.apply(logits, ctx);
      p.accept(t);
      ++masks;
    }
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(masks);
}

void BM_GrammarMask_JsonObject_Warm(benchmark::State& state) {
  const Setup* s = setup();
  if (!s) return state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
  std::vector<float> logits(static_cast<size_t>(s->vocab->n_vocab()), 0.0f);
  moe::sampling::SequenceContext ctx;
  // One processor per prefix, each asked once before timing so its state's mask is cached.
  std::vector<std::unique_ptr<moe::grammar::GrammarProcessor>> at;
  for (size_t n = 0; n < s->object_tokens.size(); ++n) {
    auto p = std::make_unique<moe::grammar::GrammarProcessor>(json_object(), s->vocab, std::vector<int32_t>{s->eos});
    for (size_t i = 0; i < n; ++i) p->accept(s->object_tokens[i]);
    p->apply(logits, ctx);
    at.push_back(std::move(p));
  }
  size_t i = 0;
  for (auto _ : state) {
    at[i++ % at.size()]->apply(logits, ctx);
    benchmark::DoNotOptimize(logits.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// A 200-property schema with nested objects, enums, arrays and bounded integers.
void BM_GrammarCompile_LargeSchema(benchmark::State& state) {
  nlohmann::ordered_json props = nlohmann::ordered_json::object();
  for (int i = 0; i < 200; ++i) {
    nlohmann::ordered_json p;
    switch (i % 4) {
      case 0: p = {{"type", "string"}, {"maxLength", 40}}; break;
      case 1: p = {{"type", "integer"}, {"minimum", 0}, {"maximum", 1000}}; break;
      case 2: p = {{"enum", {"red", "green", "blue"}}}; break;
      default: p = {{"type", "array"}, {"items", {{"type", "object"}, {"properties", {{"x", {{"type", "number"}}}}}, {"required", {"x"}}}}}; break;
    }
    props["field_" + std::to_string(i)] = p;
  }
  nlohmann::ordered_json schema = {{"type", "object"}, {"properties", props}};
  for (auto _ : state) {
    auto g = moe::grammar::compile_gbnf(moe::grammar::json_schema_to_gbnf(schema));
    benchmark::DoNotOptimize(g.get());
  }
}

BENCHMARK(BM_GrammarMask_JsonObject_Cold)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GrammarMask_JsonObject_Warm)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GrammarCompile_LargeSchema)->Unit(benchmark::kMillisecond);

}  // namespace
