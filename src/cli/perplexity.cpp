// perplexity.cpp: `moe perplexity MODEL -f TEXT [--ctx N] [--kl-base BASE.gguf] [-t N]`: how well a
// model predicts a text, and, with a base model, how far a (quantized) model's next-token distributions
// are from the base's: mean KL divergence KL(base || model) and top-1 agreement per token — how users
// judge a quantization.
//
// Method (llama.cpp's, so numbers compare): the text is tokenized once without BOS and cut into
// non-overlapping chunks of ctx tokens; the first token of each chunk is replaced by BOS when the
// model uses one; each chunk is one forward pass from an empty cache, and only the second half of each
// chunk is scored (token j+1 from the logits at j, for j from ctx/2 to ctx-2), so every scored token
// has at least ctx/2 tokens of context. Log-softmax, KL and the running sums are in double precision.
// A text shorter than one chunk is scored as a single chunk of its length.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "hf/hf.h"
#include "kv/cache.h"
#include "model/model.h"
#include "plan/progress.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace moe::cli {
namespace {

struct PerplexityOpts {
  std::string model;
  std::string text_file;
  int64_t ctx = 512;
  std::string kl_base;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  bool exact = false;
  std::string kv_type = "f16";
  bool json = false;
  bool quiet = false;
};

// log-softmax of one row of logits, in double.
void log_softmax(const float* logits, int64_t n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<double>(logits[i]) - lse;
}

int64_t argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// Mean and standard error of a running sum.
struct Stat {
  double sum = 0, sq = 0;
  int64_t n = 0;
  void add(double x) { sum += x; sq += x * x; ++n; }
  double mean() const { return n ? sum / static_cast<double>(n) : 0.0; }
  double stderr_of_mean() const {
    if (n < 2) return 0.0;
    const double m = mean(), var = std::max(0.0, sq / static_cast<double>(n) - m * m);
    return std::sqrt(var / static_cast<double>(n - 1));
  }
};

struct Runner {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<kv::Cache> cache;
  model::ForwardResult result;
};

Runner make_runner(const std::string& path, ThreadPool& pool, const PerplexityOpts& o, kv::KvType kv_type, int64_t ctx) {
  model::ModelOptions mo;
  mo.pool = &pool;
  mo.device = o.dev.device;
  mo.gpu_memory = o.dev.gpu_memory_bytes();
  mo.precision = o.exact ? model::Precision::Exact : model::Precision::Fast;
  mo.max_batch_tokens = std::min<int64_t>(ctx, 512);
  Runner r;
  r.model = model::Model::load(path, mo);
  if (ctx > r.model->hparams().n_ctx_train)
    fail("--ctx ", ctx, " exceeds the training context of ", path, " (", r.model->hparams().n_ctx_train, " tokens)");
  r.cache = std::make_unique<kv::Cache>(r.model->kv_geometry(kv_type), kv::Cache::blocks_for_tokens(ctx));
  return r;
}

int run_perplexity(const PerplexityOpts& o) {
  auto kv_type = kv::parse_kv_type(o.kv_type);
  if (!kv_type) fail("unknown --kv-cache-dtype '", o.kv_type, "' (f32, f16, bf16, q8_0)");
  if (o.ctx < 8 || o.ctx > (int64_t{1} << 20)) fail("--ctx ", o.ctx, " must be between 8 and 1048576");
  std::ifstream in(o.text_file, std::ios::binary);
  if (!in) fail("cannot read the text file '", o.text_file, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();

  const std::string model_path = model_or_default(o.model);
  const gguf::File file = hf::open_model_file(model_path);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(file);
  const std::vector<int32_t> tokens = tok.encode(text, /*add_bos=*/false);
  int64_t ctx = o.ctx;
  const auto n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < ctx) {
    if (n_tokens < 8) fail("the text has ", n_tokens, " tokens; perplexity needs at least 8");
    std::fprintf(stderr, "moe perplexity: note: the text has only %lld tokens; scoring one chunk of that length\n",
                 static_cast<long long>(n_tokens));
    ctx = n_tokens;
  }
  const int64_t n_chunks = n_tokens / ctx;
  const int64_t first = ctx / 2;  // score tokens first+1 .. ctx-1 of each chunk

  ThreadPool pool(o.threads > 0 ? o.threads : physical_core_count());
  Runner m = make_runner(model_path, pool, o, *kv_type, ctx);
  const int64_t n_vocab = m.model->hparams().n_vocab;
  Runner base;
  if (!o.kl_base.empty()) {
    base = make_runner(o.kl_base, pool, o, *kv_type, ctx);
    if (base.model->hparams().n_vocab != n_vocab)
      fail("the base model has a vocabulary of ", base.model->hparams().n_vocab, " tokens, the model ", n_vocab,
           "; KL divergence needs the same vocabulary");
  }

  Stat nll, base_nll, kl;
  int64_t agree = 0;
  std::vector<double> lp, lq;
  plan::Progress progress("moe perplexity", static_cast<uint64_t>(n_chunks), !o.quiet);
  for (int64_t c = 0; c < n_chunks; ++c) {
    model::Batch batch;
    for (int64_t j = 0; j < ctx; ++j) {
      int32_t id = tokens[static_cast<size_t>(c * ctx + j)];
      if (j == 0 && tok.add_bos() && tok.bos_id() >= 0) id = tok.bos_id();
      batch.add(id, static_cast<int32_t>(j), 0, j >= first && j < ctx - 1);
    }
    for (Runner* r : {&m, &base}) {
      if (!r->model) continue;
      r->cache->clear();
      r->model->forward(batch, *r->cache, r->result);
    }
    for (int64_t k = 0; k < m.result.n_outputs; ++k) {
      const int64_t j = m.result.output_index[static_cast<size_t>(k)];
      const int32_t next = tokens[static_cast<size_t>(c * ctx + j + 1)];
      const float* row = m.result.logits.data() + k * n_vocab;
      log_softmax(row, n_vocab, lq);
      nll.add(-lq[static_cast<size_t>(next)]);
      if (!base.model) continue;
      const float* brow = base.result.logits.data() + k * n_vocab;
      log_softmax(brow, n_vocab, lp);
      base_nll.add(-lp[static_cast<size_t>(next)]);
      double d = 0;
      for (int64_t i = 0; i < n_vocab; ++i) {
        const double p = std::exp(lp[static_cast<size_t>(i)]);
        d += p * (lp[static_cast<size_t>(i)] - lq[static_cast<size_t>(i)]);
      }
      kl.add(std::max(0.0, d));  // rounding can leave -1e-17 where the distributions are equal
      agree += argmax(row, n_vocab) == argmax(brow, n_vocab);
    }
    progress.advance(1);
  }
  progress.finish();

  const double ppl = std::exp(nll.mean()), ppl_se = ppl * nll.stderr_of_mean();
  if (o.json) {
    nlohmann::json j;
    j["model"] = model_path;
    j["ctx"] = ctx;
    j["chunks"] = n_chunks;
    j["tokens_scored"] = nll.n;
    j["nll_mean"] = nll.mean();
    j["ppl"] = ppl;
    j["ppl_stderr"] = ppl_se;
    if (base.model) {
      j["base"] = o.kl_base;
      j["base_ppl"] = std::exp(base_nll.mean());
      j["kl_mean"] = kl.mean();
      j["kl_stderr"] = kl.stderr_of_mean();
      j["top1_agreement"] = static_cast<double>(agree) / static_cast<double>(std::max<int64_t>(1, kl.n));
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("%s: %lld tokens scored in %lld chunks of %lld (the second half of each)\n", model_path.c_str(),
              static_cast<long long>(nll.n), static_cast<long long>(n_chunks), static_cast<long long>(ctx));
  std::printf("perplexity: %.4f +/- %.4f\n", ppl, ppl_se);
  if (base.model) {
    std::printf("base perplexity (%s): %.4f\n", o.kl_base.c_str(), std::exp(base_nll.mean()));
    std::printf("mean KL divergence (base || model): %.6f +/- %.6f nats\n", kl.mean(), kl.stderr_of_mean());
    std::printf("top-1 agreement: %.2f %% (%lld of %lld tokens)\n",
                100.0 * static_cast<double>(agree) / static_cast<double>(std::max<int64_t>(1, kl.n)),
                static_cast<long long>(agree), static_cast<long long>(kl.n));
  }
  return 0;
}

Registrar reg("perplexity", "Perplexity of a text; with --kl-base, KL divergence and top-1 agreement", [](CLI::App& sub) {
  auto o = std::make_shared<PerplexityOpts>();
  sub.add_option("model", o->model, "GGUF model file (default: the bundled model)");
  sub.add_option("-f,--file", o->text_file, "text file to score")->required();
  sub.add_option("--ctx", o->ctx, "tokens per chunk (default 512); the second half of each is scored");
  sub.add_option("--kl-base", o->kl_base, "base model (e.g. the F16 original) for KL divergence and top-1 agreement");
  sub.add_option("-t,--threads", o->threads, "threads (default: physical cores)");
  add_device_options(sub, o->dev);
  sub.add_flag("--exact", o->exact, "float activations and double accumulation instead of 8-bit activations");
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f16 (default), bf16, q8_0, f32");
  sub.add_flag("--json", o->json, "print one JSON object");
  sub.add_flag("-q,--quiet", o->quiet, "no progress output");
  return [o] { return run_perplexity(*o); };
});

}  // namespace
}  // namespace moe::cli
