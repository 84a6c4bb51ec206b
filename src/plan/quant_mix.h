// quant_mix.h: which block type each tensor gets for a quantization name such as Q4_K_M.
//
// Users pick "Q4_K_M" expecting llama.cpp's meaning: the named type for the bulk of the weights and more
// bits where quantization error hurts most. One function decides it, for `moe quantize` (what it writes),
// `moe synth` (what it generates) and `moe plan` (what it would cost), so the planner's bytes are the
// quantizer's bytes.
//
// The mix is llama.cpp's current one (the rules its quantizer applied to build the reference files in
// ../shared/models/tiny-mixtral; each is restated in quant_mix.cpp with its reason). For Mixtral (8
// experts) that is the "today's MoE mix": attention K and V at Q8_0 (they are 1/4 the size of Q and
// small next to the experts: +0.1 GB for a large quality gain), attention output at Q5_K, the output head
// at Q6_K, and for the _M mixes Q6_K expert down projections in half the layers (the first and last
// eighth and every third in between). Mixtral 8x7B Q4_K_M comes to about 28.45 GB with it; the files of
// December 2023 (26.44 GB) left every down projection at Q4_K because the quantizer of the time did not
// recognise the per-expert tensor names. We follow the current mix because the down projections are the
// tensors most sensitive to quantization, because it is what users download today, and because it is
// what the reference files were made with.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "model/hparams.h"

namespace moe::plan {

// A quantization name as accepted by --type.
struct QuantMix {
  std::string name;       // "Q4_K_M"
  GgmlType base;          // the type of the bulk of the matrices
  uint32_t file_type;     // the value of general.file_type (llama.cpp's llama_ftype: MOSTLY_Q4_K_M = 15)
  bool quantized;         // false for F32, F16, BF16 (no per-tensor rules apply)
  std::string summary;    // one line for tables
};

// Every --type name, smallest first (at Mixtral geometry): Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_0, Q4_K_S,
// Q4_K_M, Q4_1, Q5_0, Q5_K_S, Q5_K_M, Q5_1, Q6_K, Q8_0, BF16, F16, F32.
const std::vector<QuantMix>& quant_mixes();
// Case-insensitive lookup; moe::Error listing the known names for an unknown one.
const QuantMix& find_mix(std::string_view name);
std::string mix_names();
// The mix whose general.file_type is `file_type` (to name what a file says it is), or nullptr.
const QuantMix* mix_for_file_type(uint64_t file_type);

// What a tensor is, from its GGUF name (blk.N.attn_v.weight, blk.N.ffn_down_exps.weight,
// blk.N.ffn_down.E.weight, ...).
enum class TensorRole {
  TokenEmbd, Output, Norm, Router, AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown, Other
};
struct TensorKind {
  TensorRole role = TensorRole::Other;
  int64_t layer = -1;  // N of blk.N., -1 for tensors outside the layers
};
TensorKind classify_tensor(std::string_view name);
const char* role_name(TensorRole role);

struct TypeChoice {
  GgmlType type;    // what is written
  GgmlType wanted;  // what the mix asked for; differs from type when rows do not fit its block size
  bool fell_back() const { return type != wanted; }
};

// The type for one tensor of a model with hyperparameters `hp` (n_layer, n_expert, n_head / n_head_kv
// matter). `ne` in ggml order. Norms, routers and other 1-D tensors stay F32 in every mix. A tensor whose
// row length (ne[0]) is not a multiple of the chosen type's block size falls back: Q2_K/Q3_K to Q4_0,
// Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0 (the same bits per weight in 32-element blocks), and to F16
// when even 32 does not divide the row. `has_output`: whether the model has its own output.weight (when
// it does not, the token embedding doubles as the output head and gets the head's type).
TypeChoice choose_type(const QuantMix& mix, const model::HParams& hp, std::string_view name,
                       std::span<const int64_t> ne, bool has_output = true);

// True when the chosen type at this layer is the mix's "more bits" choice (for explanations).
bool use_more_bits(int64_t layer, int64_t n_layer);

}  // namespace moe::plan
