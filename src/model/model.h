// model.h: a loaded Llama/Mixtral model, the facade the engine and the CLI use. A Model is a shared,
// immutable ModelSpec (hyperparameters and weight views, spec.h) plus a Backend that runs it (the CPU
// backend, cpu_backend.h, is the readable specification of the arithmetic) with its own workspace.
// Several Models can share one spec (Model(spec, options)): the weights are mapped once.
//
// forward() validates the batch, reserves its KV blocks (kv::Cache::reserve_all), lets the backend
// compute, and then records the sequences' new lengths. Calls are serialized by a mutex, so two
// engines may share one Model; for parallel steps give each its own Model over the same spec.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "kv/cache.h"
#include "model/backend.h"
#include "model/hparams.h"
#include "model/spec.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace moe::model {

struct ModelOptions {
  int n_threads = 0;                   // 0: physical cores (ignored when `pool` is given)
  ThreadPool* pool = nullptr;          // a shared pool (not owned); null: the model makes its own
  int64_t max_batch_tokens = 512;      // larger batches are run in chunks of this many tokens
  Precision precision = Precision::Fast;
  // Where the forward pass runs: "cpu" (CpuBackend) or "vulkan" / "vulkan:N" (VulkanBackend, device N
  // of vk::list_devices(), default 0). parse_device() checks the spelling.
  std::string device = "cpu";
  // Vulkan: the bytes of device memory the weights, KV mirror and workspace may take (0: the device's
  // free memory less a reserve). Experts that do not fit stay on the CPU (split placement).
  uint64_t gpu_memory = 0;
  // Repack Q2_K/Q3_K/Q4_K/Q6_K/Q8_0 matrices at load for the AVX-512 lane kernels (model/repack.h): same results, same
  // resident bytes, faster decode and small batches. Applies to a memory-mapped GGUF loaded in Fast
  // precision on a CPU with those kernels; off: the weights are used in place from the map.
  bool repack = true;
};

class Model {
 public:
  // Opens, validates and binds a GGUF model. Throws moe::Error naming what is wrong.
  static std::unique_ptr<Model> load(const std::string& path, const ModelOptions& options = {});
  Model(gguf::File file, const ModelOptions& options);
  // A model over an already loaded spec (shared with other Models), with its own backend and workspace.
  Model(std::shared_ptr<const ModelSpec> spec, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::shared_ptr<const ModelSpec>& spec() const { return spec_; }
  const HParams& hparams() const { return spec_->hp; }
  const Weights& weights() const { return spec_->weights; }
  const gguf::File& file() const { return *spec_->file; }
  // What load repacked (all zero when nothing was: repacking off, or not applicable).
  const RepackStats& repack_stats() const { return spec_->repack; }
  ThreadPool& pool() { return *pool_; }
  int64_t max_batch_tokens() const { return max_batch_; }
  Precision precision() const { return backend_->precision(); }
  void set_precision(Precision p) { backend_->set_precision(p); }

  // The KV geometry of this model for a cache element type.
  kv::Geometry kv_geometry(kv::KvType type) const { return spec_->kv_geometry(type); }

  // Runs the batch, writing K/V into `cache` and producing outputs for entries with want_logits.
  // Throws moe::Error (before changing the cache) for bad token ids, positions or sequences, a cache of
  // another geometry, or when the cache has too few free blocks. Serialized: safe from several threads.
  void forward(const Batch& batch, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options = {});

  // Bytes of the buffers forward() uses, allocated once at load (the memory planner calls this).
  static uint64_t workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads);

  // Tokens routed to each expert of each layer since load (or the last reset): [n_layer][n_expert]. Safe
  // to call from any thread.
  std::vector<std::vector<int64_t>> expert_token_counts() const { return backend_->expert_token_counts(); }
  void reset_expert_token_counts() { backend_->reset_expert_token_counts(); }
  // Moves experts between the device and the CPU by the routing statistics (split placement on a
  // Vulkan device; a no-op on the CPU). True when something moved. Waits for a running forward().
  bool rebalance_experts();
  // The backend (tests and `moe bench` look at a Vulkan backend's placement).
  Backend& backend() { return *backend_; }

 private:
  std::shared_ptr<const ModelSpec> spec_;
  std::unique_ptr<ThreadPool> own_pool_;
  ThreadPool* pool_ = nullptr;
  int64_t max_batch_ = 0;
  std::unique_ptr<Backend> backend_;
  std::mutex forward_mutex_;
  // Batch validation: each sequence's next position (kept to reuse capacity).
  std::vector<std::pair<int32_t, int64_t>> next_pos_;
};

}  // namespace moe::model
