// vulkan_placement.cpp: which experts a VulkanBackend keeps on the card (vulkan_backend.h), how they
// move (place, rebalance), and the experts computed on the CPU in a split step. Kept apart from the
// forward pass so that vulkan_backend.cpp reads like cpu_backend.cpp.
//
// The budget rule: the fixed part (everything but the experts), the workspace and the KV mirror must
// fit; then experts are taken in order of preference (most routed tokens first, else by index with the
// layers interleaved, so every layer keeps its low-index experts) while they fit.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/vulkan_backend.h"
#include "model/vulkan_backend_impl.h"
#include "util/error.h"

namespace moe::model {

namespace {

uint64_t on_card_bytes(const TensorView& v) { return device_tensor_bytes(static_cast<uint64_t>(v.rows) * v.row_bytes); }

// "1.50 GiB", "7.54 MiB", "12.0 KiB": sizes in the messages of a budget that does not fit.
std::string gib(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1ull << 30));
  else if (bytes >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1ull << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
  return buf;
}

}  // namespace

uint64_t device_tensor_bytes(uint64_t bytes) { return (bytes + 255) / 256 * 256; }

PlacementSizes placement_sizes(const HParams& hp, const Weights& w) {
  PlacementSizes s;
  s.fixed_bytes = on_card_bytes(w.token_embd) + on_card_bytes(w.output_norm) + (w.output_tied ? 0 : on_card_bytes(w.output));
  for (const LayerWeights& L : w.layers) {
    for (const WeightView* v : {&L.attn_norm, &L.ffn_norm, &L.wq, &L.wk, &L.wv, &L.wo}) s.fixed_bytes += on_card_bytes(*v);
    if (hp.is_moe()) s.fixed_bytes += on_card_bytes(L.router);
    std::vector<uint64_t>& row = s.expert_bytes.emplace_back();
    for (size_t e = 0; e < L.ffn_gate.size(); ++e)
      row.push_back(on_card_bytes(L.ffn_gate[e]) + on_card_bytes(L.ffn_up[e]) + on_card_bytes(L.ffn_down[e]));
  }
  return s;
}

DevicePlacement place_experts(const PlacementSizes& sizes, uint64_t budget, uint64_t workspace_bytes, uint64_t kv_bytes,
                              const std::vector<std::vector<int64_t>>& counts) {
  DevicePlacement p;
  p.budget = budget;
  p.workspace_bytes = workspace_bytes;
  p.kv_bytes = kv_bytes;
  p.fixed_bytes = sizes.fixed_bytes;
  const uint64_t base = p.fixed_bytes + workspace_bytes + kv_bytes;
  if (base > budget)
    fail("the device memory budget of ", gib(budget), " (--gpu-memory) cannot hold the model's attention, norms, ",
         "router, embeddings and output head (", gib(p.fixed_bytes), ") with the workspace (", gib(workspace_bytes),
         ") and the KV cache (", gib(kv_bytes), "): ", gib(base), " are needed before any expert");

  // Preference order of the (layer, expert) pairs: most routed first; among equals expert 0 of every
  // layer, then expert 1 of every layer, ...
  struct Pair {
    size_t layer, expert;
    int64_t count;
  };
  std::vector<Pair> order;
  const size_t n_layer = sizes.expert_bytes.size();
  const size_t ne = n_layer ? sizes.expert_bytes[0].size() : 0;
  for (size_t e = 0; e < ne; ++e)
    for (size_t l = 0; l < n_layer; ++l)
      order.push_back({l, e, l < counts.size() && e < counts[l].size() ? counts[l][e] : 0});
  std::stable_sort(order.begin(), order.end(), [](const Pair& a, const Pair& b) { return a.count > b.count; });

  p.on_card.assign(n_layer, std::vector<uint8_t>(ne, 0));
  uint64_t left = budget - base;
  for (const Pair& q : order) {
    const uint64_t bytes = sizes.expert_bytes[q.layer][q.expert];
    ++p.experts_total;
    if (bytes <= left) {
      left -= bytes;
      p.on_card[q.layer][q.expert] = 1;
      p.expert_bytes_on_card += bytes;
      ++p.experts_on_card;
    } else {
      p.expert_bytes_on_cpu += bytes;
    }
  }
  return p;
}

void VulkanBackend::upload_expert(int64_t l, int64_t e) {
  Impl::Layer& D = im_->layers[static_cast<size_t>(l)];
  const LayerWeights& W = w_.layers[static_cast<size_t>(l)];
  const auto i = static_cast<size_t>(e);
  const std::string at = cat(" of expert ", e, " of layer ", l);
  D.gate[i] = im_->upload(W.ffn_gate[i], "ffn_gate" + at);
  D.up[i] = im_->upload(W.ffn_up[i], "ffn_up" + at);
  D.down[i] = im_->upload(W.ffn_down[i], "ffn_down" + at);
}

