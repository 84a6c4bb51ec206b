// expert_counts.h: the tokens routed to each expert of each layer, counted by a backend during its steps
// and read by another thread (metrics, routing-based placement) at any time: one relaxed atomic per
// (layer, expert). Every backend keeps one, so the counting and its snapshot live here once.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace moe::model {

class ExpertCounts {
 public:
  // n_expert 0 (a dense model) counts its FFN as one expert.
  ExpertCounts(int64_t n_layer, int64_t n_expert)
      : n_layer_(n_layer), n_expert_(std::max<int64_t>(n_expert, 1)),
        counts_(std::make_unique<std::atomic<int64_t>[]>(static_cast<size_t>(n_layer_ * n_expert_))) {
    reset();
  }

  void add(int64_t layer, int64_t expert, int64_t tokens) {
    counts_[static_cast<size_t>(layer * n_expert_ + expert)].fetch_add(tokens, std::memory_order_relaxed);
  }
  // [n_layer][n_expert]
  std::vector<std::vector<int64_t>> snapshot() const {
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(n_layer_));
    for (int64_t l = 0; l < n_layer_; ++l)
      for (int64_t e = 0; e < n_expert_; ++e)
        out[static_cast<size_t>(l)].push_back(counts_[static_cast<size_t>(l * n_expert_ + e)].load(std::memory_order_relaxed));
    return out;
  }
  void reset() {
    for (int64_t i = 0; i < n_layer_ * n_expert_; ++i) counts_[static_cast<size_t>(i)].store(0, std::memory_order_relaxed);
  }

 private:
  int64_t n_layer_, n_expert_;
  std::unique_ptr<std::atomic<int64_t>[]> counts_;
};

}  // namespace moe::model
