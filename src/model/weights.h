// weights.h: the tensors of a Llama/Mixtral model as a plain struct of named views (nothing is copied).
// Shapes are written [rows][cols] in C order: a matrix [n_ff][n_embd] has n_ff rows of n_embd values
// (ggml ne = {n_embd, n_ff}), and y = W x maps n_embd values to n_ff.
//
// A view says where its bytes live (Residency) and holds a handle that keeps that storage alive, so an
// expert store that pages experts into host buffers, or a GPU backend that uploads them, can hand out
// views of the same struct without the model code changing. Loaded from GGUF, every view points into
// the file's memory map and its owner is the mapped file.
//
// Experts are stored in GGUF either stacked (blk.N.ffn_gate_exps.weight, ne {n_embd, n_ff, n_expert})
// or one tensor per expert (blk.N.ffn_gate.E.weight, files from December 2023); both load into the same
// per-expert views. A dense model has one "expert" and no router.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/tensor.h"
#include "model/hparams.h"

namespace moe::gguf { class File; }

namespace moe::model {

using kernels::TensorView;

// Where a view's bytes are.
enum class Residency {
  Mmap,        // the model file's memory map (read-only, paged in by the OS)
  HostBuffer,  // memory the process allocated (a dequantized copy, an expert paged in from disk)
  Device,      // accelerator memory: the CPU backend cannot read these
};

// A weight tensor: the kernels' view (type, data, shape) plus where its bytes live and what keeps
// them there. Kernels take it as the TensorView it derives from.
struct WeightView : TensorView {
  Residency residency = Residency::Mmap;
  std::shared_ptr<const void> owner;  // the storage (mapped file, buffer); null: owned elsewhere

  WeightView() = default;
  WeightView(const TensorView& v, Residency r, std::shared_ptr<const void> o)
      : TensorView(v), residency(r), owner(std::move(o)) {}
};

struct LayerWeights {
  WeightView attn_norm;               // [n_embd], F32
  WeightView wq;                      // [n_head * head_dim][n_embd]
  WeightView wk;                      // [n_head_kv * head_dim][n_embd]
  WeightView wv;                      // [n_head_kv * head_dim][n_embd]
  WeightView wo;                      // [n_embd][n_head * head_dim]
  WeightView ffn_norm;                // [n_embd], F32
  WeightView router;                  // [n_expert][n_embd] (ffn_gate_inp); data null when dense
  std::vector<WeightView> ffn_gate;   // n_expert (1 when dense) x [n_ff][n_embd]
  std::vector<WeightView> ffn_up;     // n_expert (1 when dense) x [n_ff][n_embd]
  std::vector<WeightView> ffn_down;   // n_expert (1 when dense) x [n_embd][n_ff]
};

enum class ExpertLayout { Dense, Stacked, PerExpert };

struct Weights {
  WeightView token_embd;              // [n_vocab][n_embd]
  WeightView output_norm;             // [n_embd], F32
  WeightView output;                  // [n_vocab][n_embd]; the same view as token_embd when tied
  bool output_tied = false;           // no output.weight in the file: the embedding is reused
  ExpertLayout expert_layout = ExpertLayout::Dense;
  std::vector<LayerWeights> layers;   // n_layer

  // Finds and checks every tensor (presence, shape against hp, a supported type); throws moe::Error
  // naming the tensor. The views are Residency::Mmap with `owner` (the mapped file, or null when the
  // caller keeps the file alive itself) as their owner.
  static Weights from_gguf(const gguf::File& file, const HParams& hp, std::shared_ptr<const void> owner = nullptr);
};

const char* expert_layout_name(ExpertLayout layout);

}  // namespace moe::model
