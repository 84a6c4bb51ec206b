// run.cpp: `moe run [MODEL] [-p PROMPT] ...`: generates text from a prompt on one sequence and streams
// it to stdout as it comes. The prompt is processed in one batched forward pass, then one token per
// step; generation stops at the model's end-of-sequence token or after -n tokens. One timing line
// goes to stderr. The tokenizer is touched only to encode the prompt and to decode the output.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cli/command.h"
#include "gguf/gguf.h"
#include "kv/cache.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"
#include "server/routing_trace.h"
#include "util/error.h"

namespace moe::cli {
namespace {

struct RunOpts {
  std::string model;
  std::string prompt = "Once upon a time";
  int64_t n_predict = 128;
  float temp = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;
  int threads = 0;
  std::string kv_type = "f16";
  int64_t ctx = 0;
  bool print_ids = false;
  std::string routing_trace;  // JSON lines: each generated token's experts per layer (routing_trace.h)
};

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

int run_run(const RunOpts& o) {
  using clock = std::chrono::steady_clock;
  auto kv_type = kv::parse_kv_type(o.kv_type);
  if (!kv_type) fail("unknown --kv-cache-dtype '", o.kv_type, "' (f32, f16, bf16, q8_0)");
  if (o.n_predict < 0) fail("-n must be >= 0");
  if (o.ctx < 0) fail("--ctx must be >= 0");

  sampling::Params sp;
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.repeat_penalty = o.repeat_penalty;
  sp.seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device{}();
  sampling::Sampler sampler(sp);

  gguf::File file = gguf::File::open(model_or_default(o.model));
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_gguf(file);
  const std::vector<int32_t> prompt = tok.encode(o.prompt, tok.add_bos());
  if (prompt.empty()) fail("the prompt is empty (and the model adds no BOS token)");
  const auto n_prompt = static_cast<int64_t>(prompt.size());

  model::ModelOptions mo;
  mo.n_threads = o.threads;
  mo.max_batch_tokens = std::min<int64_t>(n_prompt, 512);
  model::Model m(std::move(file), mo);
  const model::HParams& hp = m.hparams();
  const int64_t ctx = o.ctx > 0 ? o.ctx : std::min(hp.n_ctx_train, n_prompt + o.n_predict);
  if (n_prompt > ctx) fail("the prompt has ", n_prompt, " tokens, more than the context of ", ctx);
  kv::Cache cache(m.kv_geometry(*kv_type), kv::Cache::blocks_for_tokens(ctx));

  if (o.print_ids) {
    std::printf("%s\n", join_ids(prompt).c_str());
  } else {
    std::printf("%s", o.prompt.c_str());
  }
  std::fflush(stdout);

  std::vector<int32_t> history = prompt;
  std::vector<int32_t> generated;
  tokenizer::StreamDecoder decoder(tok, /*continuation=*/true);
  model::Batch batch;
  model::ForwardResult res;
  for (int64_t i = 0; i < n_prompt; ++i) batch.add(prompt[i], static_cast<int32_t>(i), 0, i + 1 == n_prompt);

  // --routing-trace: the forward pass copies each output's experts and weights (nothing when off).
  std::ofstream trace;
  model::ForwardOptions fwd;
  if (!o.routing_trace.empty()) {
    trace.open(o.routing_trace, std::ios::binary | std::ios::trunc);
    if (!trace) fail("cannot write the routing trace to '", o.routing_trace, "'");
    fwd.routing = true;
  }

  const auto t0 = clock::now();
  auto t_prompt = t0;
  bool context_full = false;
  for (int64_t step = 0; step < o.n_predict; ++step) {
    if (batch.positions.back() >= ctx) {
      context_full = true;
      break;
    }
    m.forward(batch, cache, res, fwd);
    if (step == 0) t_prompt = clock::now();
    const sampling::Sampled s = sampler.sample({res.logits.data(), static_cast<size_t>(hp.n_vocab)}, history);
    if (s.id == tok.eos_id()) break;
    history.push_back(s.id);
    generated.push_back(s.id);
    if (fwd.routing) {  // one line per generated token: {"token", "experts", "weights"}
      engine::Delta::TokenRouting r;
      r.n_layer = static_cast<int32_t>(hp.n_layer);
      r.k = static_cast<int32_t>(res.routing_experts.size() / static_cast<size_t>(hp.n_layer));
      r.experts = res.routing_experts;
      r.weights = res.routing_weights;
      nlohmann::json line = server::token_routing_json(r);
      line["token"] = s.id;
      trace << line.dump() << '\n';
    }
    if (!o.print_ids) {
      std::string text = decoder.push(s.id);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    batch.clear();
    batch.add(s.id, static_cast<int32_t>(history.size() - 1), 0, true);
  }
  const auto t_end = clock::now();
  if (o.print_ids) {
    std::printf("%s\n", join_ids(generated).c_str());
  } else {
    std::string rest = decoder.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::printf("\n");
  }
  std::fflush(stdout);

  auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  const double tp = secs(t_prompt - t0), tg = secs(t_end - t_prompt);
  // The first generated token is sampled from the prompt pass; the decode rate counts the rest.
  const auto n_decode = static_cast<int64_t>(generated.size()) > 0 ? static_cast<int64_t>(generated.size()) - 1 : 0;
  std::fprintf(stderr, "%sprompt: %lld tokens, %.1f tokens/s | generated: %zu tokens, %.1f tokens/s\n",
               context_full ? "(context full) " : "", (long long)n_prompt, tp > 0 ? n_prompt / tp : 0.0,
               generated.size(), tg > 0 ? n_decode / tg : 0.0);
  return 0;
}

const Registrar reg("run", "Generate text from a prompt", [](CLI::App& sub) {
  auto o = std::make_shared<RunOpts>();
  sub.add_option("model", o->model, "GGUF model file (default: the bundled model)");
  sub.add_option("-p,--prompt", o->prompt, "prompt text")->capture_default_str();
  sub.add_option("-n,--n-predict", o->n_predict, "tokens to generate at most")->capture_default_str();
  sub.add_option("--temp", o->temp, "temperature (0: greedy)")->capture_default_str();
  sub.add_option("--top-k", o->top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
  sub.add_option("--top-p", o->top_p, "nucleus sampling threshold (1: off)")->capture_default_str();
  sub.add_option("--min-p", o->min_p, "drop tokens below min-p times the top probability (0: off)")->capture_default_str();
  sub.add_option("--repeat-penalty", o->repeat_penalty, "penalty for the last 64 tokens (1: off)")->capture_default_str();
  sub.add_option("--seed", o->seed, "random seed (default: random)");
  sub.add_option("-t,--threads", o->threads, "threads (0: physical cores)");
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f16, bf16, q8_0, f32")->capture_default_str();
  sub.add_option("--ctx", o->ctx, "context size in tokens (0: prompt + n, at most the model's)");
  sub.add_flag("--print-ids", o->print_ids, "print token ids instead of text (prompt ids, then generated ids)")
      ->group("");
  sub.add_option("--routing-trace", o->routing_trace,
                 "write each generated token's chosen experts and weights per layer to FILE (JSON lines)");
  return [o] { return run_run(*o); };
});

}  // namespace
}  // namespace moe::cli
