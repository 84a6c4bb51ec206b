// kv_pool.cpp: the serving KV pool from available memory (see kv_pool.h for the rule). Every size is
// plan_memory's (the allocator's own sizing functions), in whole KV blocks as kv::Cache allocates them.
#include "plan/kv_pool.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/checked.h"
#include "util/error.h"

namespace moe::plan {
namespace {

// kv::Cache's own ceiling (block ids are int32).
constexpr int64_t kMaxPoolBlocks = int64_t{1} << 30;

std::string tokens_text(int64_t n) {
  std::string digits = std::to_string(n), s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

std::string fraction_text(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", f);
  return buf;
}

// The memory that would make `seq_blocks` blocks of one sequence fit: (fixed + one sequence) / utilization.
uint64_t available_needed(const PoolPlan& p, int64_t seq_blocks) {
  const long double need = static_cast<long double>(p.fixed) +
                           static_cast<long double>(p.block_bytes) * static_cast<long double>(seq_blocks);
  return static_cast<uint64_t>(std::ceil(need / static_cast<long double>(p.options.utilization)));
}

[[noreturn]] void refuse(const PoolPlan& p, int64_t len, int64_t room_blocks) {
  const PoolOptions& o = p.options;
  const int64_t seq_blocks = (len + kv::kBlockTokens - 1) / kv::kBlockTokens;
  std::string what_fits =
      room_blocks > 0
          ? cat("what fits: one sequence of at most ", tokens_text(room_blocks * kv::kBlockTokens),
                " tokens (-c ", room_blocks * kv::kBlockTokens, ")")
          : std::string("what fits: not even one KV block");
  fail("not even one sequence of ", tokens_text(len), " tokens fits in memory: its KV cache takes ",
       format_bytes(static_cast<uint64_t>(seq_blocks) * p.block_bytes), " (", seq_blocks, " blocks of ",
       kv::kBlockTokens, " tokens, ", kv::kv_type_name(o.kv_type), "), but only ", format_bytes(p.anon_room),
       " is left for it: ", format_bytes(o.available), " available (", o.available_source, ") x ",
       fraction_text(o.utilization), " utilization = ", format_bytes(p.usable), ", less workspace ",
       format_bytes(p.memory.workspace_bytes), " and overhead ", format_bytes(p.memory.overhead_bytes),
       p.weights_resident ? cat(" and resident weights ", format_bytes(p.weights_resident)) : std::string(),
       o.lora_bytes ? cat(" and LoRA adapters ", format_bytes(o.lora_bytes)) : std::string(), "; ",
       what_fits, "; this context needs ", format_bytes(available_needed(p, seq_blocks)),
       " available (--memory-available, --memory-utilization)");
}

}  // namespace

PoolPlan plan_kv_pool(const model::HParams& hp, const WeightsLayout& weights, const Metadata& metadata,
                      const PoolOptions& o) {
  if (!(o.utilization > 0.0 && o.utilization <= 1.0))
    fail("--memory-utilization ", o.utilization, " must be a fraction in (0, 1] (default 0.9)");
  if (o.max_num_seqs < 1 || o.max_num_seqs > 1024) fail("max-num-seqs ", o.max_num_seqs, " is outside [1, 1024]");
  if (o.max_model_len < 0 || o.max_model_len > kMaxPlanCtx)
    fail("max-model-len ", o.max_model_len, " is outside [1, ", kMaxPlanCtx, "] (0: the model's)");
  if (o.memory_budget == 0 && o.available == 0) fail("no memory is available to size the KV pool");

  PoolPlan p;
  p.options = o;
  int64_t len = o.max_model_len > 0 ? o.max_model_len : (hp.n_ctx_train > 0 ? hp.n_ctx_train : 4096);
  len = std::min(len, kMaxPlanCtx);
  MemoryOptions mo;
  mo.ctx = len;
  mo.seqs = o.max_num_seqs;
  mo.kv_type = o.kv_type;
  mo.batch_tokens = o.batch_tokens;
  mo.n_threads = o.n_threads;
  mo.http_threads = o.http_threads;
  mo.process_base_bytes = o.process_base_bytes;
  p.memory = plan_memory(hp, weights, metadata, mo);
  p.block_bytes = checked_mul(p.memory.kv_bytes_per_token, static_cast<uint64_t>(kv::kBlockTokens), "KV block bytes");
  p.weights_mapped = o.weights_mapped ? p.memory.file_bytes : 0;
  p.weights_resident = o.weights_mapped ? 0 : p.memory.file_bytes;
  p.fixed = checked_add(checked_add(p.weights_resident, p.memory.workspace_bytes, "fixed memory"),
                        p.memory.overhead_bytes, "fixed memory");
  p.fixed = checked_add(p.fixed, o.lora_bytes, "fixed memory");
  p.usable = static_cast<uint64_t>(std::floor(static_cast<long double>(o.available) * o.utilization));
  p.anon_room = p.usable > p.fixed ? p.usable - p.fixed : 0;
  const int64_t room_blocks =
      static_cast<int64_t>(std::min<uint64_t>(p.anon_room / p.block_bytes, static_cast<uint64_t>(kMaxPoolBlocks)));

  int64_t seq_blocks = (len + kv::kBlockTokens - 1) / kv::kBlockTokens;
  if (o.memory_budget > 0) {
    p.kv_blocks = static_cast<int64_t>(std::min<uint64_t>(o.memory_budget / p.block_bytes, kMaxPoolBlocks));
    if (p.kv_blocks < 1)
      fail("--memory-budget of ", format_bytes(o.memory_budget), " holds no KV block (one block of ", kv::kBlockTokens,
           " tokens is ", format_bytes(p.block_bytes), ")");
    p.limited_by = "--memory-budget";
    if (p.kv_blocks < seq_blocks) {
      if (o.max_model_len_given)
        fail("--memory-budget of ", format_bytes(o.memory_budget), " holds ", p.kv_blocks * kv::kBlockTokens,
             " tokens, less than one sequence of ", tokens_text(len), " (-c ", p.kv_blocks * kv::kBlockTokens,
             " fits)");
      len = p.kv_blocks * kv::kBlockTokens;
      seq_blocks = p.kv_blocks;
      p.ctx_capped = true;
    }
  } else {
    if (room_blocks < seq_blocks) {
      if (o.max_model_len_given || room_blocks < 1) refuse(p, len, room_blocks);
      len = room_blocks * kv::kBlockTokens;  // the model's context does not fit: use what does
      seq_blocks = room_blocks;
      p.ctx_capped = true;
    }
    const uint64_t cache_room = p.anon_room - std::min(p.anon_room, p.weights_mapped);
    const int64_t cache_room_blocks =
        static_cast<int64_t>(std::min<uint64_t>(cache_room / p.block_bytes, static_cast<uint64_t>(kMaxPoolBlocks)));
    const int64_t cap = std::min<int64_t>(seq_blocks * o.max_num_seqs, kMaxPoolBlocks);
    p.kv_blocks = std::min(cap, std::max(cache_room_blocks, seq_blocks));
    p.limited_by = p.kv_blocks == cap ? "max-model-len x max-num-seqs" : "available memory";
  }
  if (len != p.memory.ctx) {
    mo.ctx = len;
    p.memory = plan_memory(hp, weights, metadata, mo);  // ctx changes only the KV terms
  }
  p.max_model_len = len;
  p.seq_blocks = seq_blocks;
  p.cap_blocks = std::min<int64_t>(seq_blocks * o.max_num_seqs, kMaxPoolBlocks);
  p.kv_bytes = checked_mul(static_cast<uint64_t>(p.kv_blocks), p.block_bytes, "KV pool bytes");
  p.weights_cached = std::min(p.weights_mapped, p.anon_room - std::min(p.anon_room, p.kv_bytes));
  return p;
}

std::string describe_pool(const PoolPlan& p) {
  const PoolOptions& o = p.options;
  std::string s;
  if (o.memory_budget == 0)
    s += cat("memory: ", format_bytes(o.available), " available (", o.available_source, ") x ",
             fraction_text(o.utilization), " utilization = ", format_bytes(p.usable), " usable\n");
  else
    s += cat("memory: KV pool set by --memory-budget ", format_bytes(o.memory_budget), "\n");
  s += cat("memory: KV pool ", format_bytes(p.kv_bytes), ": ", tokens_text(p.kv_blocks), " blocks of ", kv::kBlockTokens,
           " tokens (", kv::kv_type_name(o.kv_type), ", ", tokens_text(static_cast<int64_t>(p.memory.kv_bytes_per_token)),
           " bytes/token) = ", p.full_sequences(), " of ", o.max_num_seqs, " sequences at full context ",
           tokens_text(p.max_model_len), " (limited by ", p.limited_by, ")\n");
  s += cat("memory: weights ", format_bytes(p.memory.file_bytes),
           o.weights_mapped ? " mmap'd (pageable: the OS can drop and re-read them)" : " resident");
  if (o.weights_mapped && p.weights_paged() > 0)
    s += cat(", of which ", format_bytes(p.weights_paged()),
             " do not fit beside the pool and will be read from the file as needed");
  s += cat("; workspace ", format_bytes(p.memory.workspace_bytes), "; overhead ", format_bytes(p.memory.overhead_bytes));
  if (o.lora_bytes > 0) s += cat("; LoRA adapters ", format_bytes(o.lora_bytes), " (resident once loaded)");
  s += "\n";
  if (p.ctx_capped)
    s += cat("memory: the model's context does not fit; max-model-len is ", tokens_text(p.max_model_len),
             " (-c to choose)\n");
  if (o.memory_budget > 0 && o.available > 0 && p.kv_bytes > p.anon_room)
    s += cat("memory: warning: the pool is ", format_bytes(p.kv_bytes - p.anon_room), " more than the ",
             format_bytes(p.anon_room), " left of ", format_bytes(o.available), " available (", o.available_source,
             "); the kernel may kill the server when the pool fills\n");
  return s;
}

}  // namespace moe::plan
