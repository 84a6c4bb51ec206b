// model.h: a loaded Llama/Mixtral model and its forward pass over a batch of tokens that may mix
// sequences (continuous batching). Per layer: RMSNorm, Q/K/V projections of every batch token, RoPE,
// K/V written into each token's sequence in the paged cache, causal attention of each token over its
// own sequence (grouped-query), output projection, residual; RMSNorm, router, softmax, top-k with the
// chosen weights renormalised to sum 1 (Mixtral), the experts run on the tokens grouped by expert (each
// expert's weights stream once per step), weighted sum, residual. A dense model is the one-expert case.
//
// Batch invariance: every token's result is a function of its own sequence only: per-token activation
// quantization, one dot product per (token, row) in a fixed order, expert outputs summed in expert
// order. So a token gives bit-identical logits alone or inside any batch (tested).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "kv/cache.h"
#include "model/hparams.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace moe::model {

using kernels::Precision;

// The tokens of one forward step. Entries of one sequence must appear in increasing position order,
// consecutive positions, starting at most at the sequence's cached length (earlier positions already
// in the cache; starting below it overwrites from there on).
struct Batch {
  std::vector<int32_t> tokens;       // token id of each entry
  std::vector<int32_t> positions;    // its position in its sequence
  std::vector<int32_t> seq_ids;      // its KV-cache sequence
  std::vector<uint8_t> want_logits;  // 1: this entry is an output (logits and/or hidden state)

  void add(int32_t token, int32_t pos, int32_t seq, bool logits) {
    tokens.push_back(token);
    positions.push_back(pos);
    seq_ids.push_back(seq);
    want_logits.push_back(logits ? 1 : 0);
  }
  void clear() { tokens.clear(); positions.clear(); seq_ids.clear(); want_logits.clear(); }
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

struct ForwardOptions {
  bool logits = true;   // compute the output head for output entries
  bool hidden = false;  // also return their final (output-normed) hidden states, e.g. for embeddings
  // Routing trace (opt-in; nothing is copied when false): each output entry's chosen experts and their
  // renormalised weights at every layer, into ForwardResult::routing_*.
  bool routing = false;
};

struct ForwardResult {
  int64_t n_outputs = 0;
  std::vector<int32_t> output_index;  // [n_outputs]: the batch entry of each output row
  std::vector<float> logits;          // [n_outputs][n_vocab] (when ForwardOptions::logits)
  std::vector<float> hidden;          // [n_outputs][n_embd] (when ForwardOptions::hidden)
  // When ForwardOptions::routing: [n_outputs][n_layer][n_expert_used] expert ids (ties to the lower id,
  // highest weight first) and their weights (sum 1 per layer); a dense model reports expert 0, weight 1.
  std::vector<int32_t> routing_experts;
  std::vector<float> routing_weights;
};

struct ModelOptions {
  int n_threads = 0;                   // 0: physical cores (ignored when `pool` is given)
  ThreadPool* pool = nullptr;          // a shared pool (not owned); null: the model makes its own
  int64_t max_batch_tokens = 512;      // larger batches are run in chunks of this many tokens
  Precision precision = Precision::Fast;
};

class Model {
 public:
  // Opens, validates and binds a GGUF model. Throws moe::Error naming what is wrong.
  static std::unique_ptr<Model> load(const std::string& path, const ModelOptions& options = {});
  Model(gguf::File file, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const HParams& hparams() const { return hp_; }
  const Weights& weights() const { return w_; }
  const gguf::File& file() const { return file_; }
  ThreadPool& pool() { return *pool_; }
  int64_t max_batch_tokens() const { return max_batch_; }
  Precision precision() const { return precision_; }
  void set_precision(Precision p) { precision_ = p; }

  // The KV geometry of this model for a cache element type.
  kv::Geometry kv_geometry(kv::KvType type) const;

  // Runs the batch, writing K/V into `cache` and producing outputs for entries with want_logits.
  // Throws moe::Error (before changing the cache) for bad token ids, positions or sequences, a cache of
  // another geometry, or when the cache has too few free blocks.
  void forward(const Batch& batch, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options = {});

  // Bytes of the buffers forward() uses, allocated once at load (the memory planner calls this).
  static uint64_t workspace_bytes(const HParams& hp, int64_t max_batch_tokens, int n_threads);

  // Tokens routed to each expert of each layer since load (or the last reset): [n_layer][n_expert]. Safe
  // to call from any thread.
  std::vector<std::vector<int64_t>> expert_token_counts() const;
  void reset_expert_token_counts();

  struct Workspace;

 private:
  void run_chunk(const Batch& b, int64_t begin, int64_t end, kv::Cache& cache, ForwardResult& result,
                 const ForwardOptions& options);
  void attention_block(int64_t layer, int64_t n, kv::Cache& cache);
  void ffn_block(int64_t layer, int64_t n);
  kernels::Activations activations(const float* x, int64_t n, int64_t cols, const TensorView& w);
  void matmul(const TensorView& w, kernels::Activations& a, float* y);

  gguf::File file_;
  HParams hp_;
  Weights w_;
  std::unique_ptr<ThreadPool> own_pool_;
  ThreadPool* pool_ = nullptr;
  int64_t max_batch_ = 0;
  Precision precision_ = Precision::Fast;
  std::unique_ptr<Workspace> ws_;
  // [n_layer * n_expert]; atomic so that another thread (metrics) may read them during a step.
  std::unique_ptr<std::atomic<int64_t>[]> expert_counts_;
  size_t n_counts_ = 0;
  // Per-chunk bookkeeping, kept to reuse capacity.
  std::vector<const int32_t*> tables_;   // each token's sequence block table
  std::vector<int32_t> chunk_pos_;       // each token's position
  std::vector<std::pair<int32_t, int64_t>> next_pos_;  // batch validation: each sequence's next position
};

}  // namespace moe::model
