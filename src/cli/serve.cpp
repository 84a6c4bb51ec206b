// serve.cpp: `moe serve`, the OpenAI-compatible HTTP server (src/server) over the serving engine.
// SIGTERM and SIGINT are blocked in every thread (the mask is set before the engine starts its threads)
// and taken by one watcher thread with sigwait, so the graceful shutdown runs as ordinary code, not in
// a signal handler: 503 for new requests, finish what is in flight, exit 0.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "cli/command.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "model/hparams.h"
#include "plan/memory.h"
#include "util/thread_pool.h"
#include "kv/kv_types.h"
#include "server/auth.h"
#include "server/engine_backend.h"
#include "server/server.h"
#include "util/checked.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::cli {
namespace {

struct ServeOpts {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string api_key_file;
  std::string served_model_name;
  int max_num_seqs = 16;
  int64_t max_model_len = 0;
  int64_t max_num_batched_tokens = 512;
  std::string kv_cache_dtype = "f16";
  std::string memory_budget;
  bool enable_prefix_caching = true;
  int max_queue = 256;
  int threads = 0;
  std::string chat_template;
  std::string data_dir;
  int64_t max_upload_mib = 512;
  int batch_in_flight = 4;
};

// "123", "64M", "8G", "512KiB", "2GB": bytes, with binary multiples.
uint64_t parse_bytes(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 19) fail("--memory-budget: '", text, "' is not a byte count (like 4000000000, 512M or 8G)");
  uint64_t value = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  for (auto& c : unit) c = char(std::tolower(static_cast<unsigned char>(c)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1ull << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1ull << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1ull << 30;
  else if (unit == "t" || unit == "tb" || unit == "tib") mult = 1ull << 40;
  else fail("--memory-budget: unknown unit '", text.substr(i), "' (use K, M, G or T)");
  return checked_mul(value, mult, "--memory-budget");
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The memory the server holds, through the planner's functions (the same the allocators use): the
// mapped weights, the KV pool the engine allocated, the model's workspace and the runtime overhead.
std::string memory_report(const engine::EngineConfig& cfg, const engine::Engine& engine) {
  const gguf::File file = gguf::File::open(cfg.model_path);
  plan::MemoryOptions mo;
  mo.ctx = engine.max_model_len();
  mo.seqs = cfg.max_num_seqs;
  mo.kv_type = cfg.kv_type;
  mo.batch_tokens = cfg.max_num_batched_tokens;
  mo.n_threads = cfg.n_threads > 0 ? cfg.n_threads : physical_core_count();
  const plan::MemoryPlan p = plan::plan_memory(engine.hparams(), plan::layout_of_file(file), file.metadata(), mo);
  const auto& hp = engine.hparams();
  const int64_t blocks = engine.stats().kv_blocks_total;
  const uint64_t kv_pool = static_cast<uint64_t>(blocks) * kv::kBlockTokens *
                           kv::kv_bytes_per_token(cfg.kv_type, hp.n_layer, hp.n_head_kv, hp.head_dim);
  return cat("moe serve: memory: weights ", plan::format_bytes(p.file_bytes), " + KV pool ", plan::format_bytes(kv_pool),
             " (", blocks, " blocks of ", kv::kBlockTokens, " tokens, ", kv::kv_type_name(cfg.kv_type), ") + workspace ",
             plan::format_bytes(p.workspace_bytes), " + overhead ", plan::format_bytes(p.overhead_bytes), " = ",
             plan::format_bytes(p.file_bytes + kv_pool + p.workspace_bytes + p.overhead_bytes), "\n");
}

int run_serve(const ServeOpts& o) {
  if (!o.api_key.empty() && !o.api_key_file.empty()) fail("give --api-key or --api-key-file, not both");
  std::string api_key = o.api_key_file.empty() ? o.api_key : server::read_api_key_file(o.api_key_file);

  engine::EngineConfig cfg;
  cfg.model_path = model_or_default(o.model);
  cfg.n_threads = o.threads;
  cfg.max_num_seqs = o.max_num_seqs;
  cfg.max_model_len = o.max_model_len;
  cfg.max_num_batched_tokens = o.max_num_batched_tokens;
  auto kv = kv::parse_kv_type(o.kv_cache_dtype);
  if (!kv) fail("--kv-cache-dtype: unknown type '", o.kv_cache_dtype, "' (f16, q8_0, bf16, fp8 or f32)");
  cfg.kv_type = *kv;
  if (!o.memory_budget.empty()) cfg.memory_budget = parse_bytes(o.memory_budget);
  cfg.enable_prefix_caching = o.enable_prefix_caching;
  cfg.max_queue = o.max_queue;
  if (!o.chat_template.empty()) {
    std::error_code ec;
    cfg.chat_template_override =
        std::filesystem::is_regular_file(o.chat_template, ec) ? read_text_file(o.chat_template) : o.chat_template;
  }

  // Before any thread exists, so every thread inherits the mask and only the watcher sees the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server; writes fail instead

  engine::Engine engine(cfg);
  server::EngineBackend backend(engine);

  server::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.api_key = api_key;
  std::filesystem::path model_path(cfg.model_path);
  so.served_model_name = o.served_model_name.empty() ? model_path.stem().string() : o.served_model_name;
  so.model_aliases = {model_path.filename().string(), cfg.model_path, model_path.stem().string()};
  if (!o.model.empty()) so.model_aliases.push_back(o.model);
  so.http_threads = std::max(128, 4 * o.max_num_seqs + 64);
  so.data_dir = o.data_dir;
  so.max_upload_bytes = size_t(o.max_upload_mib) << 20;
  so.batch_in_flight = o.batch_in_flight;

  server::Server server(backend, so);
  int port = server.bind();
  std::cerr << "moe serve: serving " << so.served_model_name << " (context " << backend.max_model_len()
            << " tokens)\n" << memory_report(cfg, engine) << "moe serve: listening on http://" << o.host << ":" << port
            << std::endl;

  std::atomic<bool> serving_done{false};
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (serving_done) return;
    std::cerr << "moe serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ": finishing in-flight requests, refusing new ones" << std::endl;
    server.shutdown();
  });
  try {
    server.run();
  } catch (...) {
    serving_done = true;
    pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    throw;
  }
  serving_done = true;
  pthread_kill(watcher.native_handle(), SIGTERM);  // wakes the watcher if no signal came
  watcher.join();
  std::cerr << "moe serve: stopped" << std::endl;
  return 0;
}

Registrar reg("serve", "Serve a model over an OpenAI-compatible HTTP API", [](CLI::App& sub) {
  auto o = std::make_shared<ServeOpts>();
  sub.add_option("model", o->model, "GGUF file (default: the bundled model)");
  sub.add_option("--host", o->host, "Address to listen on")->capture_default_str();
  sub.add_option("--port", o->port, "Port (0: any free port, printed on stderr)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub.add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  sub.add_option("--api-key-file", o->api_key_file, "Read the API key from the first line of this file");
  sub.add_option("--served-model-name", o->served_model_name, "Model name in the API (default: the file's stem)");
  sub.add_option("--max-num-seqs", o->max_num_seqs, "Sequences running at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub.add_option("--max-model-len", o->max_model_len, "Context length (0: the model's, capped by memory)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24));
  sub.add_option("--max-num-batched-tokens", o->max_num_batched_tokens, "Tokens per engine step")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--kv-cache-dtype", o->kv_cache_dtype, "KV cache element type: f16 or q8_0 (also bf16, fp8, f32)")
      ->capture_default_str();
  sub.add_option("--memory-budget", o->memory_budget,
                 "Bytes for the KV cache, like 2G (default: max-model-len x max-num-seqs)");
  sub.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o->enable_prefix_caching,
               "Reuse the KV blocks of repeated prompt prefixes (on by default)");
  sub.add_option("--max-queue", o->max_queue, "Waiting requests beyond this get 429")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "Compute threads (0: physical cores)")->check(CLI::Range(0, 1024));
  sub.add_option("--chat-template", o->chat_template,
                 "A built-in template name (chatml, mixtral, llama3, ...) or a Jinja template file");
  sub.add_option("--data-dir", o->data_dir,
                 "Directory for the Batch API's files and jobs (enables /v1/files and /v1/batches; jobs resume "
                 "after a restart)");
  sub.add_option("--max-upload-mib", o->max_upload_mib, "Largest file upload, in MiB")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--batch-in-flight", o->batch_in_flight,
                 "Batch API requests in flight at once (the rest of --max-num-seqs stays for interactive ones)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  return [o] { return run_serve(*o); };
});

}  // namespace
}  // namespace moe::cli
