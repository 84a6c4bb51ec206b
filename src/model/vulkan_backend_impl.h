// vulkan_backend_impl.h: the device state of a VulkanBackend (vulkan_backend.h), shared by the forward
// pass (vulkan_backend.cpp) and the placement (vulkan_placement.cpp). Internal to src/model.
#pragma once
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/vulkan_backend.h"

namespace moe::model {

struct VulkanBackend::Impl {
  // A weight matrix on the card: its own buffer (so an expert can be freed alone), the GGUF bytes as is.
  struct DevMatrix {
    vk::Buffer buf;
    GgmlType type = GgmlType::F32;
    int64_t rows = 0, cols = 0;
    uint64_t bytes = 0;
    vk::DeviceMatrix mat() const;  // made on use: the BufferRef points at `buf` where it lives now
  };
  struct Layer {
    vk::Buffer attn_norm, ffn_norm;         // [n_embd] f32
    DevMatrix wq, wk, wv, wo, router;       // router: MoE only
    std::vector<DevMatrix> gate, up, down;  // [n_expert]; buf invalid where the expert is on the CPU
  };

  // The workspace: one device buffer per activation, in this order (layout() sizes them).
  enum Slot {
    kIds, kPos, kTableStart, kOutRows,       // int32 [B]
    kX, kXn,                                 // [B][n_embd] residual stream, its normed copy
    kQ, kK, kV, kAtt, kProj,                 // [B][q_dim], [B][kv_dim] x2, [B][q_dim], [B][n_embd]
    kRouter, kTopkId, kTopkW, kOffsets,      // [B][n_expert], [B][k] x2, uint32 [n_expert + 1]
    kSlotTokens, kTokenSlots,                // int32 [B*k] each
    kGate, kUp, kDown,                       // [B*k][n_ff] x2, [B*k][n_embd] (one row per slot)
    kOutNormed, kLogits,                     // [B][n_embd], [B][n_vocab] (output rows only)
  };
  struct Workspace {
    std::vector<std::pair<const char*, uint64_t>> sizes;  // by Slot
    uint64_t total = 0;
  };
  static Workspace layout(const HParams& hp, int64_t B);

  DevMatrix upload(const TensorView& v, const std::string& what);
  vk::Buffer upload_vector(const TensorView& v);
  vk::BufferRef ref(Slot s, uint64_t bytes = 0) const { return vk::BufferRef(*bufs[s], 0, bytes); }
  vk::PagedKv paged(const kv::Cache& cache, int64_t layer) const;
  // Makes the device's writes to these readback buffers visible through mapped() (the memory may be
  // host-cached without being coherent: Context::download invalidates the whole mapping).
  void see(std::initializer_list<const vk::Buffer*> readbacks);

  std::unique_ptr<vk::Context> ctx;
  std::unique_ptr<vk::Stream> stream;
  Workspace ws;
  PlacementSizes sizes;  // of this model's tensors on the card
  std::vector<std::unique_ptr<vk::Buffer>> bufs;  // by Slot

  DevMatrix token_embd, output;  // output unused when tied to the embedding
  vk::Buffer output_norm;
  std::vector<Layer> layers;
  bool cpu_experts_any = false;

  // The KV mirror and the cache it mirrors.
  vk::Buffer kv;
  const kv::Cache* kv_cache = nullptr;
  const uint8_t* kv_data = nullptr;
  int64_t kv_blocks = 0;
  vk::Buffer tables, up_tables;  // the step's block tables (grown on demand)

  // Staging. up_inputs: ids, positions, table starts, output rows (int32 [4][B]); up_down: the CPU
  // experts' outputs [B*k][n_embd]. Readbacks: logits [B][n_vocab], hidden [B][n_embd], routing
  // (ids int32 then weights f32, each [n_layer][B][k]), offsets uint32 [n_layer][n_expert + 1], K/V rows
  // f32 [n_layer][2][B][kv_dim], the FFN input [B][n_embd] and slot tokens int32 [B*k] (split placement).
  vk::Buffer up_inputs, up_down;
  vk::Buffer rb_logits, rb_hidden, rb_route, rb_offsets, rb_kv, rb_xn, rb_slots;

  // Per-step host bookkeeping (kept to reuse capacity).
  std::vector<std::pair<int32_t, int32_t>> seq_start;  // (sequence, start of its table)
  std::vector<int32_t> table_words;
  // CPU experts' scratch: gathered rows [B][n_embd], gate/up [B][n_ff], quantized activations, and
  // per-thread dequantized rows (Exact).
  std::vector<float> h_gather, h_gate, h_up, h_deq;
  std::vector<uint8_t> h_act;
};

}  // namespace moe::model
