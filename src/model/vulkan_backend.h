// vulkan_backend.h: the forward pass on a Vulkan compute device (src/vulkan), the second Backend. It
// runs the same arithmetic as the CPU backend (cpu_backend.h, the readable specification) with the
// device ops of vulkan/ops.h: per layer RMSNorm, Q/K/V products, RoPE, K/V into a device mirror of the
// paged cache, causal attention, output product, residual; RMSNorm, router top-k, the tokens grouped by
// expert, each expert's gate/up/SwiGLU/down over its slots, the weighted sum in expert order, residual;
// the output head for the wanted rows only (gather_rows, then the product), whose logits alone are read
// back. A step whose experts are all on the card is one command buffer: one submission, one wait.
//
// Placement (vulkan_placement.cpp): weights are uploaded once from the mmap'd views. Everything but the
// experts (embeddings, norms, attention, router, output head) must fit the memory budget
// (ModelOptions::gpu_memory; 0: the device's memory less a reserve) with the workspace and the KV
// mirror; the experts fill what is left, chosen by routing statistics (expert_token_counts) when the
// model has run, else by index. Experts that do not fit are computed on the CPU from the mapped file
// (kernels::matmul): per layer the FFN input rows and the slot plan are read back, the CPU experts'
// outputs uploaded into their slot rows, and moe_combine runs on the device as before, so a split step
// sums the same experts in the same order. rebalance() re-chooses the experts while serving.
//
// The KV cache: the device holds a mirror of the kv::Cache's blocks (same block ids and layout) and
// attention reads the mirror. Each step's K/V rows are also written back into the host cache, so the
// host cache stays the truth: a backend handed another cache uploads that cache's blocks into a new
// mirror, and prefix sharing, truncation and block reuse (all host bookkeeping) work unchanged.
//
// Precision: the device computes in f32 on dequantized weights (what Precision::Exact means on the
// CPU) whatever the precision setting; the setting applies to experts computed on the CPU.
// LoRA adapters are not run on the device: a batch with one is refused with a moe::Error.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/expert_counts.h"
#include "model/spec.h"
#include "util/thread_pool.h"
#include "vulkan/context.h"
#include "vulkan/ops.h"

namespace moe::model {

// --device spellings: "cpu" -> kCpuDevice, "vulkan" -> kPreferredVulkanDevice (vk::preferred_device: a
// GPU before lavapipe), "vulkan:N" -> N; anything else is a moe::Error naming the spelling.
constexpr int kCpuDevice = -1;
constexpr int kPreferredVulkanDevice = -2;
int parse_device(const std::string& device);

// Where the weights of a model go for a device-memory budget (the planner's and the backend's math).
struct DevicePlacement {
  uint64_t budget = 0;            // bytes the backend may take on the device
  uint64_t fixed_bytes = 0;       // embeddings, norms, attention, router, output head (always on the card)
  uint64_t workspace_bytes = 0;   // activations of a max_batch_tokens step
  uint64_t kv_bytes = 0;          // the KV mirror
  uint64_t expert_bytes_on_card = 0;
  uint64_t expert_bytes_on_cpu = 0;
  int64_t experts_on_card = 0;    // (layer, expert) pairs
  int64_t experts_total = 0;
  // [n_layer][n_expert]: 1 where that expert's three matrices are on the card.
  std::vector<std::vector<uint8_t>> on_card;
};

// Bytes a tensor of `bytes` takes on the card (its own buffer, rounded up to 256).
uint64_t device_tensor_bytes(uint64_t bytes);

// What placement needs to know of a model: the bytes of everything but the experts (embeddings, norms,
// attention, router, output head) and of each expert's three matrices, [n_layer][n_expert] (a dense
// model's FFN is its one expert). Weights give them here; the planner gives them from a file layout.
struct PlacementSizes {
  uint64_t fixed_bytes = 0;
  std::vector<std::vector<uint64_t>> expert_bytes;
};
PlacementSizes placement_sizes(const HParams& hp, const Weights& w);

// Chooses the experts on the card: the whole model when it fits `budget` bytes, else the fixed part, the
// workspace and the KV mirror first (a moe::Error naming the shortfall when they alone exceed it) and
// as many experts as fit, most routed first by `counts` ([n_layer][n_expert]; empty: by expert index,
// spread evenly over the layers).
DevicePlacement place_experts(const PlacementSizes& sizes, uint64_t budget, uint64_t workspace_bytes,
                              uint64_t kv_bytes, const std::vector<std::vector<int64_t>>& counts);

class VulkanBackend final : public Backend {
 public:
  // Opens device `device_index` (or kPreferredVulkanDevice), uploads the weights that fit `gpu_memory` bytes (0: the device's memory
  // less a reserve) and allocates the workspace. Throws moe::Error naming the device and the reason
  // (no device, a weight type the shaders lack, a tensor larger than one storage binding, too little memory).
  VulkanBackend(std::shared_ptr<const ModelSpec> spec, ThreadPool& pool, int64_t max_batch_tokens, Precision precision,
                int device_index, uint64_t gpu_memory);
  ~VulkanBackend() override;

  void forward(const Batch& batch, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) override;
  Precision precision() const override { return precision_; }
  void set_precision(Precision p) override { precision_ = p; }
  uint64_t workspace_bytes() const override;
  std::vector<std::vector<int64_t>> expert_token_counts() const override;
  void reset_expert_token_counts() override;
  bool rebalance() override;

  // The device's bytes for a workspace of max_batch_tokens (the planner calls this).
  static uint64_t device_workspace_bytes(const HParams& hp, int64_t max_batch_tokens);
  // The default budget of a device: its memory less a reserve for the driver and other programs.
  static uint64_t default_budget(const vk::DeviceInfo& info);

  const vk::DeviceInfo& device() const;
  vk::Context& context();  // the backend's device (moe bench measures its bandwidth with it)
  const DevicePlacement& placement() const { return placement_; }
  // Puts exactly the experts marked in on_card ([n_layer][n_expert]) on the card, uploading and freeing
  // as needed (tests; rebalance() uses it). Throws moe::Error when they exceed the budget.
  void place(const std::vector<std::vector<uint8_t>>& on_card);

  struct Impl;

 private:
  void run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                 const ForwardOptions& options);
  void bind_cache(kv::Cache& cache);
  void attention_block(vk::Stream& s, int64_t layer, int64_t n, kv::Cache& cache);
  void ffn_block(vk::Stream& s, int64_t layer, int64_t n);
  void cpu_experts(int64_t layer, int64_t n);
  void upload_expert(int64_t layer, int64_t e);

  std::shared_ptr<const ModelSpec> spec_;
  const HParams& hp_;
  const Weights& w_;
  ThreadPool* pool_;
  int64_t max_batch_ = 0;
  Precision precision_ = Precision::Fast;
  uint64_t budget_ = 0;
  DevicePlacement placement_;
  std::unique_ptr<Impl> im_;
  ExpertCounts expert_counts_;
};

}  // namespace moe::model
