// bench.cpp: `moe bench [MODEL] [-t N] [-p 512] [-n 128] [--batch 1,4,8,16] [--reps 5] [--json]`: how fast
// this machine runs a model, next to how fast it could (the decode roofline).
//
// What one repetition measures (all through Model::forward, the path the engine uses; no tokenizer, no
// HTTP; next tokens picked by argmax of the logits, so sampling cost is included as in a real decode):
//  - pp: one sequence's prompt of -p random valid token ids in one batched forward (chunked at 512
//    tokens, like the engine's max_num_batched_tokens), logits for the last token only;
//  - ttft: the prompt pass plus the argmax that picks the first generated token;
//  - tg: -n more forward passes of one token each after the prompt, each followed by its argmax;
//  - with --batch B1,B2..: B sequences with --batch-prompt (128) random prompt tokens each, then
//    --batch-gen (32) steps that each decode one token for all B sequences together; aggregate
//    tokens/s = B * steps / time of the steps (llama-batched-bench's S_TG with pp128, tg32). The prompts
//    of the largest B are processed once, together (its rate is reported too); each measurement then
//    truncates the first B sequences back to their prompts and decodes, so every repetition and every
//    B starts from the same cached state without recomputing thousands of prompt tokens.
//    --batch-shared gives every sequence the same prompt instead (what llama-batched-bench does: token
//    0 at every position of every sequence); greedy decode is batch-invariant, so the sequences then
//    stay identical and every token of a step routes to the same experts, which is a different (and for
//    a MoE much lighter) workload than distinct sequences: per layer and step two experts are read
//    instead of up to all eight. Label which one a figure is.
// Each figure is the median of --reps repetitions, with min and max. Before the timed repetitions an
// untimed warm-up reads every page of the weights and runs a short prompt and decode, so page faults on
// the memory-mapped weights are not timed.
//
// The roofline: decode reads every active weight byte once per token, so tokens/s cannot exceed the
// machine's read bandwidth divided by the active weight bytes per token. The bandwidth
// (util/bandwidth.h) is measured with the model's own thread pool right after each repetition's decode
// run, so it describes the machine as that run found it (the bandwidth one VM gets from a shared host
// varies by tens of percent from minute to minute); the median over repetitions is reported. Its buffer
// is allocated before the model and stays resident, so the peak RSS reported is the process's VmHWM
// minus the buffer: the model's own peak. The active bytes are all tensors but the token embedding
// (one row of it is read) and the unused experts (a token runs expert_used of n_expert), from the
// tensors' byte sizes in the file. An output head tied to the embedding is read whole.
//
// The compute figure beside it (kernels/compute_probe.h): the same matmul kernels timed on a small weight
// matrix of each weight type the model multiplies, held in cache, so memory is not the limit; the active
// weights per token of each type times its time per 256 weights gives the fastest decode the kernels
// allow on these threads (matmuls only: attention, norms and the router's softmax come on top). The
// lower of the two rooflines says what bounds decode here. The bandwidth buffer is sized from the caches
// the CPU reports and the memory left (util/bandwidth.h), and said so when that left it too small.
//
// On a Vulkan device (--device vulkan[:N]) the same runs go through the Vulkan backend, and the roofline's
// bandwidth is the device's, measured by a copy shader (vk::copy_words: each pass reads and writes a
// 256 MiB buffer, or one storage binding's range if smaller; read + write bytes over the best pass's
// time) right after each decode run; the CPU's compute figure does not apply and is left out. With
// experts on the CPU (split placement) the roofline assumes them on the card, and says so.
//
// Also reported: the CPU share the timed runs got (process CPU time / (wall time * threads); the pool's
// threads spin while waiting, so an undisturbed run is near 100 %) and the load average, because on a
// shared machine other processes' work shows up as slower figures and should be visible as such.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/common_flags.h"
#include "gguf/gguf.h"
#include "kernels/compute_probe.h"
#include "kv/cache.h"
#include "model/model.h"
#include "model/vulkan_backend.h"
#include "plan/quant_mix.h"
#include "util/bandwidth.h"
#include "util/checked.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/thread_pool.h"
#include "vulkan/ops.h"

namespace moe::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchOpts {
  std::string model;
  int threads = 0;
  DeviceArgs dev;                       // --device, --gpu-memory
  bool no_repack = false;
  int64_t n_prompt = 512;
  int64_t n_gen = 128;
  std::vector<int64_t> batches;
  int64_t batch_prompt = 128;
  int64_t batch_gen = 32;
  bool batch_shared = false;            // every sequence gets the same prompt (llama-batched-bench's workload)
  int reps = 5;
  bool json = false;
  std::string kv_type = "f16";
  uint64_t seed = 42;
};

