// device_plan.cpp: the Vulkan placement of a planned model (see device_plan.h).
#include "plan/device_plan.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "util/error.h"

namespace moe::plan {

namespace {

// "blk.12.ffn_up_exps.weight" -> layer 12, stacked; "blk.3.ffn_down.5.weight" -> layer 3, expert 5;
// "blk.0.ffn_gate.weight" -> layer 0, dense. False for tensors that are not FFN matrices.
struct FfnTensor {
  int64_t layer = -1, expert = -1;
  bool stacked = false;
};
bool ffn_tensor(const std::string& name, FfnTensor& t) {
  if (name.rfind("blk.", 0) != 0) return false;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return false;
  const std::string rest = name.substr(dot + 1);
  bool ffn = false;
  for (const char* p : {"ffn_gate", "ffn_up", "ffn_down"})
    if (rest.rfind(p, 0) == 0 && rest.rfind("ffn_gate_inp", 0) != 0) ffn = true;
  if (!ffn) return false;
  t.layer = std::strtoll(name.c_str() + 4, nullptr, 10);
  t.stacked = rest.find("_exps.") != std::string::npos;
  const size_t a = rest.find('.');
  const size_t b = rest.find('.', a + 1);
  if (!t.stacked && b != std::string::npos && rest.substr(b) == ".weight" && b > a + 1)
    t.expert = std::strtoll(rest.c_str() + a + 1, nullptr, 10);
  return true;
}

}  // namespace

model::PlacementSizes placement_sizes_of(const model::HParams& hp, const WeightsLayout& weights) {
  model::PlacementSizes s;
  const int64_t ne = std::max<int64_t>(hp.n_expert, 1);
  s.expert_bytes.assign(static_cast<size_t>(hp.n_layer), std::vector<uint64_t>(static_cast<size_t>(ne), 0));
  for (const PlannedTensor& t : weights.tensors) {
    FfnTensor f;
    if (!ffn_tensor(t.name, f) || f.layer < 0 || f.layer >= hp.n_layer) {
      s.fixed_bytes += model::device_tensor_bytes(t.bytes);
      continue;
    }
    auto& row = s.expert_bytes[static_cast<size_t>(f.layer)];
    if (f.stacked) {
      for (auto& b : row) b += model::device_tensor_bytes(t.bytes / static_cast<uint64_t>(ne));
    } else {
      const int64_t e = f.expert < 0 ? 0 : f.expert;
      if (e >= ne) fail("tensor ", t.name, ": expert ", e, " of ", ne);
      row[static_cast<size_t>(e)] += model::device_tensor_bytes(t.bytes);
    }
  }
  return s;
}

model::DevicePlacement plan_device(const model::HParams& hp, const WeightsLayout& weights, uint64_t budget,
                                   int64_t batch_tokens, uint64_t kv_bytes) {
  return model::place_experts(placement_sizes_of(hp, weights), budget,
                              model::VulkanBackend::device_workspace_bytes(hp, batch_tokens), kv_bytes, {});
}

void fit_pool_to_device(PoolPlan& pool, const model::HParams& hp, const WeightsLayout& weights, uint64_t budget,
                        int64_t batch_tokens, uint64_t max_binding_bytes) {
  const model::PlacementSizes sizes = placement_sizes_of(hp, weights);
  uint64_t experts = 0;
  for (const auto& layer : sizes.expert_bytes)
    for (uint64_t b : layer) experts += b;
  const uint64_t workspace = model::VulkanBackend::device_workspace_bytes(hp, batch_tokens);
  const uint64_t must = sizes.fixed_bytes + workspace;
  const uint64_t one_seq = static_cast<uint64_t>(pool.seq_blocks) * pool.block_bytes;
  if (budget < must || budget - must < one_seq)
    fail("--device: the KV cache of one sequence of ", pool.max_model_len, " tokens (", format_bytes(one_seq),
         ") does not fit the device budget of ", format_bytes(budget), " beside the weights that stay on the card and the "
         "workspace (", format_bytes(must), "); give a smaller -c or a larger --gpu-memory");
  if (max_binding_bytes && one_seq > max_binding_bytes)
    fail("--device: the KV cache of one sequence of ", pool.max_model_len, " tokens (", format_bytes(one_seq),
         ") is more than one storage-buffer binding of the device spans (", format_bytes(max_binding_bytes),
         "); give a smaller -c");
  const uint64_t after_all = budget - must > experts ? budget - must - experts : 0;
  uint64_t room = std::max(after_all, one_seq);
  const char* why = after_all < one_seq ? "device memory (--gpu-memory): one sequence beside the experts"
                                        : "device memory (--gpu-memory)";
  if (max_binding_bytes && room > max_binding_bytes) {
    room = max_binding_bytes;
    why = "one storage-buffer binding of the device";
  }
  if (pool.kv_bytes <= room) return;
  pool.kv_blocks = static_cast<int64_t>(room / pool.block_bytes);
  pool.kv_bytes = static_cast<uint64_t>(pool.kv_blocks) * pool.block_bytes;
  pool.limited_by = why;
}

}  // namespace moe::plan
