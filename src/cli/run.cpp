// run.cpp: `moe run [MODEL] [-p PROMPT] ...`: generates text from a prompt on one sequence and streams
// it to stdout as it comes. It goes through the serving engine, so it stops where `moe chat` and `moe
// serve` stop (the model's end-of-sequence token, the chat template's end-of-turn tokens) and samples
// the same way; the prompt is plain text (no chat template), with the model's BOS as the PromptBuilder
// adds it. The prompt is read before the weights are bound so the model's batch is sized by it (at most
// 512 tokens, as `moe plan --batch` assumes). One timing line goes to stderr.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "engine/lora_loader.h"
#include "hf/hf.h"
#include "model/model.h"
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
  DeviceArgs dev;                       // --device, --gpu-memory
  bool no_repack = false;
  std::string kv_type = "f16";
  int64_t ctx = 0;
  bool print_ids = false;
  std::string routing_trace;  // JSON lines: each generated token's experts per layer (routing_trace.h)
  std::vector<std::string> lora;  // --lora DIR[:SCALE]: PEFT adapters stacked on the base (lora_loader.h)
  GrammarArgs grammar;        // --grammar-file / --json-schema
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

  engine::Request req;
  req.max_tokens = o.n_predict;
  req.sampling.temperature = o.temp;
  req.sampling.top_k = o.top_k;
  req.sampling.top_p = o.top_p;
  req.sampling.min_p = o.min_p;
  req.sampling.repetition_penalty = o.repeat_penalty;
  if (o.seed >= 0) req.sampling.seed = static_cast<uint64_t>(o.seed);
  req.sampling.grammar = o.grammar.load();

  // --routing-trace: the engine asks the forward pass for each output's experts and weights (nothing
  // is copied when off) and hands them back per generated token (Delta::routing).
  std::ofstream trace;
  if (!o.routing_trace.empty()) {
    trace.open(o.routing_trace, std::ios::binary | std::ios::trunc);
    if (!trace) fail("cannot write the routing trace to '", o.routing_trace, "'");
    req.routing_trace = true;
  }

  gguf::File file = hf::open_model_file(model_or_default(o.model));
  auto tok = std::make_shared<const tokenizer::Tokenizer>(tokenizer::Tokenizer::from_gguf(file));
  auto prompts = std::make_shared<const engine::PromptBuilder>(tok, "", file.get_string("tokenizer.chat_template"),
                                                               /*announce_fallback=*/false);
  req.prompt = prompts->text_prompt(o.prompt);
  if (req.prompt.empty()) fail("the prompt is empty (and the model adds no BOS token)");
  const auto n_prompt = static_cast<int64_t>(req.prompt.size());

  engine::LoadOptions lo;
  lo.n_threads = o.threads;
  lo.device = o.dev.device;
  lo.gpu_memory = o.dev.gpu_memory_bytes();
  lo.max_batch_tokens = std::min<int64_t>(n_prompt, 512);
  lo.repack = !o.no_repack;
  const auto model = engine::load_model(std::move(file), tok, prompts, lo);
  req.adapter = engine::load_lora_stack(o.lora, *model->model->spec());
  const model::HParams& hp = model->model->hparams();
  const int64_t ctx = o.ctx > 0 ? o.ctx : std::min(hp.n_ctx_train, n_prompt + o.n_predict);
  if (n_prompt > ctx) fail("the prompt has ", n_prompt, " tokens, more than the context of ", ctx);

  if (o.print_ids) {
    std::printf("%s\n", join_ids(req.prompt).c_str());
  } else {
    std::printf("%s", o.prompt.c_str());
  }
  std::fflush(stdout);

  std::vector<int32_t> generated;
  engine::FinishReason why = engine::FinishReason::Length;
  engine::Usage usage;
  const auto t0 = clock::now();
  auto t_end = t0;
  if (o.n_predict > 0) {
    // One sequence; `ctx` positions are computed, and the token sampled from the last of them is still
    // emitted (the engine's max_model_len counts it).
    engine::EngineConfig cfg;
    cfg.max_num_seqs = 1;
    cfg.max_model_len = ctx + 1;
    cfg.max_num_batched_tokens = lo.max_batch_tokens;
    cfg.kv_type = *kv_type;
    cfg.enable_prefix_caching = false;
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    std::string error;
    engine::Engine eng(model, cfg);  // after what its callbacks use: it stops first
    engine::Callbacks cb;
    cb.on_delta = [&](const engine::Delta& d) {
      generated.insert(generated.end(), d.token_ids.begin(), d.token_ids.end());
      for (size_t i = 0; i < d.routing.size() && i < d.token_ids.size(); ++i) {
        // --routing-trace: one line per generated token, {"token", "experts", "weights"}.
        nlohmann::json line = server::token_routing_json(d.routing[i]);
        line["token"] = d.token_ids[i];
        trace << line.dump() << '\n';
      }
      if (!o.print_ids && !d.text.empty()) {
        std::fwrite(d.text.data(), 1, d.text.size(), stdout);
        std::fflush(stdout);
      }
    };
    cb.on_finish = [&](engine::FinishReason r, const engine::Usage& u, const std::string& err) {
      std::lock_guard<std::mutex> lock(mu);
      why = r;
      usage = u;
      error = err;
      finished = true;
      t_end = clock::now();
      cv.notify_all();
    };
    eng.submit(std::move(req), std::move(cb));
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished; });
    if (why == engine::FinishReason::Error) fail(error);
  }
  if (o.print_ids) std::printf("%s", join_ids(generated).c_str());
  std::printf("\n");
  std::fflush(stdout);

  auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  // The first generated token is sampled from the prompt pass; the decode rate counts the rest.
  const double tp = usage.time_to_first_token_s, tg = std::max(0.0, secs(t_end - t0) - tp);
  const auto n_decode = static_cast<int64_t>(generated.size()) > 0 ? static_cast<int64_t>(generated.size()) - 1 : 0;
  const bool context_full = why == engine::FinishReason::Length && usage.completion_tokens < o.n_predict;
  std::fprintf(stderr, "%sprompt: %lld tokens, %.1f tokens/s | generated: %zu tokens, %.1f tokens/s\n",
               context_full ? "(context full) " : "", (long long)n_prompt, tp > 0 ? n_prompt / tp : 0.0,
               generated.size(), tg > 0 ? n_decode / tg : 0.0);
  return 0;
}