// Limits that keep a mistyped flag from asking for unbounded memory or time.
constexpr int64_t kMaxTokens = 1 << 20;  // per sequence, prompt + generated
constexpr int64_t kMaxBatch = 4096;
constexpr int kMaxReps = 1000;

// Weight bytes one decoded token reads (see the file comment).
struct ActiveBytes {
  double total = 0;
  uint64_t experts_all = 0;   // every expert tensor's bytes
  double experts_used = 0;    // the share a token runs
  uint64_t other = 0;         // attention, norms, routers, output norm and head
  uint64_t embedding_row = 0;
};

ActiveBytes active_bytes_per_token(const model::Model& m) {
  const model::HParams& hp = m.hparams();
  const model::Weights& w = m.weights();
  uint64_t all = 0;
  for (const auto& t : m.file().tensors()) all = checked_add(all, t.n_bytes, "model bytes");
  ActiveBytes a;
  if (hp.is_moe())
    for (const auto& L : w.layers)
      for (const auto* group : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
        for (const auto& e : *group) a.experts_all += e.matrix_bytes;
  const uint64_t embedding = w.output_tied ? 0 : w.token_embd.matrix_bytes;
  a.embedding_row = w.output_tied ? 0 : w.token_embd.row_bytes;
  a.other = all - a.experts_all - embedding;
  const double used = hp.is_moe() ? static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert) : 1.0;
  a.experts_used = used * static_cast<double>(a.experts_all);
  a.total = static_cast<double>(a.other) + a.experts_used + static_cast<double>(a.embedding_row);
  return a;
}

// Weights (values, not bytes) of each type that one decoded token multiplies: every matrix but the token
// embedding (unless it is the tied output head), the experts scaled by expert_used / n_expert as in
// active_bytes_per_token.
std::map<GgmlType, double> active_weights_by_type(const model::Model& m) {
  const model::HParams& hp = m.hparams();
  const double used = hp.is_moe() ? static_cast<double>(hp.n_expert_used) / static_cast<double>(hp.n_expert) : 1.0;
  std::map<GgmlType, double> out;
  for (const auto& t : m.file().tensors()) {
    if (t.n_dims < 2) continue;  // norms
    const plan::TensorKind kind = plan::classify_tensor(t.name);
    if (kind.role == plan::TensorRole::TokenEmbd && !m.weights().output_tied) continue;  // one row is read
    const bool expert = hp.is_moe() && (kind.role == plan::TensorRole::FfnGate || kind.role == plan::TensorRole::FfnUp ||
                                        kind.role == plan::TensorRole::FfnDown);
    out[t.type] += static_cast<double>(t.n_elements) * (expert ? used : 1.0);
  }
  return out;
}

// The decode compute figure: each active type's in-cache matmul rate for one token (and for a group of
// 16, the batched path), and the tokens/s the kernels allow.
struct ComputeFigure {
  std::vector<kernels::KernelRate> one, sixteen;  // per type, in the order of `weights`
  std::map<GgmlType, double> weights;
  double tokens_per_s = 0;
};

// True when load repacked the model's matrices of this type (model/repack.h): the probe then times the
// repacked kernels, which the forward pass runs.
bool repacked_type(const model::Weights& w, GgmlType type) {
  auto is = [&](const model::WeightView& v) { return v.type == type && v.repacked; };
  if (is(w.output)) return true;
  for (const model::LayerWeights& L : w.layers) {
    for (const model::WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo})
      if (is(*v)) return true;
    for (const auto* experts : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
      for (const model::WeightView& v : *experts)
        if (is(v)) return true;
  }
  return false;
}

ComputeFigure measure_compute(ThreadPool& pool, const model::Model& m) {
  ComputeFigure f;
  f.weights = active_weights_by_type(m);
  double seconds = 0;
  for (const auto& [type, n] : f.weights) {
    const int64_t cols = m.hparams().n_embd;  // every matrix's input width but the down projections'
    const bool repacked = repacked_type(m.weights(), type);
    f.one.push_back(kernels::measure_kernel_rate(pool, type, 1, cols, 64, 0.2, repacked));
    f.sixteen.push_back(kernels::measure_kernel_rate(pool, type, 16, cols, 64, 0.2, repacked));
    seconds += n / 256.0 * f.one.back().seconds_per_256;
  }
  f.tokens_per_s = seconds > 0 ? 1.0 / seconds : 0;
  return f;
}

