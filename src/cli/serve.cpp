// serve.cpp: `moe serve`, the OpenAI-compatible HTTP server (src/server) over the serving engine.
// SIGTERM and SIGINT are blocked in every thread (the mask is set before the engine starts its threads)
// and taken by one watcher thread with sigwait, so the graceful shutdown runs as ordinary code, not in
// a signal handler: 503 for new requests, finish what is in flight (cancelling what is left at
// --shutdown-timeout), exit 0. A second SIGTERM or SIGINT during the drain exits at once.
// The KV pool is sized before the engine loads, from the memory that is really there (plan/kv_pool.h):
// a context that cannot fit is refused here, at start, rather than the kernel killing the server later.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "engine/engine.h"
#include "engine/lora_loader.h"
#include "gguf/gguf.h"
#include "hf/hf.h"
#include "model/hparams.h"
#include "model/model.h"
#include "model/vulkan_backend.h"
#include "plan/device_plan.h"
#include "plan/kv_pool.h"
#include "plan/memory.h"
#include "vulkan/context.h"
#include "util/thread_pool.h"
#include "kv/kv_types.h"
#include "server/auth.h"
#include "server/engine_backend.h"
#include "server/server.h"
#include "util/available_memory.h"
#include "util/checked.h"
#include "util/error.h"
#include "util/log.h"

