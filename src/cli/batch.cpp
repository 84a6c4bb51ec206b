// batch.cpp: `moe batch [MODEL] INPUT.jsonl OUTPUT.jsonl`, an OpenAI batch file run through the engine
// at full batch, exactly once across crashes, on one machine, on N by hand (--shard I/N, then --merge),
// or on N Open MPI ranks (`mpirun -np N moe batch ...`).
//
// The job: scan INPUT (batch/format.h), load what the journal already holds (batch/journal.h), answer
// the rest of this process's contiguous share with many lines in flight (server/batch_exec.h), then
// write OUTPUT and the errors file atomically in input order and drop the journal. Under MPI every rank
// does the same for its share and streams its records to rank 0, which writes the one output; a rank
// that dies leaves the others' journals, and the same command run again finishes only what is missing.
// SIGINT/SIGTERM stop cleanly (in-flight requests cancelled, the journal synced; exit 130); SIGKILL and
// power cuts lose at most the unsynced answers, which are asked again.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "batch/cluster.h"
#include "batch/format.h"
#include "batch/journal.h"
#include "batch/merge.h"
#include "cli/command.h"
#include "cli/common_flags.h"
#include "engine/engine.h"
#include "engine/loaded_model.h"
#include "engine/lora_loader.h"
#include "kv/kv_types.h"
#include "model/model.h"
#include "server/batch_exec.h"
#include "server/engine_backend.h"
#include "util/error.h"