// Peak resident set size of this process: VmHWM from /proc, else getrusage.
uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream in(line.substr(6));
      uint64_t kb = 0;
      if (in >> kb) return kb * 1024;
    }
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;
}

// CPU seconds (user + system) this process has used.
double process_cpu_seconds() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

// The 1-minute load average, or -1 when /proc/loadavg cannot be read.
double load_average() {
  std::ifstream in("/proc/loadavg");
  double v = -1;
  if (!(in >> v)) return -1;
  return v;
}

// Reads one byte of every 4 KiB page of every weight the model reads, so that the memory-mapped weights
// are resident before anything is timed (whatever the routing of the warm-up tokens); returns a sum that
// the caller keeps so the reads stay. Through the model's views, not the file's tensors: a matrix
// repacked at load lives in its own buffer, and its mapped pages were dropped (model/repack.h).
uint64_t touch_weights(const model::Weights& w) {
  uint64_t sum = 0;
  auto touch = [&](const model::WeightView& v) {
    if (v.data == nullptr) return;
    const uint64_t bytes = static_cast<uint64_t>(v.count) * v.matrix_bytes;
    for (uint64_t off = 0; off < bytes; off += 4096) sum += v.data[off];
  };
  for (const model::WeightView* v : {&w.token_embd, &w.output_norm, &w.output}) touch(*v);
  for (const model::LayerWeights& L : w.layers) {
    for (const model::WeightView* v : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.router}) touch(*v);
    for (const auto* experts : {&L.ffn_gate, &L.ffn_up, &L.ffn_down})
      for (const model::WeightView& v : *experts) touch(v);
  }
  return sum;
}

// Greedy choice over one row of logits (ties to the lower id).
int32_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

struct Stat {
  double median = 0, min = 0, max = 0;
};
Stat summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t mid = v.size() / 2;
  return {v.size() % 2 ? v[mid] : 0.5 * (v[mid - 1] + v[mid]), v.front(), v.back()};
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class Runner {
 public:
  Runner(model::Model& m, kv::Cache& cache, uint64_t seed) : m_(m), cache_(cache), rng_(seed) {
    const int64_t v = m.hparams().n_vocab;
    // Skip the usual control ids (unk, bos, eos) when the vocabulary is large enough to have others.
    lo_ = v > 3 ? 3 : 0;
    hi_ = v - 1;
  }

  int32_t random_token() { return std::uniform_int_distribution<int32_t>(static_cast<int32_t>(lo_), static_cast<int32_t>(hi_))(rng_); }

  struct Single {
    double pp_tokens_per_s, ttft_s, tg_tokens_per_s;
  };
  // One sequence (id `seq`, freed first): a prompt of n_prompt tokens in one forward, then n_gen
  // single-token steps.
  Single single(int32_t seq, int64_t n_prompt, int64_t n_gen) {
    cache_.free_sequence(seq);
    batch_.clear();
    for (int64_t i = 0; i < n_prompt; ++i) batch_.add(random_token(), static_cast<int32_t>(i), seq, i + 1 == n_prompt);
    const int64_t vocab = m_.hparams().n_vocab;
    const auto t0 = Clock::now();
    m_.forward(batch_, cache_, res_);
    const double t_prompt = seconds_since(t0);
    int32_t next = argmax(res_.logits.data(), vocab);
    const double t_first = seconds_since(t0);
    const auto t1 = Clock::now();
    for (int64_t i = 0; i < n_gen; ++i) {
      batch_.clear();
      batch_.add(next, static_cast<int32_t>(n_prompt + i), seq, true);
      m_.forward(batch_, cache_, res_);
      next = argmax(res_.logits.data(), vocab);
    }
    const double t_gen = seconds_since(t1);
    cache_.free_sequence(seq);
    return {static_cast<double>(n_prompt) / t_prompt, t_first, static_cast<double>(n_gen) / t_gen};
  }

  // Sequences 0..n_seq-1 (freed first) each get n_prompt random tokens (the same ones for all when
  // `shared`), all in one batch (the model chunks it); their first generated tokens are kept for
  // decode_batch(). Returns prompt tokens/s.
  double prefill_batch(int64_t n_seq, int64_t n_prompt, bool shared) {
    batch_.clear();
    std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
    for (int64_t s = 0; s < n_seq; ++s) {
      cache_.free_sequence(static_cast<int32_t>(s));
      if (s == 0 || !shared)
        for (int32_t& t : prompt) t = random_token();
      for (int64_t i = 0; i < n_prompt; ++i)
        batch_.add(prompt[static_cast<size_t>(i)], static_cast<int32_t>(i), static_cast<int32_t>(s), i + 1 == n_prompt);
    }
    const int64_t vocab = m_.hparams().n_vocab;
    const auto t0 = Clock::now();
    m_.forward(batch_, cache_, res_);
    first_.resize(static_cast<size_t>(n_seq));
    for (int64_t s = 0; s < n_seq; ++s) first_[s] = argmax(res_.logits.data() + s * vocab, vocab);
    prefilled_ = n_prompt;
    return static_cast<double>(n_seq * n_prompt) / seconds_since(t0);
  }

  struct Decode {
    double tokens_per_s;
    double experts_read;  // distinct experts run per layer and step, averaged (what a step reads)
  };
  // The first n_seq prefilled sequences, cut back to their prompts (so every call starts from the same
  // state), decode n_gen steps of one token each, together. The routing counters are read between steps
  // (outside the timed part) to count the experts each layer ran.
  Decode decode_batch(int64_t n_seq, int64_t n_gen) {
    const int64_t vocab = m_.hparams().n_vocab;
    std::vector<int32_t> next(first_.begin(), first_.begin() + n_seq);
    for (int64_t s = 0; s < n_seq; ++s) cache_.truncate(static_cast<int32_t>(s), prefilled_);
    double seconds = 0;
    int64_t experts = 0, layer_steps = 0;
    std::vector<std::vector<int64_t>> before = m_.expert_token_counts();
    for (int64_t step = 0; step < n_gen; ++step) {
      batch_.clear();
      for (int64_t s = 0; s < n_seq; ++s)
        batch_.add(next[s], static_cast<int32_t>(prefilled_ + step), static_cast<int32_t>(s), true);
      const auto t0 = Clock::now();
      m_.forward(batch_, cache_, res_);
      for (int64_t s = 0; s < n_seq; ++s) next[s] = argmax(res_.logits.data() + s * vocab, vocab);
      seconds += seconds_since(t0);
      std::vector<std::vector<int64_t>> after = m_.expert_token_counts();
      for (size_t l = 0; l < after.size(); ++l)
        for (size_t e = 0; e < after[l].size(); ++e) experts += after[l][e] > before[l][e] ? 1 : 0;
      layer_steps += static_cast<int64_t>(after.size());
      before.swap(after);
    }
    return {static_cast<double>(n_seq * n_gen) / seconds,
            layer_steps > 0 ? static_cast<double>(experts) / static_cast<double>(layer_steps) : 0.0};
  }

 private:
  model::Model& m_;
  kv::Cache& cache_;
  std::mt19937_64 rng_;
  int64_t lo_ = 0, hi_ = 0;
  model::Batch batch_;
  model::ForwardResult res_;
  std::vector<int32_t> first_;  // each prefilled sequence's first generated token
  int64_t prefilled_ = 0;
};

