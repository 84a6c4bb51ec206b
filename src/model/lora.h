// lora.h: LoRA adapters as a run-time side path. A PEFT adapter adds ΔW = scale · B·A to some
// projections of the base (q/k/v/o, the experts' w1/w2/w3); instead of merging ΔW into the weights
// (which would need a private copy of every targeted matrix per adapter), the forward pass computes
// y += scale · (x·Aᵀ)·Bᵀ beside the base projection, for the tokens of the sequences that use the
// adapter. So one mapped base serves many adapters at once, and a batch may mix sequences of different
// adapters and the base (cpu_backend.cpp groups the rows by adapter).
//
// Two levels:
//  - LoraWeights: one adapter bound to one base geometry (its A/B matrices in their stored dtype, F32,
//    F16 or BF16, in one host buffer; B's rows of q/k already in the base's row order). bind_lora()
//    builds it from named tensors (the PEFT loader, engine/lora_loader.h, hands it the safetensors
//    tensors; tests build them in memory) and is where every check lives: names, targets, rank, shapes,
//    dtypes, NaN/Inf, each failure naming the tensor.
//  - LoraAdapter: what a sequence runs with: one or more LoraWeights, each with its scale (`--lora A
//    --lora B:0.5` stacks two), and a process-unique id that keys the prefix cache.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "model/hparams.h"
#include "model/weights.h"
#include "util/thread_pool.h"

namespace moe::model {

// One targeted projection: y[out] += scale · B·(A·x). Absent when a.data is null.
struct LoraPair {
  TensorView a;  // [r][in]  (PEFT lora_A.weight)
  TensorView b;  // [out][r] (PEFT lora_B.weight), rows in the base's order (see bind_lora)
  bool present() const { return a.data != nullptr; }
};

struct LoraLayer {
  LoraPair q, k, v, o;                   // attention: q [QD][E], k/v [KD][E], o [E][QD] as ΔW shapes
  std::vector<LoraPair> gate, up, down;  // per expert (w1, w3, w2; gate_proj/up_proj/down_proj when
                                         // dense): [n_expert or 1] or empty when not targeted
};

// The adapter_config.json fields that change the arithmetic.
struct LoraConfig {
  int64_t rank = 0;                         // r
  double alpha = 0;                         // lora_alpha
  bool rslora = false;                      // use_rslora: scale alpha/√r instead of alpha/r
  std::vector<std::string> target_modules;  // as listed (q_proj, k_proj, v_proj, o_proj, w1, w2, w3, ...)
  double scale() const;                     // alpha / r, or alpha / √r with rslora
};

// A tensor handed to bind_lora: PEFT name, dtype (F32, F16 or BF16), shape [rows][cols], bytes.
struct LoraTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

// The geometry an adapter was bound to, checked again when a batch uses it (an adapter of another base
// is refused, not run).
struct LoraGeometry {
  int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_expert = 0, q_dim = 0, kv_dim = 0;
  bool rotate_half = false;  // the base's Q/K rows are in HF order (HParams::rope_rotate_half)
  static LoraGeometry of(const HParams& hp);
  bool operator==(const LoraGeometry&) const = default;
};

struct LoraWeights {
  std::string source;          // where it came from (a directory), for messages
  LoraConfig config;
  float scale = 0;             // config.scale()
  LoraGeometry geometry;
  std::vector<LoraLayer> layers;  // n_layer
  uint64_t bytes = 0;          // of the A and B data held
  std::shared_ptr<const uint8_t> storage;  // owns every pair's bytes
};

// How the base stores Q/K rows. PEFT adapters are trained on Hugging Face checkpoints, whose Q/K rows are
// in rotate-half order (pairs i, i+hd/2 of each head); GGUF `llama` files permute them so that RoPE
// rotates adjacent pairs (2i, 2i+1). For a GGUF base the rows of B of q_proj/k_proj are permuted the
// same way at bind time (A, which acts on the input side, is unchanged); a Hugging Face checkpoint
// loaded as it is (HParams::rope_rotate_half) takes them as they are.
enum class QkRowOrder { Interleaved /* GGUF */, RotateHalf /* HF */ };
inline QkRowOrder qk_row_order(const HParams& hp) {
  return hp.rope_rotate_half ? QkRowOrder::RotateHalf : QkRowOrder::Interleaved;
}

// Builds an adapter for a base of geometry `hp` from its tensors. Names are PEFT's:
//   base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
//   base_model.model.model.layers.N.block_sparse_moe.experts.E.{w1,w2,w3}.lora_{A,B}.weight
//   base_model.model.model.layers.N.mlp.{gate,up,down}_proj.lora_{A,B}.weight   (a dense base)
// Throws moe::Error naming the tensor (or field) for: rank < 1, a target module that is not one of those
// projections, a tensor of another name (or outside the layers/experts), an A without its B, a shape
// that does not fit the base or the rank, a dtype other than F32/F16/BF16, a NaN or infinity. The bytes
// are copied (the caller's may go away). With check_only, everything but the data is checked (no NaN
// scan, nothing copied, no views bound; `bytes` is what loading would hold): a server checks every
// adapter it lists at start this way and loads each on first use.
std::shared_ptr<const LoraWeights> bind_lora(const HParams& hp, const LoraConfig& config,
                                             std::span<const LoraTensor> tensors, QkRowOrder base_order,
                                             const std::string& source, bool check_only = false);

// The GGUF row of Hugging Face row `r` of a Q (n_heads = n_head) or K (n_head_kv) projection: within
// each head of head_dim rows, HF row s·hd/2 + i becomes 2i + s.
int64_t gguf_qk_row(int64_t hf_row, int64_t head_dim);

class LoraAdapter {
 public:
  struct Part {
    std::shared_ptr<const LoraWeights> weights;
    float scale = 1;  // weights->scale times the user's factor (--lora PATH:FACTOR)
  };
  // A new adapter with a fresh id. Throws moe::Error when there are no parts, parts disagree in
  // geometry, or a scale is not finite.
  LoraAdapter(std::string name, std::vector<Part> parts);

  uint64_t id() const { return id_; }           // unique in the process, never 0 (0 keys the base)
  const std::string& name() const { return name_; }
  const std::vector<Part>& parts() const { return parts_; }
  const LoraGeometry& geometry() const { return parts_.front().weights->geometry; }
  uint64_t bytes() const;                       // of the distinct weights held

 private:
  uint64_t id_;
  std::string name_;
  std::vector<Part> parts_;
};

// The side path on n rows: y[t][o] += scale · Σ_j B[o][j] · Σ_c A[j][c] · x[t][c], computed as
// h = x·Aᵀ (n × r, the project's float matmul kernels), h *= scale, y += h·Bᵀ. `h` holds n·r floats and
// `out` n·B.rows floats; `deq` pool.size() · max(A.cols, r) floats (Exact precision only). Row t of the
// result depends on row t of x only, so a token's result is the same whatever shares its batch.
void lora_apply(const LoraPair& p, float scale, const float* x, int64_t n, float* y, kernels::Precision prec,
                ThreadPool& pool, float* h, float* out, float* deq);

// The scalar definition (dequantized A and B, double accumulation): tests' reference. y += result.
void lora_apply_reference(const LoraPair& p, double scale, const float* x, int64_t n, double* y);

}  // namespace moe::model
