// tokenizer_bench.cpp: tokenizer throughput with the real Mixtral vocabulary on ~1 MB of mixed
// multilingual text (English, French, German, Italian, Spanish prose, some Chinese/Japanese, code and
// emoji): encoding it whole, encoding it cut into 200-byte texts one by one (the engine's usual case), and
// decoding it. Reports bytes/s of input text. The vocabulary is ../shared/models/mixtral-tokenizer.model
// (or $MOE_FIXTURES/models/...); without it the benchmarks report an error.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

std::string fixture_path(const std::string& rel) {
  const char* env = std::getenv("MOE_FIXTURES");
  if (env && *env) return std::string(env) + "/" + rel;
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared" / rel).string();
}

// Sentences shuffled with a fixed seed until `bytes` is reached: realistic words, not random code points.
std::string mixed_text(size_t bytes) {
  static const std::vector<std::string> sentences = {
      "The quick brown fox jumps over the lazy dog while the experts route each token to two of eight.",
      "Sparse mixture-of-experts models activate only a fraction of their parameters for every token.",
      "In 2023, Mixtral 8x7B matched much larger dense models on most benchmarks at a lower cost.",
      "Bonjour ! Comment allez-vous aujourd'hui ? Très bien, merci, et vous-même ?",
      "Les modèles de langue apprennent à prédire le mot suivant à partir d'un très grand corpus.",
      "Grüß Gott! Die Straße ist naß, aber das Wetter ist schön und die Vögel singen fröhlich.",
      "Übermäßige Größenänderungen führen häufig zu Speicherengpässen auf älteren Rechnern.",
      "Buongiorno, vorrei un caffè e un cornetto, per favore. Perché la città è così affollata?",
      "¿Dónde está la biblioteca? Mañana iremos a la montaña con los niños y el pingüino.",
      "El corazón de la ciudad late más rápido durante las fiestas de verano en España.",
      "机器学习模型需要大量的数据来训练，专家混合模型只激活部分参数。",
      "東京の天気は晴れです。今日は新しいトークナイザーをテストしています。",
      "for (int i = 0; i < n; ++i) { sum += weights[i] * inputs[i]; }  // dot product",
      "def route(x):\n    scores = softmax(x @ W_router)\n    return topk(scores, k=2)\n",
      "Great job! 🎉 The build passed ✅ and the benchmark is 🚀 faster than yesterday 👍🏽.",
      "    Indented line with\ttabs and   multiple   spaces, then a newline.\n\n",
  };
  std::mt19937_64 rng(42);
  std::string text;
  while (text.size() < bytes) {
    text += sentences[rng() % sentences.size()];
    text += rng() % 4 == 0 ? "\n" : " ";
  }
  return text;
}

const moe::tokenizer::Tokenizer* mixtral() {
  static const moe::tokenizer::Tokenizer* tok = [] {
    const std::string path = fixture_path("models/mixtral-tokenizer.model");
    if (!std::filesystem::exists(path)) return static_cast<moe::tokenizer::Tokenizer*>(nullptr);
    return new moe::tokenizer::Tokenizer(moe::tokenizer::Tokenizer::from_sentencepiece_file(path));
  }();
  return tok;
}

void BM_TokenizerEncode1MB(benchmark::State& state) {
  const auto* tok = mixtral();
  if (!tok) {
    state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
    return;
  }
  const std::string text = mixed_text(1 << 20);
  size_t n_tokens = 0;
  for (auto _ : state) {
    auto ids = tok->encode(text, true);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
  state.counters["bytes/token"] = static_cast<double>(text.size()) / static_cast<double>(n_tokens);
}
BENCHMARK(BM_TokenizerEncode1MB)->Unit(benchmark::kMillisecond);

// The engine's usual case: many short texts (prompts, chat turns), each encoded on its own.
void BM_TokenizerEncodeShortTexts(benchmark::State& state) {
  const auto* tok = mixtral();
  if (!tok) {
    state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
    return;
  }
  const std::string text = mixed_text(1 << 20);
  std::vector<std::string_view> pieces;
  for (size_t at = 0; at + 200 <= text.size(); at += 200) pieces.emplace_back(text.data() + at, 200);
  for (auto _ : state)
    for (std::string_view p : pieces) {
      auto ids = tok->encode(p, true);
      benchmark::DoNotOptimize(ids.data());
    }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * pieces.size() * 200));
}
BENCHMARK(BM_TokenizerEncodeShortTexts)->Unit(benchmark::kMillisecond);

void BM_TokenizerDecode1MB(benchmark::State& state) {
  const auto* tok = mixtral();
  if (!tok) {
    state.SkipWithError("models/mixtral-tokenizer.model not found (set MOE_FIXTURES)");
    return;
  }
  const std::string text = mixed_text(1 << 20);
  const auto ids = tok->encode(text, true);
  for (auto _ : state) {
    auto out = tok->decode(ids);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_TokenizerDecode1MB)->Unit(benchmark::kMillisecond);

}  // namespace
