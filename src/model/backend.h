// backend.h: the forward interface. A backend runs a validated batch of a ModelSpec over a paged KV
// cache; the CPU backend (cpu_backend.h) is the first implementation and the readable specification of
// the model's arithmetic. What is backend-independent stays in Model (model.h): batch validation, KV
// block reservation (through kv::Cache), output bookkeeping, sequence lengths after the step.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/matmul.h"
#include "kv/cache.h"

namespace moe::model {

class LoraAdapter;

using kernels::Precision;

// The tokens of one forward step. Entries of one sequence must appear in increasing position order,
// consecutive positions, starting at most at the sequence's cached length (earlier positions already
// in the cache; starting below it overwrites from there on).
struct Batch {
  std::vector<int32_t> tokens;       // token id of each entry
  std::vector<int32_t> positions;    // its position in its sequence
  std::vector<int32_t> seq_ids;      // its KV-cache sequence
  std::vector<uint8_t> want_logits;  // 1: this entry is an output (logits and/or hidden state)
  // The LoRA adapter of each entry (lora.h; null: the base), or empty when every entry runs the base.
  // Not owned: the caller keeps the adapters alive through forward(). Entries of one sequence share one.
  std::vector<const LoraAdapter*> adapters;

  void add(int32_t token, int32_t pos, int32_t seq, bool logits, const LoraAdapter* adapter = nullptr) {
    tokens.push_back(token);
    positions.push_back(pos);
    seq_ids.push_back(seq);
    want_logits.push_back(logits ? 1 : 0);
    if (adapter || !adapters.empty()) {
      adapters.resize(tokens.size() - 1, nullptr);
      adapters.push_back(adapter);
    }
  }
  void clear() { tokens.clear(); positions.clear(); seq_ids.clear(); want_logits.clear(); adapters.clear(); }
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

class Backend {
 public:
  virtual ~Backend() = default;

  // Runs a batch that Model::forward has validated, with the KV blocks of every entry's position
  // already reserved in `cache` and result.output_index, logits, hidden and routing_* already sized:
  // writes each entry's K/V into the cache (kv::Cache::rows) and each output entry's logits, hidden
  // state and (when options.routing) each layer's chosen experts into `result`
  // (output row i for batch entry result.output_index[i]), setting result.n_outputs.
  // It does not change sequence lengths; Model::forward does, after it returns.
  virtual void forward(const Batch& batch, kv::Cache& cache, ForwardResult& result, const ForwardOptions& options) = 0;

  virtual Precision precision() const = 0;
  virtual void set_precision(Precision p) = 0;
  // Bytes of the buffers forward() uses, allocated when the backend is built.
  virtual uint64_t workspace_bytes() const = 0;
  // Tokens routed to each expert of each layer since the backend was built (or the last reset):
  // [n_layer][n_expert]. Safe to call from any thread during forward().
  virtual std::vector<std::vector<int64_t>> expert_token_counts() const = 0;
  virtual void reset_expert_token_counts() = 0;
  // Re-chooses which experts sit where from expert_token_counts() (a backend that places experts on a
  // device, vulkan_backend.h); true when something moved. Not during forward(): Model serializes it.
  virtual bool rebalance() { return false; }
};

}  // namespace moe::model