namespace moe::cli {
namespace {

struct ServeOpts {
  ModelArg model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string api_key_file;
  std::string served_model_name;
  int max_num_seqs = 16;
  int64_t max_model_len = 0;
  bool max_model_len_given = false;  // set from the option's count when the command runs
  int64_t max_num_batched_tokens = 512;
  std::string kv_cache_dtype = "f16";
  std::string memory_budget;
  std::string memory_available;
  double memory_utilization = 0.9;
  bool enable_prefix_caching = true;
  int max_queue = 256;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  bool no_repack = false;
  std::string chat_template;
  std::string data_dir;
  int64_t max_upload_mib = 512;
  int batch_in_flight = 4;
  // The HTTP transport (server/http_transport.h) and CORS.
  double shutdown_timeout = 30;
  double request_timeout = 30;
  int64_t max_connections = 1024;
  int64_t max_connections_per_ip = 256;
  std::vector<std::string> cors_origins;
  std::vector<std::string> lora_modules;  // NAME=DIR: PEFT adapters served as models over the base
  int max_cpu_loras = 0;                  // adapters held in memory at once (0: all of them)
};

// Addresses only this machine can reach: no key needed there.
bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host == "ip6-localhost" ||
         host.rfind("127.", 0) == 0;
}

// The KV pool from the memory that is there (plan/kv_pool.h), with the figures the start-up lines and
// /metrics show. `process_base` is this process's resident size measured before anything was loaded.
// Bytes the LoRA adapters can hold at once: all of them, or the --max-cpu-loras largest. Each adapter is
// checked against the base here (config, names, shapes), so a bad one stops the start, naming it.
uint64_t lora_bytes(const ServeOpts& o, const model::HParams& hp) {
  std::vector<uint64_t> sizes;
  for (const std::string& arg : o.lora_modules) {
    const auto m = engine::LoraRegistry::parse_module(arg);
    try {
      sizes.push_back(engine::inspect_lora(m.path, hp, model::qk_row_order(hp)).bytes);
    } catch (const Error& e) {
      fail("--lora-modules: the adapter '", m.name, "' cannot be used: ", e.what());
    }
  }
  std::sort(sizes.rbegin(), sizes.rend());
  if (o.max_cpu_loras > 0 && sizes.size() > static_cast<size_t>(o.max_cpu_loras)) sizes.resize(static_cast<size_t>(o.max_cpu_loras));
  uint64_t total = 0;
  for (uint64_t s : sizes) total += s;
  return total;
}

plan::PoolPlan size_kv_pool(const ServeOpts& o, const engine::EngineConfig& cfg, uint64_t process_base) {
  plan::PoolOptions po;
  po.max_model_len = o.max_model_len;
  po.max_model_len_given = o.max_model_len_given && o.max_model_len > 0;
  po.max_num_seqs = o.max_num_seqs;
  po.kv_type = cfg.kv_type;
  po.batch_tokens = cfg.max_num_batched_tokens;
  po.n_threads = cfg.n_threads > 0 ? cfg.n_threads : physical_core_count();
  po.http_threads = plan::serve_http_threads(o.max_num_seqs);
  po.process_base_bytes = process_base;
  po.utilization = o.memory_utilization;
  if (!o.memory_budget.empty()) po.memory_budget = plan::parse_size(o.memory_budget);
  if (!o.memory_available.empty()) {
    po.available = plan::parse_size(o.memory_available);
    po.available_source = "--memory-available";
  } else {
    try {
      const AvailableMemory a = read_available_memory();
      po.available = a.bytes;
      po.available_source = a.source();
    } catch (const Error&) {
      if (po.memory_budget == 0) throw;  // with a budget the figure only feeds a warning
    }
  }
  const gguf::File file = hf::open_model_file(cfg.model_path);
  const model::HParams hp = model::HParams::from_gguf(file);
  po.lora_bytes = lora_bytes(o, hp);
  const plan::WeightsLayout layout = plan::layout_of_file(file);
  plan::PoolPlan pool = plan::plan_kv_pool(hp, layout, file.metadata(), po);
  // On a Vulkan device the pool is mirrored on the card: the device's budget bounds it too.
  const int device = model::parse_device(cfg.device);
  if (device != model::kCpuDevice) {
    std::string why;
    const std::vector<vk::DeviceInfo> devices = vk::list_devices(&why);
    if (devices.empty()) fail("--device ", cfg.device, ": no Vulkan device (", why, ")");
    const int index = device == model::kPreferredVulkanDevice ? vk::preferred_device(devices) : device;
    if (index < 0 || index >= static_cast<int>(devices.size()))
      fail("--device ", cfg.device, ": this machine has ", devices.size(), " Vulkan device(s) (`moe info --devices`)");
    const uint64_t budget =
        cfg.gpu_memory ? cfg.gpu_memory : model::VulkanBackend::default_budget(devices[static_cast<size_t>(index)]);
    plan::fit_pool_to_device(pool, hp, layout, budget, cfg.max_num_batched_tokens,
                             devices[static_cast<size_t>(index)].max_storage_buffer_range);
  }
  return pool;
}

// The pool plan as gauges on /metrics: the same numbers as the start-up lines.
void publish_memory_gauges(const plan::PoolPlan& p) {
  auto gauge = [](const char* name, const char* help, double v) { server::set_process_gauge(name, help, v); };
  gauge("moe_memory_available_bytes", "Memory the KV pool was sized from (MemAvailable, cgroup room or --memory-available).",
        double(p.options.available));
  gauge("moe_memory_utilization", "Fraction of the available memory planned for (--memory-utilization).",
        p.options.utilization);
  gauge("moe_memory_usable_bytes", "Available memory times the utilization.", double(p.usable));
  gauge("moe_kv_pool_bytes", "Bytes of the KV pool (blocks times block bytes).", double(p.kv_bytes));
  gauge("moe_kv_block_bytes", "Bytes of one KV block.", double(p.block_bytes));
  gauge("moe_max_model_len", "Context length of a sequence, in tokens.", double(p.max_model_len));
  gauge("moe_weights_mapped_bytes", "Weights mmap'd from the model file (pageable).", double(p.weights_mapped));
  gauge("moe_weights_resident_bytes", "Weights that must stay resident (not file-backed).", double(p.weights_resident));
  gauge("moe_weights_paged_bytes", "Mapped weights that do not fit beside the KV pool (read from the file as needed).",
        double(p.weights_paged()));
  gauge("moe_workspace_bytes", "Forward-pass workspace.", double(p.memory.workspace_bytes));
  gauge("moe_memory_overhead_bytes", "Runtime overhead (process, metadata, tokenizer, threads, buffers).",
        double(p.memory.overhead_bytes));
}

int run_serve(const ServeOpts& o) {
  // The runtime's own resident size, before this process touches a model (the planner's base).
  const uint64_t process_base = plan::process_base_bytes(plan::current_rss_bytes());
  if (!o.api_key.empty() && !o.api_key_file.empty()) fail("give --api-key or --api-key-file, not both");
  std::string api_key = o.api_key_file.empty() ? o.api_key : server::read_api_key_file(o.api_key_file);
  if (api_key.empty() && o.api_key_file.empty())
    if (const char* env = std::getenv("MOE_API_KEY")) api_key = env;

  engine::EngineConfig cfg;
  cfg.model_path = model_or_default(o.model.model());
  cfg.n_threads = o.threads;
  cfg.device = o.dev.device;
  cfg.gpu_memory = o.dev.gpu_memory_bytes();
  cfg.max_num_seqs = o.max_num_seqs;
  cfg.max_num_batched_tokens = o.max_num_batched_tokens;
  auto kv = kv::parse_kv_type(o.kv_cache_dtype);
  if (!kv) fail("--kv-cache-dtype: unknown type '", o.kv_cache_dtype, "' (f16, q8_0, bf16 or f32)");
  cfg.kv_type = *kv;
  const plan::PoolPlan pool = size_kv_pool(o, cfg, process_base);
  cfg.max_model_len = pool.max_model_len;
  cfg.memory_budget = pool.kv_bytes;  // exactly pool.kv_blocks blocks
  cfg.enable_prefix_caching = o.enable_prefix_caching;
  cfg.max_queue = o.max_queue;
  cfg.chat_template_override = o.chat_template;  // a built-in name, a file or template text: the prompt builder resolves it

  // glibc gives each thread that allocates under contention its own arena, up to 8 per core, and keeps
  // what an arena freed: with ~128 HTTP workers each parsing a large body once, resident memory climbed
  // by the body's parsed size per worker (20 requests of 4.5 MB of JSON: 13 MB -> 881 MB). As many
  // arenas as cores keeps it flat (76-172 MB over the same 20; see BENCHMARKS.md). MALLOC_ARENA_MAX wins.
  if (!std::getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, std::max(2, physical_core_count()));

  // Before any thread exists, so every thread inherits the mask and only the watcher sees the signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server; writes fail instead

  engine::LoadOptions lo = engine::load_options(cfg);
  lo.repack = !o.no_repack;
  const auto loaded = engine::load_model(cfg.model_path, lo);
  engine::Engine engine(loaded, cfg);
  if (engine.stats().kv_blocks_total != pool.kv_blocks)
    fail("the engine allocated ", engine.stats().kv_blocks_total, " KV blocks where the plan sized ", pool.kv_blocks);
  publish_memory_gauges(pool);
  // LoRA adapters (--lora-modules): checked here, loaded on each one's first request.
  std::vector<engine::LoraRegistry::Module> modules;
  for (const std::string& arg : o.lora_modules) modules.push_back(engine::LoraRegistry::parse_module(arg));
  engine::LoraRegistry loras(loaded, modules, o.max_cpu_loras);
  server::EngineBackend backend(engine, &loras);

  server::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.api_key = api_key;
  std::filesystem::path model_path(cfg.model_path);
  so.served_model_name = o.served_model_name.empty() ? model_path.stem().string() : o.served_model_name;
  so.model_aliases = {model_path.filename().string(), cfg.model_path, model_path.stem().string()};
  if (!o.model.model().empty()) so.model_aliases.push_back(o.model.model());
  for (const auto& m : modules)
    if (m.name == so.served_model_name ||
        std::find(so.model_aliases.begin(), so.model_aliases.end(), m.name) != so.model_aliases.end())
      fail("--lora-modules: the adapter name '", m.name, "' is the base model's name; give it another");
  so.http_threads = plan::serve_http_threads(o.max_num_seqs);
  so.data_dir = o.data_dir;
  so.max_upload_bytes = size_t(o.max_upload_mib) << 20;
  so.batch_in_flight = o.batch_in_flight;
  so.shutdown_timeout_s = o.shutdown_timeout;
  so.request_timeout_s = o.request_timeout;
  so.max_connections = size_t(o.max_connections);
  so.max_connections_per_ip = size_t(o.max_connections_per_ip);
  so.cors_origins = o.cors_origins;

  server::Server server(backend, so);
  int port = server.bind();
  std::string memory_lines, line;
  std::istringstream plan_text(plan::describe_pool(pool));
  while (std::getline(plan_text, line)) memory_lines += "moe serve: " + line + "\n";
  if (auto* vk_backend = dynamic_cast<model::VulkanBackend*>(&loaded->model->backend())) {
    const model::DevicePlacement& pl = vk_backend->placement();
    memory_lines += cat("moe serve: device: ", cfg.device, " (", vk_backend->device().name, "): budget ",
                        plan::format_bytes(pl.budget), ", experts on the card ", pl.experts_on_card, " of ",
                        pl.experts_total, pl.experts_on_card < pl.experts_total ? " (the others run on the CPU)" : "",
                        "\n");
  }
  // The warning comes before the "listening on" line, which is what scripts wait for.
  const std::string open_warning =
      api_key.empty() && !is_loopback(o.host)
          ? cat("moe serve: warning: listening on ", o.host, ":", port,
                " without an API key: anyone who can reach this address can use the model (set --api-key, "
                "--api-key-file or MOE_API_KEY)\n")
          : std::string();
  std::string lora_lines;
  for (const auto& m : modules)
    lora_lines += cat("moe serve: LoRA adapter '", m.name, "' from ", m.path, " (", plan::format_bytes(loras.declared_bytes(m.name)),
                      ", loaded on first use)\n");
  std::cerr << "moe serve: serving " << so.served_model_name << " (context " << backend.max_model_len()
            << " tokens)\n" << memory_lines << lora_lines << open_warning << "moe serve: listening on http://" << o.host << ":"
            << port << std::endl;

  std::atomic<bool> serving_done{false};
  std::thread stopper;  // runs the drain, so the watcher can take a second signal meanwhile
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (serving_done) return;
    std::cerr << "moe serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ": finishing in-flight requests (at most " << o.shutdown_timeout
              << " s), refusing new ones; a second signal exits at once" << std::endl;
    stopper = std::thread([&] { server.shutdown(); });
    sigwait(&stop_signals, &sig);
    if (serving_done) return;
    std::cerr << "moe serve: second " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ": exiting now" << std::endl;
    std::_Exit(128 + sig);
  });
  try {
    server.run();
  } catch (...) {
    serving_done = true;
    pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    if (stopper.joinable()) stopper.join();
    throw;
  }
  serving_done = true;
  pthread_kill(watcher.native_handle(), SIGTERM);  // wakes the watcher if no signal (or one) came
  watcher.join();
  if (stopper.joinable()) stopper.join();
  std::cerr << "moe serve: stopped" << std::endl;
  return 0;
}