// The device's memory bandwidth by the copy shader (see the file comment): best of `passes` timed copies.
class DeviceProbe {
 public:
  explicit DeviceProbe(vk::Context& ctx) : ctx_(ctx) {
    bytes_ = std::min<uint64_t>(256ull << 20, ctx.info().max_storage_buffer_range) / 16 * 16;
    src_ = ctx.buffer(bytes_, vk::MemoryKind::Device);
    dst_ = ctx.buffer(bytes_, vk::MemoryKind::Device);
    ctx.zero(vk::BufferRef(src_));
  }
  double measure(int passes = 8) {
    vk::Stream s(ctx_);
    double best = 1e30;
    for (int i = 0; i <= passes; ++i) {  // the first pass is untimed (pipeline creation, first touch)
      const auto t0 = Clock::now();
      vk::copy_words(s, vk::BufferRef(src_), vk::BufferRef(dst_), bytes_);
      s.run();
      if (i > 0) best = std::min(best, seconds_since(t0));
    }
    return 2.0 * static_cast<double>(bytes_) / best;
  }
  uint64_t buffer_bytes() const { return bytes_; }

 private:
  vk::Context& ctx_;
  uint64_t bytes_ = 0;
  vk::Buffer src_, dst_;
};

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f GB", bytes / 1e9);
  return buf;
}

std::string rate(const Stat& s) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%10.2f %10.2f %10.2f", s.median, s.min, s.max);
  return buf;
}

void put_stat(nlohmann::json& j, const std::string& key, const Stat& s) {
  j[key] = s.median;
  j[key + "_min"] = s.min;
  j[key + "_max"] = s.max;
}