void VulkanBackend::place(const std::vector<std::vector<uint8_t>>& on_card) {
  if (on_card.size() != static_cast<size_t>(hp_.n_layer)) fail("a placement needs one row per layer (", hp_.n_layer, ")");
  DevicePlacement p = placement_;
  p.on_card = on_card;
  p.expert_bytes_on_card = p.expert_bytes_on_cpu = 0;
  p.experts_on_card = p.experts_total = 0;
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    const LayerWeights& W = w_.layers[static_cast<size_t>(l)];
    if (on_card[static_cast<size_t>(l)].size() != W.ffn_gate.size())
      fail("a placement of layer ", l, " needs ", W.ffn_gate.size(), " experts");
    for (size_t e = 0; e < W.ffn_gate.size(); ++e) {
      const uint64_t bytes = im_->sizes.expert_bytes[static_cast<size_t>(l)][e];
      ++p.experts_total;
      if (on_card[static_cast<size_t>(l)][e]) {
        p.expert_bytes_on_card += bytes;
        ++p.experts_on_card;
      } else {
        p.expert_bytes_on_cpu += bytes;
      }
    }
  }
  const uint64_t need = p.fixed_bytes + p.workspace_bytes + p.kv_bytes + p.expert_bytes_on_card;
  if (need > budget_)
    fail("that placement needs ", gib(need), " of device memory, more than the budget of ", gib(budget_), " (--gpu-memory)");
  // Free first, then upload, so the card never holds both sets.
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    Impl::Layer& D = im_->layers[static_cast<size_t>(l)];
    for (size_t e = 0; e < D.gate.size(); ++e)
      if (!on_card[static_cast<size_t>(l)][e] && D.gate[e].buf.valid()) D.gate[e] = {}, D.up[e] = {}, D.down[e] = {};
  }
  for (int64_t l = 0; l < hp_.n_layer; ++l) {
    Impl::Layer& D = im_->layers[static_cast<size_t>(l)];
    for (size_t e = 0; e < D.gate.size(); ++e)
      if (on_card[static_cast<size_t>(l)][e] && !D.gate[e].buf.valid()) upload_expert(l, static_cast<int64_t>(e));
  }
  placement_ = std::move(p);
  im_->cpu_experts_any = placement_.experts_on_card < placement_.experts_total;
}

bool VulkanBackend::rebalance() {
  if (!im_->cpu_experts_any) return false;  // everything is on the card already
  DevicePlacement p = place_experts(im_->sizes, budget_, im_->ws.total, placement_.kv_bytes, expert_token_counts());
  if (p.on_card == placement_.on_card) return false;
  place(p.on_card);
  return true;
}

// The experts of layer l that are on the CPU, over this step's slots: the FFN input rows (rb_xn) and the
// slot plan (offsets, slot tokens) came back with the last submission; each expert's down-projected rows
// go into the upload buffer at its slot rows, and a copy into the device's slot rows is recorded.
void VulkanBackend::cpu_experts(int64_t l, int64_t n) {
  Impl& I = *im_;
  const LayerWeights& W = w_.layers[static_cast<size_t>(l)];
  const Impl::Layer& D = I.layers[static_cast<size_t>(l)];
  const int64_t E = hp_.n_embd, F = hp_.n_ff, ne = std::max<int64_t>(hp_.n_expert, 1);
  const int64_t max_cols = std::max(E, F);
  I.see({&I.rb_xn, &I.rb_slots, &I.rb_offsets});
  const auto* xn = static_cast<const float*>(I.rb_xn.mapped());
  auto* out = static_cast<float*>(I.up_down.mapped());
  const auto grow_f = [](std::vector<float>& v, int64_t count) {
    if (v.size() < static_cast<size_t>(count)) v.resize(static_cast<size_t>(count));
  };
  grow_f(I.h_gather, n * E);
  grow_f(I.h_gate, n * F);
  grow_f(I.h_up, n * F);
  grow_f(I.h_deq, static_cast<int64_t>(pool_->size()) * max_cols);
  const size_t act_bytes = static_cast<size_t>(n) * kernels::max_activation_row_bytes(max_cols);
  if (I.h_act.size() < act_bytes) I.h_act.resize(act_bytes);

  // A dense model's FFN is expert 0 over every token, its slots the tokens themselves.
  const auto* offs = static_cast<const uint32_t*>(I.rb_offsets.mapped()) + l * (ne + 1);
  const auto* slot_tokens = static_cast<const int32_t*>(I.rb_slots.mapped());
  for (int64_t e = 0; e < ne; ++e) {
    if (D.gate[static_cast<size_t>(e)].buf.valid()) continue;
    const int64_t first = hp_.is_moe() ? offs[e] : 0;
    const int64_t m = hp_.is_moe() ? static_cast<int64_t>(offs[e + 1]) - first : n;
    if (m == 0) continue;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t tok = hp_.is_moe() ? slot_tokens[first + i] : i;
      std::memcpy(I.h_gather.data() + i * E, xn + tok * E, static_cast<size_t>(E) * sizeof(float));
    }
    const TensorView& gate = W.ffn_gate[static_cast<size_t>(e)];
    const TensorView& up = W.ffn_up[static_cast<size_t>(e)];
    const TensorView& down = W.ffn_down[static_cast<size_t>(e)];
    kernels::Activations a = kernels::prepare_activations(I.h_gather.data(), m, E, gate.type, precision_, I.h_act.data(),
                                                          I.h_act.size(), *pool_);
    kernels::matmul(gate, a, I.h_gate.data(), precision_, *pool_, I.h_deq.data());
    if (!kernels::activations_fit(a, up.type, precision_))
      a = kernels::prepare_activations(I.h_gather.data(), m, E, up.type, precision_, I.h_act.data(), I.h_act.size(), *pool_);
    kernels::matmul(up, a, I.h_up.data(), precision_, *pool_, I.h_deq.data());
    kernels::silu_mul(I.h_gate.data(), I.h_up.data(), m * F);
    kernels::Activations ad = kernels::prepare_activations(I.h_gate.data(), m, F, down.type, precision_, I.h_act.data(),
                                                           I.h_act.size(), *pool_);
    kernels::matmul(down, ad, out + first * E, precision_, *pool_, I.h_deq.data());
    const uint64_t at = static_cast<uint64_t>(first * E) * 4, bytes = static_cast<uint64_t>(m * E) * 4;
    I.stream->copy(vk::BufferRef(I.up_down, at, bytes), vk::BufferRef(*I.bufs[Impl::kDown], at, bytes));
  }
}

}  // namespace moe::model
