// memory.h: how much memory a model takes to run, before loading it: weights, KV cache, compute
// workspace and runtime overhead, and whether (and how much context / how many sequences) fits a budget.
//
// Every term calls the function the runtime itself sizes with: kv::kv_bytes_per_token and whole
// kv::kBlockTokens blocks for the cache (kv::Cache), model::Model::workspace_bytes for the forward-pass
// arena, the GGUF layout (layout.h) for the weights. The weights are mmap'd and used in place, so they
// count at their file size. Resident-set notes: mapped weights become resident when first read; a
// forward pass reads every dense weight, but an MoE expert's pages are read only once some token has
// been routed to it. The plan counts every expert as resident, which is the steady state of a server
// and of any prompt longer than a few dozen tokens (with random or trained routers, every expert of
// every layer is chosen within the first tokens); a process that has only run a very short prompt can
// sit below it. The token embedding is read one row per token, so only the rows of tokens seen are
// resident (a short run on a model with a large vocabulary sits below the plan by up to its size,
// reported as token_embd_bytes; a server sees most of the vocabulary). KV blocks and workspace pages
// likewise become resident as they are first written, so the plan is the peak at full context and a
// full batch.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kv/kv_types.h"
#include "model/hparams.h"
#include "plan/layout.h"

namespace moe::plan {

struct MemoryOptions {
  int64_t ctx = 0;                    // tokens of context per sequence (0: the model's training context)
  int64_t seqs = 1;                   // sequences held at once
  kv::KvType kv_type = kv::KvType::F16;
  int64_t batch_tokens = 512;         // tokens per forward step (model::ModelOptions::max_batch_tokens)
  int n_threads = 1;                  // compute threads (the workspace keeps per-thread scratch)
  int64_t http_threads = 0;           // `moe serve`'s HTTP worker threads (idle ones touch little)
  uint64_t process_base_bytes = 0;    // resident size of the runtime itself (process_base_bytes())
};

// What the process needs beyond weights, KV and workspace.
struct Overhead {
  uint64_t process = 0;    // the binary, shared libraries, C/C++ runtime: measured (process_base_bytes)
  uint64_t metadata = 0;   // the GGUF metadata parsed into memory (vocabulary arrays dominate)
  uint64_t tokenizer = 0;  // the tokenizer's pieces, scores and lookup table
  uint64_t threads = 0;    // worker stacks and per-thread malloc arenas, as touched
  uint64_t buffers = 0;    // logits and sampler buffers (vocabulary-sized, per output token)
  uint64_t total() const { return process + metadata + tokenizer + threads + buffers; }
};

struct MemoryPlan {
  int64_t ctx = 0, seqs = 0;
  uint64_t weights_bytes = 0;       // tensor data
  uint64_t file_bytes = 0;          // the mmap'd GGUF (header + padded data): the resident weights
  uint64_t token_embd_bytes = 0;    // of which the token embedding: read one row per token, so only the
                                    // rows (pages) of tokens seen so far are resident
  uint64_t kv_bytes_per_token = 0;  // kv::kv_bytes_per_token for the model and KV type
  int64_t kv_blocks = 0;            // whole blocks for ctx tokens, times seqs
  uint64_t kv_bytes = 0;
  uint64_t workspace_bytes = 0;     // model::Model::workspace_bytes
  Overhead overhead;
  uint64_t overhead_bytes = 0;
  uint64_t total_bytes = 0;         // file + kv + workspace + overhead
};

// Longest accepted context: 16M tokens (and at least one token).
constexpr int64_t kMaxPlanCtx = int64_t{1} << 24;

// Plans the memory of `hp` whose weights are laid out as `weights` (with `metadata` parsed at load).
// Throws moe::Error for a context of 0 or above kMaxPlanCtx, seqs < 1, or batch_tokens < 1.
MemoryPlan plan_memory(const model::HParams& hp, const WeightsLayout& weights, const Metadata& metadata,
                       const MemoryOptions& options);

struct Fit {
  uint64_t budget = 0;
  bool weights_fit = false;  // file_bytes <= budget
  bool fits = false;       // total_bytes <= budget
  int64_t max_ctx = 0;     // longest context (whole KV blocks, at most the training context) for `seqs`
  int64_t max_seqs = 0;    // most sequences of `ctx` tokens
};
// Fits the plan into a budget (max_ctx and max_seqs are 0 when not even one block fits).
Fit fit_budget(const model::HParams& hp, const MemoryPlan& plan, uint64_t budget);
// Throws moe::Error when the budget is below the weights alone, saying by how much.
void require_weights_fit(const MemoryPlan& plan, uint64_t budget);

// Bytes the parsed metadata occupies in memory (gguf::Value objects and their strings).
uint64_t resident_metadata_bytes(const Metadata& metadata);

// This process's resident set right now (VmRSS), 0 if /proc is unavailable. `moe plan` measures it at
// start-up, before touching any model: the same binary's base cost as `moe run` starts.
uint64_t current_rss_bytes();
// The planner's estimate of the runtime's own resident size: the measured base of this process plus the
// code that loading and running a model pages in (kRunCodeBytes).
uint64_t process_base_bytes(uint64_t measured_rss_at_start);

// --- budgets ----------------------------------------------------------------------------------------
// "24GiB", "24 GiB", "24GB", "24G" (binary, like free -g), "1.5TiB", "24e9", "25769803776": bytes.
// moe::Error for anything else (negative, zero, not finite, unknown unit, above 2^62).
uint64_t parse_size(std::string_view text);
// "28.45 GB (26.49 GiB)"-style rendering; small values in MB / KB.
std::string format_bytes(uint64_t bytes);

struct Device {
  std::string name;         // "rtx4090"
  uint64_t bytes;           // memory size (GPU: nominal, which vendors state in GiB)
  std::string description;  // "NVIDIA RTX 4090, 24 GiB"
};
const std::vector<Device>& devices();  // not including "host"
// A device by name (case-insensitive), "host" being this machine's MemTotal. moe::Error listing names.
Device find_device(std::string_view name);
uint64_t host_memory_bytes();  // MemTotal from /proc/meminfo; moe::Error when unreadable

}  // namespace moe::plan