Registrar reg("serve", "Serve a model over an OpenAI-compatible HTTP API", [](CLI::App& sub) {
  auto o = std::make_shared<ServeOpts>();
  add_model_options(sub, o->model, "GGUF file (default: MOE_MODEL, else the bundled model)");
  sub.add_option("--host", o->host, "Address to listen on (a warning without an API key beyond loopback)")
      ->envname("MOE_HOST")
      ->capture_default_str();
  sub.add_option("--port", o->port, "Port (0: any free port, printed on stderr)")
      ->envname("MOE_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  sub.add_option("--api-key", o->api_key,
                 "Require 'Authorization: Bearer KEY' on every route but /health (else MOE_API_KEY)");
  sub.add_option("--api-key-file", o->api_key_file, "Read the API key from the first line of this file");
  sub.add_option("--served-model-name", o->served_model_name, "Model name in the API (default: the file's stem)");
  sub.add_option("--parallel,--max-num-seqs", o->max_num_seqs, "Sequences running at once (also -np N)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  CLI::Option* ctx = add_context_option(
      sub, o->max_model_len, "Context length per sequence (0: the model's, cut to what fits in memory)");
  sub.add_option("--max-num-batched-tokens", o->max_num_batched_tokens, "Tokens per engine step")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--kv-cache-dtype", o->kv_cache_dtype, "KV cache element type: f16 or q8_0 (also bf16, f32)")
      ->capture_default_str();
  sub.add_option("--memory-utilization,--gpu-memory-utilization", o->memory_utilization,
                 "Fraction of the available memory the server plans to use; the KV pool gets what is left of it "
                 "after the workspace, overhead and the weights' page cache")
      ->capture_default_str();
  sub.add_option("--memory-available", o->memory_available,
                 "Memory to assume available, like 16G or 24GiB (default: MemAvailable, or the room under this "
                 "process's cgroup limit when smaller)");
  sub.add_option("--memory-budget", o->memory_budget,
                 "KV pool size, like 2G, instead of sizing it from the available memory");
  sub.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o->enable_prefix_caching,
               "Reuse the KV blocks of repeated prompt prefixes (on by default)");
  sub.add_option("--max-queue", o->max_queue, "Waiting requests beyond this get 429")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "Compute threads (0: physical cores)")->check(CLI::Range(0, 1024));
  add_device_options(sub, o->dev);
  add_repack_option(sub, o->no_repack);
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
  sub.add_option("--shutdown-timeout", o->shutdown_timeout,
                 "On SIGTERM/SIGINT, seconds to let in-flight requests finish before cancelling them (a second "
                 "signal exits at once)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  sub.add_option("--request-timeout", o->request_timeout,
                 "Seconds a client has to send a whole request (head and body; plus 1 s per MiB of body): slower "
                 "ones get 408")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  sub.add_option("--max-connections", o->max_connections,
                 "Open connections in all (also cut to the descriptor limit); beyond it idle ones are closed or "
                 "new ones refused with 503")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--max-connections-per-ip", o->max_connections_per_ip,
                 "Open connections per client address; a new one closes that address's oldest waiting one, or "
                 "is refused with 503")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--cors-origin", o->cors_origins,
                 "Allow browser pages from this origin (e.g. https://app.example.com; repeatable, or * for any) "
                 "to call the API: CORS headers and preflight answers. Off by default");
  sub.add_option("--lora-modules", o->lora_modules,
                 "PEFT LoRA adapters served as models over the base: NAME=DIR ... (a request picks one by 'model'); "
                 "each is checked at start and loaded on first use");
  sub.add_option("--max-cpu-loras", o->max_cpu_loras,
                 "LoRA adapters held in memory at once; beyond it the least recently used idle one is dropped (0: all)")
      ->check(CLI::Range(0, 1 << 20));
  sub.footer("The KV pool is sized at start from the memory that is there: (available x --memory-utilization)\n"
             "less workspace, overhead and room for the mmap'd weights, at least one sequence of -c tokens and at\n"
             "most -c x -np. A -c of which not even one sequence fits is refused at start, with what would fit.\n"
             "`moe plan MODEL --serve -c N -np N` prints the same plan.\n" +
             environment_footer({"MOE_MODEL", "MOE_HOST", "MOE_PORT", "MOE_API_KEY"}));
  return [o, ctx] {
    o->max_model_len_given = ctx->count() > 0;
    return run_serve(*o);
  };
});

}  // namespace
}  // namespace moe::cli
