// geometry.h: the shapes of well-known models, and the GGUF tensor list that a Llama/Mixtral model of a
// given geometry has. `moe plan --preset` sizes a model from these without a file, and `moe synth`
// writes exactly this list, so the planner's arithmetic and the synthesizer's files describe the same
// tensors (a test checks that the planned size of a synth file equals its size on disk).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"

namespace moe::plan {

struct ShapePreset {
  std::string name;         // "mixtral-8x7b"
  std::string description;  // one line for --help and tables
  model::HParams hp;
};

// All presets: mixtral-8x7b, mixtral-8x22b, mistral-7b, llama-3-8b, tiny-mixtral (the geometry of
// ../shared/models/tiny-mixtral) and mini-mixtral (86M parameters with the Mixtral vocabulary: big
// enough that weights dominate memory, small enough to synthesize in seconds for tests).
const std::vector<ShapePreset>& shape_presets();
// The preset with that name (case-insensitive); moe::Error listing the known names otherwise.
const ShapePreset& find_preset(std::string_view name);
// Comma-separated preset names (for help texts and error messages).
std::string preset_names();

// The same geometry with only the first n_layer layers (synth --layers); moe::Error if n_layer is not
// in [1, hp.n_layer].
model::HParams with_layers(const model::HParams& hp, int64_t n_layer);

struct TensorShape {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the row (contiguous) dimension
  uint64_t n_elements() const;
};

// The tensors of a Llama-architecture model in the order the converters write them: token_embd, then
// per layer attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, then either ffn_gate_inp and the
// stacked experts ffn_{gate,up,down}_exps ([n_embd, n_ff, n_expert] / [n_ff, n_embd, n_expert]) or the
// dense ffn_{gate,up,down}; then output_norm and output. Validates the geometry (moe::Error).
std::vector<TensorShape> tensor_list(const model::HParams& hp);

// Total parameters, and those used per token (top-k experts instead of all).
uint64_t parameter_count(const model::HParams& hp);
uint64_t active_parameter_count(const model::HParams& hp);

// Throws moe::Error when the geometry is inconsistent (non-positive sizes, heads not dividing, ...).
void validate_geometry(const model::HParams& hp);

}  // namespace moe::plan