void validate(const BenchOpts& o) {
  if (o.threads < 0 || o.threads > 1024) fail("-t must be in [0, 1024] (0: physical cores), got ", o.threads);
  if (o.n_prompt < 1 || o.n_prompt > kMaxTokens) fail("-p must be in [1, ", kMaxTokens, "], got ", o.n_prompt);
  if (o.n_gen < 1 || o.n_gen > kMaxTokens) fail("-n must be in [1, ", kMaxTokens, "], got ", o.n_gen);
  if (o.n_prompt + o.n_gen > kMaxTokens) fail("-p + -n must be at most ", kMaxTokens, " tokens");
  if (o.reps < 1 || o.reps > kMaxReps) fail("--reps must be in [1, ", kMaxReps, "], got ", o.reps);
  for (int64_t b : o.batches)
    if (b < 1 || b > kMaxBatch) fail("--batch sizes must be in [1, ", kMaxBatch, "], got ", b);
  if (o.batch_prompt < 1 || o.batch_prompt > kMaxTokens)
    fail("--batch-prompt must be in [1, ", kMaxTokens, "], got ", o.batch_prompt);
  if (o.batch_gen < 1 || o.batch_gen > kMaxTokens) fail("--batch-gen must be in [1, ", kMaxTokens, "], got ", o.batch_gen);
  if (o.batch_prompt + o.batch_gen > kMaxTokens) fail("--batch-prompt + --batch-gen must be at most ", kMaxTokens, " tokens");
}

