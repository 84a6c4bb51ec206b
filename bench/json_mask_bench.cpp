// json_mask_bench.cpp: the cost of one `json_object` step's token mask with the real Mixtral vocabulary
// (32000 tokens), old rule against the precomputed one. The states are those met while writing a typical
// object (every prefix of kObject: structure, keys, string values, numbers, literals, an array), so the
// mean is over a realistic mix; the String benchmarks isolate the state a model spends most tokens in.
// Reports time per mask. The vocabulary is ../shared/models/mixtral-tokenizer.model (or
// $MOE_FIXTURES/models/...); without it the benchmarks report an error.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/json_logits.h"
#include "tokenizer/tokenizer.h"

namespace {

const char kObject[] = R"({"name": "Tom the cat", "age": 3, "weight_kg": 4.25e0, "tags": ["small", "grey"], "indoor": true, "owner": null})";

std::string fixture_path(const std::string& rel) {
  const char* env = std::getenv("MOE_FIXTURES");
  if (env && *env) return std::string(env) + "/" + rel;
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared" / rel).string();
}

struct Setup {
  std::shared_ptr<const std::vector<std::string>> text;
  std::shared_ptr<const moe::engine::JsonVocabulary> vocab;
  int32_t eos = -1;
};

const Setup* setup() {
  static const Setup* s = []() -> const Setup* {
    const std::string path = fixture_path("models/mixtral-tokenizer.model");
    if (!std::filesystem::exists(path)) return nullptr;
    auto tok = moe::tokenizer::Tokenizer::from_sentencepiece_file(path);
    auto text = std::make_shared<std::vector<std::string>>(static_cast<size_t>(tok.n_vocab()));
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
      int32_t one[1] = {id};
      (*text)[static_cast<size_t>(id)] = tok.decode_continuation(one);
    }
    auto* out = new Setup;
    out->text = text;
    out->eos = tok.eos_id();
    out->vocab = std::make_shared<const moe::engine::JsonVocabulary>(text, out->eos);
    return out;
  }();
  return s;
}

// Every state met while writing kObject, or only those inside strings.
std::vector<moe::engine::JsonConstraint> states(bool strings_only) {
  std::vector<moe::engine::JsonConstraint> out;
  moe::engine::JsonConstraint j;
  for (const char* c = kObject; *c; ++c) {
    if (!strings_only || j.in_string()) out.push_back(j);
    j.advance(std::string_view(c, 1));
  }
  return out;
}

// The rule before the precomputation: run the recogniser over every token's text.
void reference_mask(const moe::engine::JsonConstraint& j, const std::vector<std::string>& text, std::vector<uint8_t>& ok) {
  ok.assign(text.size(), 0);
  for (size_t id = 0; id < text.size(); ++id) ok[id] = !text[id].empty() && j.accepts(text[id]);
}

void run(benchmark::State& state, bool precomputed, bool strings_only) {
  const Setup* s = setup();
  if (!s) {
    state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
    return;
  }
  const auto st = states(strings_only);
  std::vector<uint8_t> ok;
  size_t i = 0;
  for (auto _ : state) {
    const auto& j = st[i++ % st.size()];
    if (precomputed) s->vocab->allowed(j, 1 << 20, ok);
    else reference_mask(j, *s->text, ok);
    benchmark::DoNotOptimize(ok.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_JsonMask_PerTokenRule(benchmark::State& s) { run(s, false, false); }
void BM_JsonMask_Precomputed(benchmark::State& s) { run(s, true, false); }
void BM_JsonMask_InString_PerTokenRule(benchmark::State& s) { run(s, false, true); }
void BM_JsonMask_InString_Precomputed(benchmark::State& s) { run(s, true, true); }
BENCHMARK(BM_JsonMask_PerTokenRule)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonMask_Precomputed)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonMask_InString_PerTokenRule)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonMask_InString_Precomputed)->Unit(benchmark::kMicrosecond);

}  // namespace
