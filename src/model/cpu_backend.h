// cpu_backend.h: the forward pass on the CPU, the first Backend and the readable specification of the
// model. Per layer: RMSNorm, Q/K/V projections of every batch token, RoPE, K/V written into each
// token's sequence in the paged cache, causal attention of each token over its own sequence
// (grouped-query), output projection, residual; RMSNorm, router, softmax, top-k with the chosen
// weights renormalised to sum 1 (Mixtral), the experts run on the tokens grouped by expert (each
// expert's weights stream once per step), weighted sum, residual. A dense model is the one-expert case.
//
// Batch invariance: every token's result is a function of its own sequence only: per-token activation
// quantization, one dot product per (token, row) in a fixed order, expert outputs summed in expert
// order. So a token gives bit-identical logits alone or inside any batch (tested).
//
// LoRA adapters (lora.h) run as a side path after each targeted projection, on the rows of the tokens
// whose sequence uses them (grouped by adapter; a step may mix adapters and the base); each row's side
// path depends on that row alone, so batch invariance holds with adapters too.
//
// All buffers live in one Workspace allocated when the backend is built for max_batch_tokens; forward()
// allocates nothing large. Each backend has its own workspace, so two backends over one ModelSpec can
// run at the same time.
#pragma once
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

#include "model/backend.h"
#include "model/expert_counts.h"
#include "model/lora.h"
#include "model/spec.h"
#include "util/thread_pool.h"

namespace moe::model {

class CpuBackend final : public Backend {
 public:
  // Throws moe::Error when a weight view is in device memory or the workspace cannot be allocated.
  CpuBackend(std::shared_ptr<const ModelSpec> spec, ThreadPool& pool, int64_t max_batch_tokens, Precision precision);
  ~CpuBackend() override;

  void forward(const Batch& batch, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) override;
  Precision precision() const override { return precision_; }
  void set_precision(Precision p) override { precision_ = p; }
  uint64_t workspace_bytes() const override;
  std::vector<std::vector<int64_t>> expert_token_counts() const override;
  void reset_expert_token_counts() override;

  // Bytes of the workspace for a model, a batch size and a thread count (the memory planner calls this).
  static uint64_t workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads);

  struct Workspace;

 private:
  void run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                 const ForwardOptions& options);
  void attention_block(int64_t layer, int64_t n, kv::Cache& cache);
  void ffn_block(int64_t layer, int64_t n);
  kernels::Activations activations(const float* x, int64_t n, int64_t cols, const TensorView& w);
  void matmul(const TensorView& w, kernels::Activations& a, float* y);
  // Fewer synchronisations: several matmuls in one parallel region (ThreadPool::parallel_for_all).
  struct MatmulJob {
    const TensorView* w;
    kernels::Activations a;
    float* y;
  };
  void run_matmuls(const std::vector<MatmulJob>& jobs);
  // y_i = W_i x for matrices over the same input x [n][cols]: one region when at most two activation
  // layouts are needed (buffers act and act2).
  void matmuls_same_input(const float* x, int64_t n, int64_t cols,
                          std::initializer_list<std::pair<const TensorView*, float*>> outs);
  kernels::Activations activations_in(uint8_t* buf, const float* x, int64_t n, int64_t cols, const TensorView& w);
  // Rows [first, first + m) of a (floats and quantized rows).
  static kernels::Activations slice(const kernels::Activations& a, int64_t first, int64_t m);
  // Adds the side path of every adapter of this chunk to projection `which` of layer l (expert e for the
  // FFN): x [m][in] in, y [m][out] updated; row i is token tok[i] of the chunk (tok null: row i is token i).
  enum class LoraWhich { Q, K, V, O, Gate, Up, Down };
  void lora_add(int64_t l, LoraWhich which, int64_t e, const float* x, int64_t m, int64_t in, float* y, int64_t out,
                const int32_t* tok);

  std::shared_ptr<const ModelSpec> spec_;
  const HParams& hp_;
  const Weights& w_;
  ThreadPool* pool_;
  int64_t max_batch_ = 0;
  Precision precision_ = Precision::Fast;
  std::unique_ptr<Workspace> ws_;
  ExpertCounts expert_counts_;  // another thread (metrics) may read them during a step
  // Per-chunk bookkeeping, kept to reuse capacity.
  std::vector<const int32_t*> tables_;   // each token's sequence block table
  std::vector<int32_t> chunk_pos_;       // each token's position
  std::vector<const LoraAdapter*> chunk_lora_;      // each token's adapter (null: the base)
  std::vector<const LoraAdapter*> chunk_adapters_;  // the chunk's distinct adapters, first seen first
  // LoRA scratch, grown on first use (a server without adapters never allocates it): gathered rows
  // [m][in], their result [m][out], x·Aᵀ [m][r], B's product [m][out], Exact-precision rows.
  std::vector<int32_t> lora_rows_;
  std::vector<float> lora_x_, lora_y_, lora_h_, lora_out_, lora_deq_;
};

}  // namespace moe::model
