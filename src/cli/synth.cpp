// synth.cpp: `moe synth --shape mixtral-8x7b [--layers N] --type Q4_K_M [--tokenizer F] [--seed S] OUT`:
// writes a random-weight model of a real geometry (src/plan/geometry.h), so speed and memory can be
// measured at full size without downloading weights. Tensors are generated row by row on all threads
// straight into the GGUF writer's buffer (one tensor in memory at a time), with the per-tensor types of
// the mix (src/plan/quant_mix.h), full llama metadata, and the real vocabulary of a SentencePiece model or
// GGUF file when one is given (else a byte-level one).
//
// Values: matrices ~ N(0, 0.02) (the usual initialisation scale; it keeps activations and logits in a
// normal range through many layers), norms = 1, routers ~ N(0, 0.02) as well (a random but decisive
// routing). Tensors of Q8_0 and the K-quants are written as random blocks whose dequantized values have
// the mean and variance that quantizing N(0, 0.02) floats gives (plan/random_weights.h: ~1-3 ns per
// weight, where the K-quant scale search takes ~100 ns, i.e. minutes instead of hours at full size);
// --quantize-floats keeps the exact way for every tensor. Every row is drawn from its own generator
// seeded by (seed, tensor, row), so the file is a function of the seed alone, whatever the thread count.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/command.h"
#include "gguf/gguf.h"
#include "plan/encode.h"
#include "plan/geometry.h"
#include "plan/layout.h"
#include "plan/memory.h"
#include "plan/progress.h"
#include "plan/quant_mix.h"
#include "plan/random_weights.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace moe::cli {
namespace {

struct SynthOpts {
  std::string shape;
  int64_t layers = 0;
  std::string type;
  std::string tokenizer;
  uint64_t seed = 42;
  int threads = 0;
  bool quiet = false;
  bool quantize_floats = false;  // the exact (slow) way for every tensor
  std::string out;
};

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

plan::Vocab vocab_from_tokenizer(const std::string& path) {
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(path);
  plan::Vocab v;
  const int32_t n = tok.n_vocab();
  for (int32_t i = 0; i < n; ++i) {
    v.tokens.push_back(tok.piece(i));
    v.scores.push_back(tok.score(i));
    v.types.push_back(static_cast<int32_t>(tok.token_type(i)));
  }
  v.bos_id = tok.bos_id();
  v.eos_id = tok.eos_id();
  v.unk_id = tok.unk_id();
  v.add_bos = tok.add_bos();
  v.add_eos = tok.add_eos();
  if (v.bos_id < 0 || v.eos_id < 0 || v.unk_id < 0)
    fail("the tokenizer '", path, "' lacks a BOS, EOS or UNK token, which llama metadata needs");
  return v;
}

int run_synth(const SynthOpts& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const plan::ShapePreset& preset = plan::find_preset(o.shape);
  const plan::QuantMix& mix = plan::find_mix(o.type);
  model::HParams hp = o.layers ? plan::with_layers(preset.hp, o.layers) : preset.hp;
  plan::Vocab vocab;
  if (!o.tokenizer.empty()) {
    vocab = vocab_from_tokenizer(o.tokenizer);
    const auto n = static_cast<int64_t>(vocab.tokens.size());
    if (n != hp.n_vocab) {
      std::fprintf(stderr, "moe synth: note: the vocabulary follows the tokenizer: %lld tokens instead of %s's %lld\n",
                   static_cast<long long>(n), preset.name.c_str(), static_cast<long long>(hp.n_vocab));
      hp.n_vocab = n;
    }
  } else {
    vocab = plan::synthetic_vocab(hp.n_vocab);
  }

  const plan::Metadata kv = plan::synth_metadata(hp, mix, preset.name, vocab);
  const plan::WeightsLayout layout = plan::layout_of_synth(hp, mix, vocab, preset.name);
  gguf::Writer w;
  for (const auto& [key, value] : kv) w.set(key, value);
  uint64_t total_elements = 0;
  for (const auto& t : layout.tensors) {
    w.add_tensor(t.name, t.type, t.ne);
    uint64_t n = 1;
    for (int64_t d : t.ne) n *= static_cast<uint64_t>(d);
    total_elements += n;
  }
  std::fprintf(stderr, "moe synth: %s, %lld layers, %s: %s of weights to %s\n", preset.name.c_str(),
               static_cast<long long>(hp.n_layer), mix.name.c_str(), plan::format_bytes(layout.file_bytes).c_str(),
               o.out.c_str());

  ThreadPool pool(o.threads > 0 ? o.threads : physical_core_count());
  plan::Progress progress("moe synth", total_elements, !o.quiet);
  uint64_t seed_state = o.seed;
  const uint64_t base_seed = splitmix64(seed_state);
  w.write(o.out, [&](size_t k, std::span<uint8_t> out) {
    const plan::PlannedTensor& t = layout.tensors[k];
    progress.set_detail(t.name);
    const plan::TensorKind kind = plan::classify_tensor(t.name);
    const int64_t n = t.ne[0];
    const int64_t rows = static_cast<int64_t>(t.bytes / *row_bytes(t.type, static_cast<uint64_t>(n)));
    const bool ones = kind.role == plan::TensorRole::Norm;
    auto row_seed = [&](int64_t row) {
      uint64_t s = base_seed ^ (static_cast<uint64_t>(k) << 40) ^ static_cast<uint64_t>(row);
      return splitmix64(s);
    };
    if (!ones && !o.quantize_floats && plan::can_draw_blocks(t.type)) {
      plan::draw_tensor(pool, t.type, n, rows, 0.02f, out, row_seed, &progress);
      return;
    }
    plan::encode_rows(pool, t.type, n, rows, out, [&](int64_t row, float* buf) {
      if (ones) {
        std::fill(buf, buf + n, 1.0f);
        return;
      }
      plan::fill_normal(row_seed(row), 0.02f, buf, n);
    }, &progress);
  });
  progress.finish();

  const gguf::File check = gguf::File::open(o.out);  // the validating reader accepts what we wrote
  if (check.file_size() != layout.file_bytes)
    fail("internal error: wrote ", check.file_size(), " bytes, the layout planned ", layout.file_bytes);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "moe synth: wrote %s (%zu tensors, %.2f bits/weight) in %.1f s\n",
               plan::format_bytes(check.file_size()).c_str(), layout.tensors.size(),
               8.0 * static_cast<double>(layout.tensor_bytes) / static_cast<double>(total_elements), secs);
  return 0;
}

Registrar reg("synth", "Write a random-weight model of a real geometry (for benchmarks)", [](CLI::App& sub) {
  auto o = std::make_shared<SynthOpts>();
  sub.add_option("--shape", o->shape, "geometry: " + plan::preset_names())->required();
  sub.add_option("--layers", o->layers, "only the first N layers (default: all)");
  sub.add_option("--type", o->type, "quantization: " + plan::mix_names())->required();
  sub.add_option("--tokenizer", o->tokenizer, "SentencePiece tokenizer.model or GGUF whose vocabulary to write");
  sub.add_option("--seed", o->seed, "random seed (default 42)");
  sub.add_option("-t,--threads", o->threads, "threads (default: physical cores)");
  sub.add_flag("--quantize-floats", o->quantize_floats,
               "draw floats and quantize them for every tensor (slow: hours at full size; default: random "
               "Q8_0/K-quant blocks of the same spread)");
  sub.add_flag("-q,--quiet", o->quiet, "no progress output");
  sub.add_option("output", o->out, "output GGUF")->required();
  return [o] { return run_synth(*o); };
});

}  // namespace
}  // namespace moe::cli
