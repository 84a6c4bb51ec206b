// weights.h: the tensors of a Llama/Mixtral model as a plain struct of views into the GGUF memory map
// (nothing is copied). Shapes are written [rows][cols] in C order: a matrix [n_ff][n_embd] has n_ff
// rows of n_embd values (ggml ne = {n_embd, n_ff}), and y = W x maps n_embd values to n_ff.
//
// Experts are stored in GGUF either stacked (blk.N.ffn_gate_exps.weight, ne {n_embd, n_ff, n_expert})
// or one tensor per expert (blk.N.ffn_gate.E.weight, files from December 2023); both load into the same
// per-expert views. A dense model has one "expert" and no router.
#pragma once
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "model/hparams.h"

namespace moe::gguf { class File; }

namespace moe::model {

using kernels::TensorView;

struct LayerWeights {
  TensorView attn_norm;               // [n_embd], F32
  TensorView wq;                      // [n_head * head_dim][n_embd]
  TensorView wk;                      // [n_head_kv * head_dim][n_embd]
  TensorView wv;                      // [n_head_kv * head_dim][n_embd]
  TensorView wo;                      // [n_embd][n_head * head_dim]
  TensorView ffn_norm;                // [n_embd], F32
  TensorView router;                  // [n_expert][n_embd] (ffn_gate_inp); data null when dense
  std::vector<TensorView> ffn_gate;   // n_expert (1 when dense) x [n_ff][n_embd]
  std::vector<TensorView> ffn_up;     // n_expert (1 when dense) x [n_ff][n_embd]
  std::vector<TensorView> ffn_down;   // n_expert (1 when dense) x [n_embd][n_ff]
};

enum class ExpertLayout { Dense, Stacked, PerExpert };

struct Weights {
  TensorView token_embd;              // [n_vocab][n_embd]
  TensorView output_norm;             // [n_embd], F32
  TensorView output;                  // [n_vocab][n_embd]; the same view as token_embd when tied
  bool output_tied = false;           // no output.weight in the file: the embedding is reused
  ExpertLayout expert_layout = ExpertLayout::Dense;
  std::vector<LayerWeights> layers;   // n_layer

  // Finds and checks every tensor (presence, shape against hp, a supported type); throws moe::Error
  // naming the tensor.
  static Weights from_gguf(const gguf::File& file, const HParams& hp);
};

const char* expert_layout_name(ExpertLayout layout);

}  // namespace moe::model
