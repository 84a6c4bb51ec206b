// model.cpp: loading, and the backend-independent part of a forward step (see model.h): the batch is
// checked entry by entry and the KV blocks reserved before the backend touches anything.
#include "model/model.h"

#include <algorithm>

#include "hf/hf.h"
#include "model/cpu_backend.h"
#include "model/lora.h"
#include "model/vulkan_backend.h"

#include "util/available_memory.h"
#include "util/error.h"

namespace moe::model {

uint64_t Model::workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads) {
  return CpuBackend::workspace_bytes(hp, max_batch_tokens, n_threads);
}

std::unique_ptr<Model> Model::load(const std::string& path, const ModelOptions& options) {
  return std::make_unique<Model>(hf::open_model_file(path), options);
}

namespace {

// The spec of a freshly opened file, its Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 matrices repacked when the options and the file
// allow (model/repack.h: only a file this process mapped itself, whose pages the copies replace, and
// only for the CPU backend).
std::shared_ptr<const ModelSpec> bind(gguf::File file, const ModelOptions& options) {
  const bool mapped = file.memory_mapped();
  std::shared_ptr<const ModelSpec> spec = ModelSpec::from_file(std::move(file));
  // The repacked order is the CPU kernels' alone: a model on a Vulkan device reads the GGUF bytes.
  if (!options.repack || !mapped || options.precision != Precision::Fast || parse_device(options.device) != kCpuDevice)
    return spec;
  auto repacked = std::make_shared<ModelSpec>(*spec);
  const int threads = options.pool ? options.pool->size() : options.n_threads > 0 ? options.n_threads : physical_core_count();
  // At most 80 % of what the process may still take: beyond that the weights stay pageable.
  uint64_t room = UINT64_MAX;
  try {
    room = read_available_memory().bytes / 5 * 4;
  } catch (const Error&) {  // no MemAvailable (Linux before 3.14): no bound known
  }
  repacked->repack = repack_weights(repacked->weights, threads, /*drop_mapped=*/true, room);
  return repacked;
}

}  // namespace

Model::Model(gguf::File file, const ModelOptions& options) : Model(bind(std::move(file), options), options) {}

Model::Model(std::shared_ptr<const ModelSpec> spec, const ModelOptions& options) : spec_(std::move(spec)) {
  if (!spec_) fail("internal: a model needs a spec");
  if (options.pool) {
    pool_ = options.pool;
  } else {
    own_pool_ = std::make_unique<ThreadPool>(options.n_threads > 0 ? options.n_threads : physical_core_count());
    pool_ = own_pool_.get();
  }
  if (options.max_batch_tokens < 1 || options.max_batch_tokens > (1 << 20))
    fail("max batch tokens ", options.max_batch_tokens, " is outside [1, 1048576]");
  max_batch_ = options.max_batch_tokens;
  const int device = parse_device(options.device);
  if (device == kCpuDevice)
    backend_ = std::make_unique<CpuBackend>(spec_, *pool_, max_batch_, options.precision);
  else
    backend_ = std::make_unique<VulkanBackend>(spec_, *pool_, max_batch_, options.precision, device, options.gpu_memory);
}

Model::~Model() = default;

bool Model::rebalance_experts() {
  std::lock_guard<std::mutex> lock(forward_mutex_);
  return backend_->rebalance();
}

void Model::forward(const Batch& b, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) {
  std::lock_guard<std::mutex> lock(forward_mutex_);
  const HParams& hp = spec_->hp;
  const int64_t n = b.size();
  if (b.positions.size() != b.tokens.size() || b.seq_ids.size() != b.tokens.size() ||
      b.want_logits.size() != b.tokens.size())
    fail("batch fields have different lengths (tokens ", b.tokens.size(), ", positions ", b.positions.size(),
         ", seq_ids ", b.seq_ids.size(), ", want_logits ", b.want_logits.size(), ")");
  if (!b.adapters.empty() && b.adapters.size() != b.tokens.size())
    fail("batch fields have different lengths (tokens ", b.tokens.size(), ", adapters ", b.adapters.size(), ")");
  const LoraGeometry own = LoraGeometry::of(hp);
  for (size_t i = 0; i < b.adapters.size(); ++i)
    if (b.adapters[i] && !(b.adapters[i]->geometry() == own))
      fail("batch entry ", i, ": the LoRA adapter '", b.adapters[i]->name(), "' was made for a base of another shape (or Q/K row order)");
  const kv::Geometry& g = cache.geometry();
  if (g.n_layer != hp.n_layer || g.n_head_kv != hp.n_head_kv || g.head_dim != hp.head_dim)
    fail("the KV cache was made for another model (layers ", g.n_layer, ", KV heads ", g.n_head_kv, ", head size ",
         g.head_dim, ")");

  // Check every entry, and each sequence's positions, before touching the cache. `next` tracks the
  // position each sequence expects next: the cached length at first, then one past its last entry.
  auto& next = next_pos_;  // (seq, next position): few sequences per batch
  next.clear();
  auto find_next = [&](int32_t seq) -> std::pair<int32_t, int64_t>* {
    for (auto& p : next)
      if (p.first == seq) return &p;
    return nullptr;
  };
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tok = b.tokens[i], pos = b.positions[i], seq = b.seq_ids[i];
    if (tok < 0 || tok >= hp.n_vocab) fail("batch entry ", i, ": token id ", tok, " is outside [0, ", hp.n_vocab, ")");
    if (pos < 0) fail("batch entry ", i, ": negative position ", pos);
    auto* p = find_next(seq);
    if (!p) {
      const int64_t len = cache.length(seq);
      if (pos > len)
        fail("batch entry ", i, ": sequence ", seq, " starts at position ", pos, " but only ", len,
             " positions are cached (positions must be contiguous)");
      next.emplace_back(seq, pos + 1);
    } else {
      if (pos != p->second)
        fail("batch entry ", i, ": sequence ", seq, " has position ", pos, " after position ", p->second - 1,
             " (a sequence's entries must be consecutive and in order)");
      p->second = pos + 1;
    }
  }
  cache.reserve_all(next);

  result.n_outputs = 0;
  result.output_index.clear();
  for (int64_t i = 0; i < n; ++i)
    if (b.want_logits[i]) result.output_index.push_back(static_cast<int32_t>(i));
  const auto n_out = static_cast<int64_t>(result.output_index.size());
  result.logits.resize(options.logits ? static_cast<size_t>(n_out * hp.n_vocab) : 0);
  result.hidden.resize(options.hidden ? static_cast<size_t>(n_out * hp.n_embd) : 0);
  // Routing trace (opt-in): filled per layer by the backend from the router's top-k.
  const auto n_route = options.routing ? static_cast<size_t>(n_out * hp.n_layer * std::max<int64_t>(hp.n_expert_used, 1)) : 0;
  result.routing_experts.resize(n_route);
  result.routing_weights.resize(n_route);

  backend_->forward(b, cache, result, options);
  for (auto& [seq, end] : next) cache.set_length(seq, end);
}

}  // namespace moe::model