int run_bench(const BenchOpts& o) {
  validate(o);
  auto kv_type = kv::parse_kv_type(o.kv_type);
  if (!kv_type) fail("unknown --kv-cache-dtype '", o.kv_type, "' (f32, f16, bf16, q8_0)");

  const std::string path = model_or_default(o.model);
  // The pool and the bandwidth buffer come first (see the file comment).
  ThreadPool pool(o.threads > 0 ? o.threads : physical_core_count());
  const bool on_device = model::parse_device(o.dev.device) != model::kCpuDevice;
  std::optional<BandwidthProbe> probe;
  if (!on_device) probe.emplace(pool);
  model::ModelOptions mo;
  mo.pool = &pool;
  mo.device = o.dev.device;
  mo.gpu_memory = o.dev.gpu_memory_bytes();
  mo.max_batch_tokens = 512;  // the engine's default max_num_batched_tokens: prompts run in such chunks
  mo.repack = !o.no_repack;
  std::unique_ptr<model::Model> m = model::Model::load(path, mo);
  const model::HParams& hp = m->hparams();
  const ActiveBytes active = active_bytes_per_token(*m);
  model::VulkanBackend* vk_backend = on_device ? dynamic_cast<model::VulkanBackend*>(&m->backend()) : nullptr;
  std::optional<DeviceProbe> dprobe;
  if (vk_backend) dprobe.emplace(vk_backend->context());

  // One KV pool for the single sequence (id max_batch) beside the batch's sequences (ids 0..max_batch-1),
  // which stay prefilled across repetitions.
  const int64_t max_batch = o.batches.empty() ? 0 : *std::max_element(o.batches.begin(), o.batches.end());
  const uint64_t batch_blocks =
      checked_mul(static_cast<uint64_t>(max_batch),
                  static_cast<uint64_t>(kv::Cache::blocks_for_tokens(o.batch_prompt + o.batch_gen)), "KV blocks for --batch");
  const auto blocks = static_cast<int64_t>(
      checked_add(batch_blocks, static_cast<uint64_t>(kv::Cache::blocks_for_tokens(o.n_prompt + o.n_gen)), "KV blocks"));
  const kv::Geometry geom = m->kv_geometry(*kv_type);
  checked_mul(static_cast<uint64_t>(blocks), kv::Cache::bytes_per_block(geom), "KV cache bytes");
  kv::Cache cache(geom, blocks);
  Runner runner(*m, cache, o.seed);

  // Warm-up (untimed): every weight page resident, then a short prompt and decode.
  volatile uint64_t touched = touch_weights(m->weights());
  (void)touched;
  const auto single_seq = static_cast<int32_t>(max_batch);
  runner.single(single_seq, std::min<int64_t>(o.n_prompt, 64), 2);

  // The pool's threads spin while they wait, so on an idle machine this process uses about n_threads
  // CPUs for the whole timed run; a smaller share means other processes took CPU time from it, and the
  // figures are slower than the machine can do.
  const double load_before = load_average();
  const double cpu0 = process_cpu_seconds();
  const auto wall0 = Clock::now();
  // The batch's prompts are processed once, timed, then each repetition decodes from them.
  const double batch_prefill = max_batch > 0 ? runner.prefill_batch(max_batch, o.batch_prompt, o.batch_shared) : 0;
  std::vector<double> pp, ttft, tg, bandwidth;
  uint64_t checksum = 0;
  std::vector<std::vector<double>> agg(o.batches.size());
  std::vector<double> experts_read(o.batches.size(), 0.0);  // per layer and step, mean over repetitions
  for (int rep = 0; rep < o.reps; ++rep) {
    const Runner::Single s = runner.single(single_seq, o.n_prompt, o.n_gen);
    pp.push_back(s.pp_tokens_per_s);
    ttft.push_back(s.ttft_s * 1e3);
    tg.push_back(s.tg_tokens_per_s);
    if (dprobe) {
      bandwidth.push_back(dprobe->measure());
    } else {
      const BandwidthResult bw = probe->measure();
      bandwidth.push_back(bw.best_bytes_per_s);
      checksum += bw.checksum;
    }
    if (!o.json)
      std::fprintf(stderr, "rep %d/%d: pp%lld %.2f t/s, tg%lld %.2f t/s (%.2f GB/s)", rep + 1, o.reps,
                   (long long)o.n_prompt, s.pp_tokens_per_s, (long long)o.n_gen, s.tg_tokens_per_s,
                   bandwidth.back() / 1e9);
    for (size_t i = 0; i < o.batches.size(); ++i) {
      const Runner::Decode d = runner.decode_batch(o.batches[i], o.batch_gen);
      agg[i].push_back(d.tokens_per_s);
      experts_read[i] += d.experts_read / o.reps;
      if (!o.json) std::fprintf(stderr, ", B=%lld %.2f t/s", (long long)o.batches[i], agg[i].back());
    }
    if (!o.json) std::fprintf(stderr, "\n");
  }
  const double cpu_share = (process_cpu_seconds() - cpu0) / (seconds_since(wall0) * pool.size());
  const ComputeFigure compute = on_device ? ComputeFigure{} : measure_compute(pool, *m);
  const uint64_t llc_total = read_cache_topology().total_llc_bytes();
  const uint64_t probe_bytes = probe ? probe->buffer_bytes() : dprobe->buffer_bytes();
  const bool buffer_ok = on_device || buffer_exceeds_caches(probe_bytes, llc_total);
  const uint64_t hwm = peak_rss_bytes();
  const uint64_t rss = hwm > (probe ? probe_bytes : 0) ? hwm - (probe ? probe_bytes : 0) : 0;

  const Stat bw_s = summarize(bandwidth);
  const double roofline = bw_s.median / active.total;
  const Stat pp_s = summarize(pp), ttft_s = summarize(ttft), tg_s = summarize(tg);
  const double fraction = tg_s.median / roofline;
  const int n_threads = pool.size();

  if (o.json) {
    nlohmann::json j;
    j["model"] = path;
    j["file_bytes"] = m->file().file_size();
    j["threads"] = n_threads;
    j["device"] = o.dev.device;
    if (vk_backend) {
      const model::DevicePlacement& pl = vk_backend->placement();
      j["device_name"] = vk_backend->device().name;
      j["experts_on_device"] = pl.experts_on_card;
      j["experts_total"] = pl.experts_total;
    }
    j["isa"] = isa_name(active_isa());
    j["repacked_bytes"] = m->repack_stats().bytes;
    j["kv_cache_dtype"] = kv::kv_type_name(*kv_type);
    j["reps"] = o.reps;
    j["n_prompt"] = o.n_prompt;
    j["n_gen"] = o.n_gen;
    put_stat(j, "pp_tokens_per_s", pp_s);
    put_stat(j, "tg_tokens_per_s", tg_s);
    put_stat(j, "ttft_ms", ttft_s);
    j["peak_rss_bytes"] = rss;
    j["cpu_share"] = cpu_share;
    j["load_average"] = load_before;
    j["active_bytes_per_token"] = active.total;
    j["expert_bytes"] = active.experts_all;
    put_stat(j, "bandwidth_bytes_per_s", bw_s);
    j["bandwidth_source"] = on_device ? "device copy shader (read + write)" : "CPU read";
    j["bandwidth_buffer_bytes"] = probe_bytes;
    j["bandwidth_checksum"] = checksum;
    j["last_level_cache_bytes"] = last_level_cache_bytes();
    j["roofline_tokens_per_s"] = roofline;
    j["roofline_fraction"] = fraction;
    j["total_last_level_cache_bytes"] = llc_total;
    j["bandwidth_buffer_exceeds_caches"] = buffer_ok;
    if (!on_device) {
      j["compute_roofline_tokens_per_s"] = compute.tokens_per_s;
      j["decode_bound"] = compute.tokens_per_s < roofline ? "compute" : "memory";
    }
    nlohmann::json kr = nlohmann::json::object();
    for (size_t i = 0; i < compute.one.size(); ++i)
      kr[type_name(compute.one[i].type)] = {{"active_weights_per_token", compute.weights.at(compute.one[i].type)},
                                            {"ns_per_256_1_token", compute.one[i].seconds_per_256 * 1e9},
                                            {"ns_per_256_per_token_16_tokens", compute.sixteen[i].seconds_per_256 * 1e9}};
    j["kernels"] = kr;
    std::printf("%s\n", j.dump().c_str());
    for (size_t i = 0; i < o.batches.size(); ++i) {
      nlohmann::json b;
      b["batch"] = o.batches[i];
      b["prompt_tokens"] = o.batch_prompt;
      b["gen_tokens"] = o.batch_gen;
      b["shared_prompt"] = o.batch_shared;
      b["reps"] = o.reps;
      const Stat a = summarize(agg[i]);
      put_stat(b, "aggregate_tokens_per_s", a);
      b["per_sequence_tokens_per_s"] = a.median / static_cast<double>(o.batches[i]);
      b["experts_read_per_layer_step"] = experts_read[i];
      b["batch_prefill_tokens_per_s"] = batch_prefill;
      std::printf("%s\n", b.dump().c_str());
    }
    return 0;
  }

  std::printf("model:     %s (%s file; %lld layers", path.c_str(), gb(static_cast<double>(m->file().file_size())).c_str(),
              (long long)hp.n_layer);
  if (hp.is_moe()) std::printf(", %lld experts, %lld used", (long long)hp.n_expert, (long long)hp.n_expert_used);
  std::printf(")\n");
  if (vk_backend) {
    const model::DevicePlacement& pl = vk_backend->placement();
    std::printf("device:    %s (%s), experts on the card: %lld of %lld%s\n", o.dev.device.c_str(),
                vk_backend->device().name.c_str(), (long long)pl.experts_on_card, (long long)pl.experts_total,
                pl.experts_on_card < pl.experts_total ? " (the rest on the CPU; the roofline assumes all on the card)" : "");
    std::printf("setup:     %d CPU threads, KV %s, median of %d reps (min, max)\n", n_threads, kv::kv_type_name(*kv_type),
                o.reps);
  } else {
    std::printf("setup:     %d threads, %s kernels, KV %s, median of %d reps (min, max)\n", n_threads,
                isa_name(active_isa()), kv::kv_type_name(*kv_type), o.reps);
  }
  const model::RepackStats& rp = m->repack_stats();
  if (rp.matrices > 0)
    std::printf("repacked:  %lld Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 matrices (%s) at load in %.1f s (--no-repack: used in place)\n",
                (long long)rp.matrices, gb(static_cast<double>(rp.bytes)).c_str(), rp.seconds);
  std::printf("active weight bytes per token: %s (other %s + experts %s of %s)\n", gb(active.total).c_str(),
              gb(static_cast<double>(active.other + active.embedding_row)).c_str(), gb(active.experts_used).c_str(),
              gb(static_cast<double>(active.experts_all)).c_str());
  if (on_device)
    std::printf("device bandwidth:              %.2f GB/s (%.2f to %.2f; copy shader, read + write, best of 8 passes\n"
                "                               over %llu MiB right after each decode run)\n",
                bw_s.median / 1e9, bw_s.min / 1e9, bw_s.max / 1e9, (unsigned long long)(probe_bytes >> 20));
  else
    std::printf("read bandwidth:                %.2f GB/s (%.2f to %.2f; %d threads, best of 8 passes over %llu MiB\n"
                "                               right after each decode run)\n",
                bw_s.median / 1e9, bw_s.min / 1e9, bw_s.max / 1e9, n_threads, (unsigned long long)(probe_bytes >> 20));
  std::printf("decode roofline (memory):      %.2f tokens/s\n", roofline);
  if (!buffer_ok)
    std::printf("(the buffer is under %llux the %llu MiB of last-level cache, bounded by the memory left: the\n"
                " bandwidth may include cache hits)\n",
                (unsigned long long)kLlcMultiple, (unsigned long long)(llc_total >> 20));
  if (!on_device && llc_total > 0 && static_cast<double>(llc_total) >= 2 * active.total)
    std::printf("(the active weights fit in the %llu MiB last-level cache: the DRAM roofline does not bound this model)\n",
                (unsigned long long)(llc_total >> 20));
  if (!on_device) {
    std::printf("decode roofline (compute):     %.2f tokens/s (the matmul kernels in cache, %d threads; per 256\n"
                "                               weights per token, 1 token / 16 tokens:",
                compute.tokens_per_s, n_threads);
    for (size_t i = 0; i < compute.one.size(); ++i)
      std::printf("%s %s %.1f/%.1f ns", i ? "," : "", type_name(compute.one[i].type).c_str(),
                  compute.one[i].seconds_per_256 * 1e9, compute.sixteen[i].seconds_per_256 * 1e9);
    std::printf(")\n");
    std::printf("decode is %s-bound here: the lower roofline is %.2f tokens/s\n",
                compute.tokens_per_s < roofline ? "compute" : "memory", std::min(roofline, compute.tokens_per_s));
  }
  std::printf("\n");
  std::printf("%-22s %10s %10s %10s\n", "test", "median", "min", "max");
  std::printf("%-22s %s\n", cat("pp", o.n_prompt, " (tokens/s)").c_str(), rate(pp_s).c_str());
  std::printf("%-22s %s   %.0f %% of roofline\n", cat("tg", o.n_gen, " (tokens/s)").c_str(), rate(tg_s).c_str(),
              100 * fraction);
  std::printf("%-22s %s\n", "ttft (ms)", rate(ttft_s).c_str());
  std::printf("%-22s %10.3f GB\n", "peak RSS", static_cast<double>(rss) / 1e9);
  std::printf("CPU share of the timed runs: %.0f %% of %d threads (load average %.2f before)%s\n", 100 * cpu_share,
              n_threads, load_before, cpu_share < 0.9 ? ": other processes slowed these figures" : "");
  if (!o.batches.empty()) {
    std::printf("\nbatched decode: B sequences with %lld prompt tokens each (%s), then %lld steps of one token per sequence\n",
                (long long)o.batch_prompt, o.batch_shared ? "the same prompt for all: they route alike" : "distinct random prompts",
                (long long)o.batch_gen);
    std::printf("(the %lld prompts were processed together once at %.2f tokens/s)\n", (long long)max_batch, batch_prefill);
    std::printf("%6s %12s %10s %10s %14s %16s\n", "B", "aggregate", "min", "max", "per sequence", "experts/layer");
    for (size_t i = 0; i < o.batches.size(); ++i) {
      const Stat a = summarize(agg[i]);
      std::printf("%6lld %12.2f %10.2f %10.2f %14.2f %16.2f\n", (long long)o.batches[i], a.median, a.min, a.max,
                  a.median / static_cast<double>(o.batches[i]), experts_read[i]);
    }
    std::printf("(experts/layer: distinct experts each layer ran per step, the weights a step reads)\n");
  }
  return 0;
}

