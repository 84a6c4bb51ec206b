// memory.cpp: the memory planner (see memory.h). Sizes come from the runtime's own sizing functions;
// the few overhead constants here were measured against `moe run` (tests/plan_e2e_test.cpp compares a
// plan with the peak RSS of a real run and fails beyond 5 %).
#include "plan/memory.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "model/model.h"
#include "util/checked.h"
#include "util/error.h"

namespace moe::plan {
namespace {

// Code and data that loading and running a model pages in beyond what a process of the same binary has
// resident when `moe plan` starts (model, kernels, tokenizer and sampler code, their static tables).
// Measured on the fixtures with a 100-token prompt: peak RSS (VmHWM) of `moe run` minus every other
// planned term comes to 0.4-1.0 MB above the plan process's own RSS at start (the dense F32 model the
// most: its workspace is touched in full, where an MoE's per-expert buffers are only touched up to the
// largest expert group).
constexpr uint64_t kRunCodeBytes = 768u << 10;
// A worker thread's touched stack pages and its malloc arena's first pages.
constexpr uint64_t kThreadBytes = 64u << 10;
// An HTTP worker thread of `moe serve`: measured 8.4 KB of resident stack and thread data per idle
// worker (1,088 workers against 128: +8.0 MB VmRSS); one that has answered requests has touched more of
// its stack, so 16 KiB is planned.
constexpr uint64_t kHttpThreadBytes = 16u << 10;
// The tokenizer's per-piece memory (the piece string, score, type, id maps and its share of the prefix
// trie) plus a fixed part. Measured (heap in use before and after Tokenizer::from_gguf): 2.01 MB for
// the 32000-piece Mixtral vocabulary, 42.5 KB for the 512-piece stories260K one.
constexpr uint64_t kTokenizerBytesPerToken = 64;
constexpr uint64_t kTokenizerFixedBytes = 16u << 10;
// Per sequence: one logits row (4 bytes per token of the vocabulary) and the sampler's candidate,
// work and count arrays (16 bytes per token).
constexpr uint64_t kBufferBytesPerVocabPerSeq = 20;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

uint64_t value_heap_bytes(const gguf::Value& v) {
  // A std::string keeps up to 15 characters inline; longer ones take a heap block of capacity + 1,
  // rounded by malloc to 16 bytes with an 8-byte header.
  uint64_t n = 0;
  if (v.s.size() > 15) n += (v.s.size() + 1 + 8 + 15) / 16 * 16;
  if (!v.array.empty()) {
    n += v.array.size() * sizeof(gguf::Value);
    for (const auto& e : v.array) n += value_heap_bytes(e);
  }
  return n;
}

}  // namespace

uint64_t resident_metadata_bytes(const Metadata& metadata) {
  uint64_t n = 0;
  for (const auto& [k, v] : metadata) {
    n += sizeof(std::pair<std::string, gguf::Value>) + value_heap_bytes(v);
    if (k.size() > 15) n += (k.size() + 1 + 8 + 15) / 16 * 16;
  }
  return n;
}

uint64_t current_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      uint64_t kb = 0;
      ss >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

uint64_t process_base_bytes(uint64_t measured_rss_at_start) { return measured_rss_at_start + kRunCodeBytes; }

MemoryPlan plan_memory(const model::HParams& hp, const WeightsLayout& weights, const Metadata& metadata,
                       const MemoryOptions& o) {
  const int64_t ctx = o.ctx == 0 ? hp.n_ctx_train : o.ctx;
  if (ctx < 1 || ctx > kMaxPlanCtx)
    fail("context of ", ctx, " tokens is outside [1, ", kMaxPlanCtx, "]");
  if (o.seqs < 1 || o.seqs > (int64_t{1} << 20)) fail("--seqs ", o.seqs, " is outside [1, 1048576]");
  if (o.batch_tokens < 1 || o.batch_tokens > (int64_t{1} << 20))
    fail("batch of ", o.batch_tokens, " tokens is outside [1, 1048576]");
  if (o.n_threads < 1 || o.n_threads > 4096) fail("thread count ", o.n_threads, " is outside [1, 4096]");
  if (o.http_threads < 0 || o.http_threads > 65536) fail("HTTP thread count ", o.http_threads, " is outside [0, 65536]");

  MemoryPlan p;
  p.ctx = ctx;
  p.seqs = o.seqs;
  p.weights_bytes = weights.tensor_bytes;
  for (const auto& t : weights.tensors)
    if (t.name == "token_embd.weight") p.token_embd_bytes = t.bytes;
  p.file_bytes = weights.file_bytes;
  p.kv_bytes_per_token = kv::kv_bytes_per_token(o.kv_type, hp.n_layer, hp.n_head_kv, hp.head_dim);
  // The cache hands out whole blocks: each sequence rounds its context up to kBlockTokens.
  const int64_t blocks_per_seq = (ctx + kv::kBlockTokens - 1) / kv::kBlockTokens;
  p.kv_blocks = blocks_per_seq * o.seqs;
  const uint64_t block_bytes = checked_mul(p.kv_bytes_per_token, kv::kBlockTokens, "KV block bytes");
  p.kv_bytes = checked_mul(block_bytes, static_cast<uint64_t>(p.kv_blocks), "KV cache bytes");
  p.workspace_bytes = model::Model::workspace_bytes(hp, o.batch_tokens, o.n_threads);

  Overhead& ov = p.overhead;
  ov.process = o.process_base_bytes;
  ov.metadata = resident_metadata_bytes(metadata);
  ov.tokenizer = kTokenizerFixedBytes + static_cast<uint64_t>(hp.n_vocab) * kTokenizerBytesPerToken;
  ov.threads = static_cast<uint64_t>(o.n_threads - 1) * kThreadBytes +
               static_cast<uint64_t>(o.http_threads) * kHttpThreadBytes;
  ov.buffers = checked_mul(static_cast<uint64_t>(hp.n_vocab) * kBufferBytesPerVocabPerSeq,
                           static_cast<uint64_t>(o.seqs), "buffer bytes");
  p.overhead_bytes = ov.total();

  uint64_t total = checked_add(p.file_bytes, p.kv_bytes, "total");
  total = checked_add(total, p.workspace_bytes, "total");
  p.total_bytes = checked_add(total, p.overhead_bytes, "total");
  return p;
}

Fit fit_budget(const model::HParams& hp, const MemoryPlan& p, uint64_t budget) {
  Fit f;
  f.budget = budget;
  f.weights_fit = p.file_bytes <= budget;
  f.fits = p.total_bytes <= budget;
  // Everything but the KV cache is fixed; the KV cache grows by whole blocks per sequence.
  const uint64_t fixed = p.total_bytes - p.kv_bytes;
  const uint64_t left = budget > fixed ? budget - fixed : 0;
  const uint64_t block_bytes = p.kv_bytes_per_token * static_cast<uint64_t>(kv::kBlockTokens);
  const uint64_t blocks_per_seq = block_bytes ? left / block_bytes / static_cast<uint64_t>(p.seqs) : 0;
  const uint64_t cap = static_cast<uint64_t>(std::min<int64_t>(hp.n_ctx_train, kMaxPlanCtx));
  f.max_ctx = static_cast<int64_t>(std::min<uint64_t>(blocks_per_seq * kv::kBlockTokens, cap));
  const uint64_t seq_bytes = block_bytes * static_cast<uint64_t>((p.ctx + kv::kBlockTokens - 1) / kv::kBlockTokens);
  f.max_seqs = seq_bytes ? static_cast<int64_t>(std::min<uint64_t>(left / seq_bytes, uint64_t{1} << 40)) : 0;
  return f;
}

void require_weights_fit(const MemoryPlan& p, uint64_t budget) {
  if (budget < p.file_bytes)
    fail("the weights alone take ", format_bytes(p.file_bytes), ", ", format_bytes(p.file_bytes - budget),
         " more than the budget of ", format_bytes(budget));
}

uint64_t parse_size(std::string_view text) {
  std::string s(text);
  auto bad = [&](const char* why) -> uint64_t {
    fail("cannot read '", text, "' as a memory size (", why, "; e.g. 24GiB, 24GB, 24G, 24e9)");
  };
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  if (i == s.size()) return bad("it is empty");
  if (s[i] == '-' || s[i] == '+') return bad("no sign allowed");
  const char* begin = s.c_str() + i;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  if (end == begin) return bad("no number");
  if (errno == ERANGE || !std::isfinite(v)) return bad("the number is out of range");
  // strtod also reads "inf", "nan" and hex floats; accept digits, '.', and an exponent only.
  for (const char* c = begin; c < end; ++c)
    if (!std::isdigit(static_cast<unsigned char>(*c)) && *c != '.' && *c != 'e' && *c != 'E' && *c != '-' && *c != '+')
      return bad("not a decimal number");
  // The unit: optional spaces, then letters only, then optional spaces.
  std::string unit;
  const char* c = end;
  while (*c && std::isspace(static_cast<unsigned char>(*c))) ++c;
  while (*c && std::isalpha(static_cast<unsigned char>(*c))) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(*c++)));
  while (*c && std::isspace(static_cast<unsigned char>(*c))) ++c;
  if (*c) return bad("unexpected characters after the unit");
  double mult = 0;
  struct Unit { const char* name; double mult; };
  static const Unit kUnits[] = {
      {"", 1}, {"b", 1},
      {"k", 1024.0}, {"kib", 1024.0}, {"kb", 1e3},
      {"m", 1048576.0}, {"mib", 1048576.0}, {"mb", 1e6},
      {"g", 1073741824.0}, {"gib", 1073741824.0}, {"gb", 1e9},
      {"t", 1099511627776.0}, {"tib", 1099511627776.0}, {"tb", 1e12},
  };
  for (const auto& u : kUnits)
    if (unit == u.name) mult = u.mult;
  if (mult == 0) return bad("unknown unit");
  const double bytes = std::floor(v * mult);
  if (!(bytes >= 1)) return bad("it must be at least one byte");
  if (bytes > 4.6e18) return bad("it is above 2^62 bytes");
  return static_cast<uint64_t>(bytes);
}