const Registrar reg("run", "Generate text from a prompt", [](CLI::App& sub) {
  auto o = std::make_shared<RunOpts>();
  auto model = std::make_shared<ModelArg>();
  add_model_options(sub, *model, "GGUF model file (default: MOE_MODEL, else the bundled model)");
  sub.add_option("-p,--prompt", o->prompt, "prompt text")->capture_default_str();
  sub.add_option("-n,--n-predict", o->n_predict, "tokens to generate at most")->capture_default_str();
  sub.add_option("--temp", o->temp, "temperature (0: greedy)")->capture_default_str();
  sub.add_option("--top-k", o->top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
  sub.add_option("--top-p", o->top_p, "nucleus sampling threshold (1: off)")->capture_default_str();
  sub.add_option("--min-p", o->min_p, "drop tokens below min-p times the top probability (0: off)")->capture_default_str();
  sub.add_option("--repeat-penalty", o->repeat_penalty, "penalty for the last 64 tokens (1: off)")->capture_default_str();
  sub.add_option("--seed", o->seed, "random seed (default: random)");
  add_grammar_options(sub, o->grammar);
  sub.add_option("-t,--threads", o->threads, "threads (0: physical cores)");
  add_device_options(sub, o->dev);
  add_repack_option(sub, o->no_repack);
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f16, bf16, q8_0, f32")->capture_default_str();
  add_context_option(sub, o->ctx, "context size in tokens (0: prompt + n, at most the model's)");
  sub.add_flag("--print-ids", o->print_ids, "print token ids instead of text (prompt ids, then generated ids)")
      ->group("");
  sub.add_option("--lora", o->lora,
                 "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors), optionally :SCALE "
                 "(a factor on its alpha/r); repeat to stack adapters")
      ->allow_extra_args(false);
  sub.add_option("--routing-trace", o->routing_trace,
                 "write each generated token's chosen experts and weights per layer to FILE (JSON lines)");
  sub.footer(environment_footer({"MOE_MODEL", "MOE_ISA"}));
  return [o, model] {
    o->model = model->model();
    return run_run(*o);
  };
});

}  // namespace
}  // namespace moe::cli