const Registrar reg("bench", "Measure prompt, decode and batched-decode speed against the memory-bandwidth roofline",
                    [](CLI::App& sub) {
  auto o = std::make_shared<BenchOpts>();
  sub.add_option("model", o->model, "GGUF model file (default: the bundled model)");
  sub.add_option("-t,--threads", o->threads, "threads (0: physical cores)")->capture_default_str();
  add_device_options(sub, o->dev);
  add_repack_option(sub, o->no_repack);
  sub.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens (one sequence, one batched pass)")->capture_default_str();
  sub.add_option("-n,--n-gen", o->n_gen, "tokens decoded one at a time after the prompt")->capture_default_str();
  sub.add_option("--batch", o->batches, "batched decode with these numbers of sequences, e.g. 1,4,8,16")
      ->delimiter(',');
  sub.add_option("--batch-prompt", o->batch_prompt, "prompt tokens of each sequence in batched decode")
      ->capture_default_str();
  sub.add_option("--batch-gen", o->batch_gen, "batched decode steps (one token per sequence each)")->capture_default_str();
  sub.add_flag("--batch-shared", o->batch_shared,
               "give every batched sequence the same prompt, as llama-batched-bench does (all route to the same experts)");
  sub.add_option("--reps", o->reps, "repetitions (the median is reported)")->capture_default_str();
  sub.add_flag("--json", o->json, "one JSON object per line instead of the table");
  sub.add_option("--kv-cache-dtype", o->kv_type, "KV cache element type: f16, bf16, q8_0, f32")->capture_default_str();
  sub.add_option("--seed", o->seed, "seed of the random prompt tokens")->capture_default_str();
  return [o] { return run_bench(*o); };
});

}  // namespace
}  // namespace moe::cli
