// chat.cpp: `moe chat [MODEL]`: an interactive multi-turn chat on the terminal. Each turn renders the
// whole conversation with the model's own chat template (or a built-in one), so the prompt the model
// sees is exactly what the server would send; the engine's prefix cache means earlier turns are not
// recomputed. Commands: /reset (forget the conversation), /system TEXT (set the system message and
// reset), /exit (or end of input).
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "engine/engine.h"
#include "engine/lora_loader.h"
#include "model/model.h"
#include "util/error.h"

namespace moe::cli {
namespace {

struct ChatOpts {
  std::string model;
  std::string system;
  std::string chat_template;
  int64_t n_predict = 512;
  float temp = 0.7f;
  float top_p = 0.95f;
  int64_t seed = -1;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  bool no_repack = false;
  int64_t ctx = 4096;
  std::vector<std::string> lora;  // --lora DIR[:SCALE]: PEFT adapters stacked on the base (lora_loader.h)
  GrammarArgs grammar;  // --grammar-file / --json-schema: every reply constrained
};

int run_chat(const ChatOpts& o) {
  const auto output_grammar = o.grammar.load();
  engine::EngineConfig cfg;
  cfg.max_num_seqs = 1;
  cfg.max_model_len = o.ctx;
  engine::LoadOptions lo;
  lo.n_threads = o.threads;
  lo.device = o.dev.device;
  lo.gpu_memory = o.dev.gpu_memory_bytes();
  lo.max_batch_tokens = cfg.max_num_batched_tokens;
  lo.chat_template_override = o.chat_template;
  lo.repack = !o.no_repack;
  const auto model = engine::load_model(model_or_default(o.model), lo);
  const auto adapter = engine::load_lora_stack(o.lora, *model->model->spec());
  engine::Engine eng(model, cfg);
  const bool interactive = isatty(STDIN_FILENO);

  nlohmann::ordered_json messages;
  std::string system;
  auto reset_with = [&](const std::string& sys) {
    system = sys;
    messages = nlohmann::ordered_json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  };
  reset_with(o.system);
  if (interactive) std::fprintf(stderr, "moe chat: /reset, /system TEXT, /exit\n");

  uint64_t turn = 0;
  std::string line;
  for (;;) {
    if (interactive) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset_with(system);
      std::printf("[conversation reset]\n");
      std::fflush(stdout);
      continue;
    }
    if (line.rfind("/system", 0) == 0) {
      size_t text = line.find_first_not_of(' ', 7);
      reset_with(text == std::string::npos ? std::string() : line.substr(text));
      std::printf("[system message set; conversation reset]\n");
      std::fflush(stdout);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    engine::Request req;
    req.prompt = model->prompts->chat_prompt(messages);  // the model's template, BOS exactly once
    req.adapter = adapter;
    req.max_tokens = o.n_predict;
    req.sampling.temperature = o.temp;
    req.sampling.top_p = o.top_p;
    if (o.seed >= 0) req.sampling.seed = static_cast<uint64_t>(o.seed) + turn;
    req.sampling.grammar = output_grammar;
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    std::string reply, error;
    engine::Callbacks cb;
    cb.on_delta = [&](const engine::Delta& d) {
      std::fwrite(d.text.data(), 1, d.text.size(), stdout);
      std::fflush(stdout);
      reply += d.text;
    };
    cb.on_finish = [&](engine::FinishReason r, const engine::Usage&, const std::string& err) {
      std::lock_guard<std::mutex> lock(mu);
      finished = true;
      if (r == engine::FinishReason::Error) error = err;
      cv.notify_all();
    };
    eng.submit(std::move(req), std::move(cb));
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return finished; });
    }
    if (!error.empty()) fail(error);
    std::printf("\n");
    std::fflush(stdout);
    // The reply is kept without its leading space: templates add their own separators.
    size_t start = reply.find_first_not_of(' ');
    messages.push_back({{"role", "assistant"}, {"content", start == std::string::npos ? "" : reply.substr(start)}});
    ++turn;
  }
  return 0;
}

Registrar reg("chat", "Chat with a model interactively, using its chat template (/reset, /system TEXT, /exit)",
              [](CLI::App& sub) {
                auto o = std::make_shared<ChatOpts>();
                auto model = std::make_shared<ModelArg>();
                add_model_options(sub, *model, "GGUF model (default: MOE_MODEL, else the bundled model)");
                sub.add_option("--system", o->system, "System message");
                sub.add_option("--chat-template", o->chat_template, "Built-in template name, .jinja file or template text");
                sub.add_option("-n,--n-predict", o->n_predict, "Maximum tokens per reply")->check(CLI::Range(1, 1 << 20));
                sub.add_option("--temp", o->temp, "Temperature (0: greedy)")->check(CLI::Range(0.0, 10.0));
                sub.add_option("--top-p", o->top_p, "Top-p")->check(CLI::Range(0.0, 1.0));
                sub.add_option("--seed", o->seed, "Seed (turn i uses seed + i)");
                add_grammar_options(sub, o->grammar);
                sub.add_option("-t,--threads", o->threads, "Threads (default: physical cores)")->check(CLI::Range(0, 1024));
                add_device_options(sub, o->dev);
                add_repack_option(sub, o->no_repack);
                sub.add_option("--lora", o->lora,
                               "PEFT LoRA adapter directory, optionally :SCALE (a factor on its alpha/r); repeat to stack")
                    ->allow_extra_args(false);
                add_context_option(sub, o->ctx, "Context length (0: the model's)")->capture_default_str();
                sub.footer(environment_footer({"MOE_MODEL", "MOE_ISA"}));
                return [o, model] {
                  o->model = model->model();
                  return run_chat(*o);
                };
              });

}  // namespace
}  // namespace moe::cli