namespace moe::cli {
namespace {

struct BatchOpts {
  std::vector<std::string> files;
  std::string errors;
  std::string state_dir;
  std::string shard;
  bool merge = false;
  std::string progress = "auto";
  int in_flight = 0;
  std::string served_model_name;
  int max_num_seqs = 32;
  int64_t max_model_len = 0;
  int64_t max_num_batched_tokens = 512;
  std::string kv_cache_dtype = "f16";
  bool enable_prefix_caching = true;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  std::string chat_template;
  std::vector<std::string> lora_modules;  // NAME=DIR: adapters a line picks by its body's "model"
  int max_cpu_loras = 0;                  // adapters held in memory at once (0: all of them)
};

// The one place an Engine is built for `moe batch`, with the LoRA adapters of --lora-modules (each
// checked against the base here, so a bad one stops the job before any line is answered, naming it;
// loaded on the first line that picks it).
std::unique_ptr<engine::Engine> make_engine(const BatchOpts& o, const std::string& model_path,
                                            std::unique_ptr<engine::LoraRegistry>& loras) {
  engine::EngineConfig cfg;
  cfg.model_path = model_path;
  cfg.n_threads = o.threads;
  cfg.device = o.dev.device;
  cfg.gpu_memory = o.dev.gpu_memory_bytes();
  cfg.max_num_seqs = o.max_num_seqs;
  cfg.max_model_len = o.max_model_len;
  cfg.max_num_batched_tokens = o.max_num_batched_tokens;
  auto kv = kv::parse_kv_type(o.kv_cache_dtype);
  if (!kv) fail("--kv-cache-dtype: unknown type '", o.kv_cache_dtype, "' (f16, q8_0, bf16 or f32)");
  cfg.kv_type = *kv;
  cfg.enable_prefix_caching = o.enable_prefix_caching;
  cfg.max_queue = std::max(256, 2 * o.in_flight);
  cfg.chat_template_override = o.chat_template;  // a built-in name, a file or template text: the prompt builder resolves it
  engine::LoadOptions lo = engine::load_options(cfg);
  const auto loaded = engine::load_model(model_path, lo);
  std::vector<engine::LoraRegistry::Module> modules;
  for (const std::string& arg : o.lora_modules) {
    modules.push_back(engine::LoraRegistry::parse_module(arg));
    try {
      engine::inspect_lora(modules.back().path, *loaded->model->spec());
    } catch (const Error& e) {
      fail("--lora-modules: the adapter '", modules.back().name, "' cannot be used: ", e.what());
    }
  }
  loras = std::make_unique<engine::LoraRegistry>(loaded, std::move(modules), o.max_cpu_loras);
  return std::make_unique<engine::Engine>(loaded, cfg);
}

// `created` of every response: the input's modification time, so that every run of the same file
// (re-runs, shards, ranks) writes the same bytes.
int64_t input_mtime(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot read the input ", path);
  return int64_t(st.st_mtime);
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

// Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise.
class ProgressPrinter {
 public:
  ProgressPrinter(const std::string& mode, std::string prefix, int64_t already, int64_t share)
      : prefix_(std::move(prefix)), already_(already), share_(share) {
    bool tty = ::isatty(2);
    if (mode == "bar") bar_ = true;
    else if (mode == "lines") bar_ = false;
    else if (mode == "none") off_ = true;
    else if (mode == "auto") bar_ = tty;
    else fail("--progress: '", mode, "' is not auto, bar, lines or none");
  }

  void update(const server::BatchProgress& p, bool final = false) {
    if (off_) return;
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (!final && since < (bar_ ? 0.2 : 5.0)) return;
    last_ = now;
    const int64_t done = already_ + p.done;
    const double rate = p.elapsed_s > 0 ? double(p.done) / p.elapsed_s : 0;
    const double tps = p.elapsed_s > 0 ? double(p.generated_tokens) / p.elapsed_s : 0;
    const double eta = rate > 0 ? double(share_ - done) / rate : -1;
    char stats[160];
    std::snprintf(stats, sizeof stats, "%lld/%lld (%lld failed) %.1f req/s %.1f tok/s ETA %s", (long long)done,
                  (long long)share_, (long long)p.failed, rate, tps, final ? "0:00" : format_duration(eta).c_str());
    if (bar_) {
      constexpr int kWidth = 30;
      int filled = share_ > 0 ? int(kWidth * done / share_) : kWidth;
      std::string bar(size_t(filled), '#');
      bar.resize(kWidth, '.');
      std::fprintf(stderr, "\r%s[%s] %s\x1b[K%s", prefix_.c_str(), bar.c_str(), stats, final ? "\n" : "");
    } else {
      std::fprintf(stderr, "%s%s\n", prefix_.c_str(), stats);
    }
    std::fflush(stderr);
  }

 private:
  std::string prefix_;
  int64_t already_, share_;
  bool bar_ = false, off_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// Blocks SIGINT/SIGTERM in every thread (before the engine starts its own) and stops the runner from
// a watcher thread when one arrives.
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  void watch(server::BatchRunner& runner) {
    watcher_ = std::thread([this, &runner] {
      int sig = 0;
      sigwait(&set_, &sig);
      if (done_) return;
      got_ = true;
      std::cerr << "moe batch: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
                << ": stopping; run the same command again to resume" << std::endl;
      runner.stop();
    });
  }
  ~StopSignals() {
    done_ = true;
    if (watcher_.joinable()) {
      pthread_kill(watcher_.native_handle(), SIGTERM);
      watcher_.join();
    }
  }
  bool got() const { return got_; }

 private:
  sigset_t set_;
  std::thread watcher_;
  std::atomic<bool> done_{false}, got_{false};
};

// Rank 0 of a split job writes every rank's records, in input order, into the two output files.
class OrderedWriter {
 public:
  OrderedWriter(const std::string& output, const std::string& errors) : out_(output), err_(errors) {}
  void add(const batch::Record& r) {
    if (r.index != next_) fail("internal error: record ", r.index, " arrived where ", next_, " was expected");
    ++next_;
    (r.to_errors ? err_ : out_).write(r.line);
    (r.to_errors ? err_ : out_).write("\n");
  }
  int64_t next() const { return next_; }
  void commit() {
    err_.commit();
    out_.commit();
  }

 private:
  batch::AtomicFile out_, err_;
  int64_t next_ = 0;
};

int run_merge(const BatchOpts& o) {
  if (o.files.size() < 3) fail("--merge needs INPUT OUTPUT PART... (the parts' output files, at least one)");
  const std::string& input_path = o.files[0];
  const std::string& output = o.files[1];
  const std::string errors = o.errors.empty() ? batch::default_errors_path(output) : o.errors;
  batch::Input input = batch::scan_input(input_path);
  std::vector<std::string> parts;
  std::vector<bool> is_errors;
  for (size_t i = 2; i < o.files.size(); ++i) {
    parts.push_back(o.files[i]);
    is_errors.push_back(false);
    parts.push_back(batch::default_errors_path(o.files[i]));
    is_errors.push_back(true);
  }
  batch::Collected c = batch::collect_parts(input, "", parts, is_errors);
  if (c.missing > 0)
    fail(c.missing, " of ", input.lines.size(), " requests have no answer in the parts (the first: ", c.first_missing,
         "); run the missing shards, then merge again");
  batch::write_outputs(output, errors, c.records);
  std::cerr << "moe batch: merged " << o.files.size() - 2 << " parts: " << input.lines.size() << " requests into "
            << output << " and " << errors << "\n";
  return 0;
}

// True when OUTPUT and the errors file already are the complete answer to INPUT (a finished job run
// again); throws when OUTPUT exists but is something else.
bool already_complete(const batch::Input& input, const std::string& output, const std::string& errors,
                      const std::pair<int64_t, int64_t>& range) {
  std::error_code ec;
  if (!std::filesystem::exists(output, ec)) return false;
  if (!std::filesystem::exists(errors, ec))
    fail(output, " exists but ", errors, " does not: not the result of a finished job; remove ", output,
         " or choose another OUTPUT");
  batch::Collected c;
  try {
    c = batch::collect_parts(input, "", {output, errors}, {false, true});
  } catch (const Error& e) {
    fail(output, " exists and is not the result of ", input.path, " (", e.what(), "); remove it or choose another OUTPUT");
  }
  for (int64_t i = 0; i < int64_t(c.records.size()); ++i) {
    bool mine = i >= range.first && i < range.second;
    if (bool(c.records[size_t(i)]) != mine)
      fail(output, " exists and is not the complete result of ", input.path, " for this split; remove it or choose another OUTPUT");
  }
  return true;
}

int run_batch(const BatchOpts& o) {
  if (o.merge) return run_merge(o);
  if (o.files.size() != 2 && o.files.size() != 3) fail("expected [MODEL] INPUT.jsonl OUTPUT.jsonl");
  const bool has_model = o.files.size() == 3;
  const std::string model_path = model_or_default(has_model ? o.files[0] : "");
  const std::string input_path = o.files[has_model ? 1 : 0];
  const std::string output = o.files[has_model ? 2 : 1];
  const std::string errors = o.errors.empty() ? batch::default_errors_path(output) : o.errors;
  const std::string state_dir = o.state_dir.empty() ? batch::default_state_dir(output) : o.state_dir;
  if (output == input_path || errors == input_path) fail("OUTPUT and the errors file must not be the input");

  StopSignals signals;  // before any thread exists
  // A file-size limit (RLIMIT_FSIZE) then fails the write with EFBIG, handled like a full disk, instead
  // of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  std::unique_ptr<batch::Cluster> cluster = batch::Cluster::join_if_launched();
  if (cluster && !o.shard.empty()) fail("--shard and mpirun do not mix: under mpirun each rank takes its own share");
  batch::Shard shard = o.shard.empty() ? batch::Shard{} : batch::parse_shard(o.shard);
  if (cluster) shard = batch::Shard{cluster->rank(), cluster->size()};
  const bool split_by_hand = !o.shard.empty() && shard.count > 1;
  const bool root = shard.index == 0;
  const std::string prefix = shard.count > 1 ? cat("moe batch [", shard.index, "/", shard.count, "]: ") : "moe batch: ";

  try {
    batch::Input input = batch::scan_input(input_path);
    const int64_t n = int64_t(input.lines.size());
    const auto range = batch::shard_range(shard, n);
    const bool writes_output = !cluster || root;
    // A finished job run again (or one that crashed while removing its journal): nothing to do but
    // the cleanup (under MPI rank 0 decides for all).
    bool complete = false;
    std::error_code ec;
    if (writes_output)
      complete = already_complete(input, output, errors, split_by_hand ? range : std::pair<int64_t, int64_t>{0, n});
    if (cluster) complete = cluster->broadcast(complete);
    if (complete) {
      std::filesystem::remove_all(state_dir, ec);
      if (writes_output) std::cerr << prefix << output << " is already complete (" << n << " requests); nothing to do\n";
      return 0;
    }

    batch::make_dirs(state_dir);
    batch::check_manifest(state_dir, {input.hash, n});
    const std::string own = shard.count > 1 ? cat("journal-", shard.index, "-of-", shard.count, ".log") : "journal.log";
    batch::LoadedState state = batch::load_state(state_dir, own, range.first, range.second);
    std::vector<int64_t> todo;
    for (int64_t i = range.first; i < range.second; ++i)
      if (!state.records[size_t(i - range.first)]) todo.push_back(i);

    const int64_t share = range.second - range.first;
    std::cerr << prefix << input.lines.size() << " requests in " << input_path << " (" << input.n_valid() << " valid)";
    if (shard.count > 1) std::cerr << "; this " << (cluster ? "rank" : "shard") << " answers " << range.first + 1 << ".." << range.second;
    if (state.done > 0) std::cerr << "; resuming: " << state.done << " already answered";
    std::cerr << std::endl;

    bool valid_todo = false;
    for (int64_t i : todo) valid_todo |= input.lines[size_t(i)].valid;
    std::unique_ptr<engine::LoraRegistry> loras;
    std::unique_ptr<engine::Engine> engine;
    std::unique_ptr<server::EngineBackend> backend;
    server::BatchExecOptions eo;
    std::filesystem::path mp(model_path);
    eo.served_model_name = o.served_model_name.empty() ? mp.stem().string() : o.served_model_name;
    eo.model_aliases = {mp.filename().string(), model_path, mp.stem().string()};
    if (has_model) eo.model_aliases.push_back(o.files[0]);
    eo.created = input_mtime(input_path);
    for (const std::string& arg : o.lora_modules) {
      const std::string name = engine::LoraRegistry::parse_module(arg).name;
      if (name == eo.served_model_name || std::find(eo.model_aliases.begin(), eo.model_aliases.end(), name) != eo.model_aliases.end())
        fail("--lora-modules: the adapter name '", name, "' is the base model's name; give it another");
    }
    struct NullBackend : server::Backend {  // for a share with only invalid lines left: no model needed
      uint64_t submit(engine::Request, engine::Callbacks) override { fail("no engine"); }
      void cancel(uint64_t) override {}
      std::vector<float> embed(const std::vector<int32_t>&) override { fail("no engine"); }
      void drain() override {}
      engine::Stats stats() const override { return {}; }
      std::vector<int32_t> tokenize(std::string_view, bool) const override { fail("no engine"); }
      std::string detokenize(std::span<const int32_t>) const override { fail("no engine"); }
      std::vector<int32_t> chat_prompt(const nlohmann::json&) const override { fail("no engine"); }
      std::vector<int32_t> end_of_turn_ids() const override { return {}; }
      int32_t n_vocab() const override { return 0; }
      int64_t max_model_len() const override { return 0; }
    } null_backend;
    server::Backend* be = &null_backend;
    if (valid_todo) {
      engine = make_engine(o, model_path, loras);
      backend = std::make_unique<server::EngineBackend>(*engine, loras.get());
      be = backend.get();
    }
    server::BatchRunner runner(*be, eo);
    signals.watch(runner);
    const int in_flight = o.in_flight > 0 ? o.in_flight : 2 * o.max_num_seqs;
    ProgressPrinter printer(o.progress, prefix, state.done, share);
    server::BatchProgress last;
    runner.run(input, todo, *state.writer, in_flight, [&](const server::BatchProgress& p) {
      last = p;
      printer.update(p);
    });
    printer.update(last, true);
    if (last.elapsed_s > 0) {
      char summary[200];
      std::snprintf(summary, sizeof summary,
                    "answered %lld requests in %.3f s: %.2f requests/s, %lld generated tokens, %.1f generated tokens/s\n",
                    (long long)last.done, last.elapsed_s, double(last.done) / last.elapsed_s,
                    (long long)last.generated_tokens, double(last.generated_tokens) / last.elapsed_s);
      std::cerr << prefix << summary;
    }
    if (runner.stopped() || signals.got()) {
      std::cerr << prefix << "stopped with " << state.done + last.done << " of " << share
                << " answered (journal in " << state_dir << ")" << std::endl;
      return 130;
    }
    // The runner's records are in the journal; read this share back in order for the outputs.
    const int64_t syncs = state.writer->syncs();
    const double sync_s = state.writer->sync_seconds();
    state.records.clear();
    state.writer.reset();
    batch::LoadedState full = batch::load_state(state_dir, own, range.first, range.second);
    if (full.done != share) fail("internal error: ", share - full.done, " requests have no journal record");
    char note[128];
    std::snprintf(note, sizeof note, "journal: %lld records, %lld fdatasyncs, %.3f s syncing\n", (long long)last.done,
                  (long long)syncs, sync_s);
    std::cerr << prefix << note << std::flush;

    if (!cluster) {
      batch::write_outputs(output, errors, full.records);
      full.writer.reset();
      batch::remove_state(state_dir);
      std::cerr << prefix << "wrote " << output << " and " << errors << std::endl;
      return 0;
    }
    // MPI: rank 0 writes its own records, then each other rank's as they stream in.
    if (root) {
      OrderedWriter w(output, errors);
      for (auto& r : full.records) w.add(*r);
      for (int from = 1; from < cluster->size(); ++from) {
        std::string carry;
        cluster->receive(from, [&](std::string_view chunk) {
          carry.append(chunk);
          size_t start = 0, nl;
          while ((nl = carry.find('\n', start)) != std::string::npos) {
            auto r = batch::decode_record(std::string_view(carry).substr(start, nl - start));
            if (!r) fail("internal error: a corrupt record from rank ", from);
            w.add(*r);
            start = nl + 1;
          }
          carry.erase(0, start);
        });
      }
      if (w.next() != n) fail("internal error: ", n - w.next(), " records missing after the gather");
      w.commit();
    } else {
      std::string buf;
      for (auto& r : full.records) {
        buf += batch::encode_record(*r);
        if (buf.size() >= (size_t(8) << 20)) {
          cluster->send(buf);
          buf.clear();
        }
      }
      cluster->send(buf);
      cluster->send_end();
    }
    cluster->broadcast(true);  // rank 0 has committed the outputs
    full.writer.reset();
    cluster->barrier();
    std::filesystem::remove_all(state_dir, ec);  // every rank: a state dir on a local disk goes too
    if (root) std::cerr << prefix << "wrote " << output << " and " << errors << std::endl;
    return 0;
  } catch (const Error& e) {
    if (!cluster) throw;
    std::cerr << prefix << "error: " << e.what() << std::endl;
    cluster->abort(1);
  }
}

Registrar reg("batch", "Run an OpenAI batch file (JSONL) through the engine, exactly once across crashes", [](CLI::App& sub) {
  auto o = std::make_shared<BatchOpts>();
  sub.add_option("files", o->files,
                 "[MODEL] INPUT.jsonl OUTPUT.jsonl (MODEL: a GGUF file, default the bundled model); with --merge: "
                 "INPUT.jsonl OUTPUT.jsonl PART.jsonl...")
      ->required();
  sub.add_option("--errors", o->errors, "Errors file (default: OUTPUT with .errors.jsonl for .jsonl)");
  sub.add_option("--state-dir", o->state_dir, "The job's journal directory (default: OUTPUT.moe-batch)");
  sub.add_option("--shard", o->shard, "I/N: answer only the I-th of N contiguous shares (0-based); OUTPUT is that part");
  sub.add_flag("--merge", o->merge, "Join the parts written by --shard runs into OUTPUT, in input order");
  sub.add_option("--progress", o->progress, "auto (a bar on a terminal, lines otherwise), bar, lines or none")
      ->capture_default_str();
  sub.add_option("--in-flight", o->in_flight, "Requests in flight at once (0: twice --max-num-seqs)")
      ->check(CLI::Range(0, 1 << 16));
  sub.add_option("--served-model-name", o->served_model_name, "Model name in the answers (default: the file's stem)");
  sub.add_option("--max-num-seqs", o->max_num_seqs, "Sequences running at once")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub.add_option("--max-model-len", o->max_model_len, "Context length (0: the model's, capped by memory)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24));
  sub.add_option("--max-num-batched-tokens", o->max_num_batched_tokens, "Tokens per engine step")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
      ->capture_default_str();
  sub.add_option("--kv-cache-dtype", o->kv_cache_dtype, "KV cache element type: f16 or q8_0 (also bf16, f32)")
      ->capture_default_str();
  sub.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o->enable_prefix_caching,
               "Reuse the KV blocks of repeated prompt prefixes (on by default)");
  sub.add_option("-t,--threads", o->threads, "Compute threads (0: physical cores)")->check(CLI::Range(0, 1024));
  add_device_options(sub, o->dev);
  sub.add_option("--chat-template", o->chat_template,
                 "A built-in template name (chatml, mixtral, llama3, ...) or a Jinja template file");
  sub.add_option("--lora-modules", o->lora_modules,
                 "PEFT LoRA adapters over the base: NAME=DIR ... (a line picks one by its body's 'model'); each is "
                 "checked at start and loaded on the first line that uses it");
  sub.add_option("--max-cpu-loras", o->max_cpu_loras,
                 "LoRA adapters held in memory at once; beyond it the least recently used idle one is dropped (0: all)")
      ->check(CLI::Range(0, 1 << 20));
  return [o] { return run_batch(*o); };
});

}  // namespace
}  // namespace moe::cli
