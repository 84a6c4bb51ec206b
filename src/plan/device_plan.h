// device_plan.h: `moe plan --device vulkan[:N]`: what a model takes on a Vulkan device for a budget, with
// the backend's own placement rule (model/vulkan_backend.h: place_experts) applied to the sizes of a
// file layout, so the plan and the backend agree on which experts stay on the CPU.
#pragma once
#include <cstdint>

#include "model/hparams.h"
#include "model/vulkan_backend.h"
#include "plan/kv_pool.h"
#include "plan/layout.h"

namespace moe::plan {

// The on-card sizes of a layout's tensors: the experts' matrices (stacked *_exps tensors split evenly,
// per-expert ffn_*.E tensors, or a dense model's FFN as its one expert) and the rest.
model::PlacementSizes placement_sizes_of(const model::HParams& hp, const WeightsLayout& weights);

// The placement for `budget` bytes with the device workspace of batch_tokens and a KV mirror of kv_bytes.
// Throws moe::Error (the backend's) when the non-expert part does not fit.
model::DevicePlacement plan_device(const model::HParams& hp, const WeightsLayout& weights, uint64_t budget,
                                   int64_t batch_tokens, uint64_t kv_bytes);

// `moe serve --device vulkan`: the KV pool is mirrored on the card, so it must fit there beside the part
// of the model that never leaves it (embeddings, attention, norms, router, head) and the workspace. The
// experts come first — the KV mirror takes the room all experts would leave (each expert the mirror
// displaces would run on the CPU) — but never less than one sequence of max_model_len tokens, and never
// more than the host plan sized, nor than one storage-buffer binding spans (max_binding_bytes, the
// device's maxStorageBufferRange; 0: no bound): the mirror is bound whole. Shrinks `pool` (kv_blocks,
// kv_bytes, limited_by) when the device is the tighter bound; throws moe::Error naming --gpu-memory and
// -c when not even one sequence fits.
void fit_pool_to_device(PoolPlan& pool, const model::HParams& hp, const WeightsLayout& weights, uint64_t budget,
                        int64_t batch_tokens, uint64_t max_binding_bytes = 0);

}  // namespace moe::plan