std::string format_bytes(uint64_t b) {
  char buf[64];
  const double d = static_cast<double>(b);
  if (b >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f GB (%.2f GiB)", d / 1e9, d / 1073741824.0);
  else if (b >= 1000000ull) std::snprintf(buf, sizeof buf, "%.2f MB (%.2f MiB)", d / 1e6, d / 1048576.0);
  else if (b >= 1000ull) std::snprintf(buf, sizeof buf, "%.1f KB", d / 1e3);
  else std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

const std::vector<Device>& devices() {
  // GPU memory as vendors state it: a "24 GB" card has 24 GiB of memory chips (nvidia-smi shows
  // 24564 MiB for an RTX 4090); the driver and CUDA context then keep a few hundred MiB of it.
  constexpr uint64_t GiB = 1ull << 30;
  static const std::vector<Device> kDevices = {
      {"rtx3090", 24 * GiB, "NVIDIA RTX 3090, 24 GiB"},
      {"rtx4090", 24 * GiB, "NVIDIA RTX 4090, 24 GiB"},
      {"rtx5090", 32 * GiB, "NVIDIA RTX 5090, 32 GiB"},
      {"a6000", 48 * GiB, "NVIDIA RTX A6000, 48 GiB"},
      {"a100-40", 40 * GiB, "NVIDIA A100 40GB, 40 GiB"},
      {"a100", 80 * GiB, "NVIDIA A100 80GB, 80 GiB"},
      {"h100", 80 * GiB, "NVIDIA H100, 80 GiB"},
      {"h200", 141 * GiB, "NVIDIA H200, 141 GiB"},
  };
  return kDevices;
}

uint64_t host_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemTotal:", 0) == 0) {
      std::istringstream ss(line.substr(9));
      uint64_t kb = 0;
      ss >> kb;
      if (kb > 0) return kb * 1024;
    }
  }
  fail("cannot read MemTotal from /proc/meminfo for --device host");
}

Device find_device(std::string_view name) {
  if (iequals(name, "host")) return {"host", host_memory_bytes(), "this machine's RAM (MemTotal)"};
  for (const auto& d : devices())
    if (iequals(d.name, name)) return d;
  std::string names;
  for (const auto& d : devices()) names += d.name + ", ";
  fail("unknown device '", name, "' (known: ", names, "host)");
}

}  // namespace moe::plan
