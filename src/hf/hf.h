// hf.h: Hugging Face checkpoint directories as a model source. A directory with config.json
// (MixtralForCausalLM, MistralForCausalLM or LlamaForCausalLM), model.safetensors or sharded
// safetensors with model.safetensors.index.json, tokenizer.model, tokenizer_config.json and
// generation_config.json is opened as a gguf::File view (gguf::File::assemble): the hyperparameters
// become `llama.*` metadata, the SentencePiece model `tokenizer.ggml.*`, the chat template
// `tokenizer.chat_template`, and every tensor is renamed to its GGUF name (blk.N.attn_q.weight, experts
// one tensor per expert: blk.N.ffn_gate.E.weight) with its data pointing into the safetensors memory
// maps. So the model layer, the planner, `moe info` and the tokenizer read an HF checkpoint through the
// one interface they already use, and F16/BF16/F32 weights are used in place.
//
// Exceptions to "in place": norm weights that are not F32 are widened to F32 (the kernels read norms as
// float; n_embd values per norm), and AWQ projections (see awq.h) are expanded losslessly to F32.
// Q/K rows stay in HF's rotate-half order: the view sets `moe.rope.rotate_half`, and the forward pass
// rotates the pairs (i, i + head_dim/2) instead (kernels::rope_apply_rotate_half), so no permuted copy
// is made (zero extra memory). `moe convert` permutes them back into GGUF order when it writes a file.
#pragma once
#include <cstdint>
#include <string>

#include "gguf/gguf.h"

namespace moe::hf {

// The metadata key that tells the model its Q/K rows are in HF order (never written to a GGUF file).
inline constexpr const char* kRotateHalfKey = "moe.rope.rotate_half";
// Every id of generation_config.json's `eos_token_id` when it lists several (int32 array; the engine
// stops on each). Kept by `moe convert` (GGUF itself has one EOS id).
inline constexpr const char* kEosIdsKey = "moe.tokenizer.eos_token_ids";
// The bytes of the view's load-time F32 copies (AWQ expansions, widened norms): resident memory, not
// mapped file pages (uint64; `moe plan` reports it; never written to a GGUF).
inline constexpr const char* kLoadCopyBytesKey = "moe.hf.load_copy_bytes";

// True when `path` is a directory holding a config.json.
bool is_checkpoint_dir(const std::string& path);

// Opens an HF checkpoint directory as a GGUF-shaped view (see above). Throws moe::Error naming the file
// and field for anything unsupported or malformed.
gguf::File open_checkpoint(const std::string& dir);

// The view's file_size() is the shards' bytes plus those load-time F32 buffers (what the model occupies).
// A model source path: an HF checkpoint directory, else a GGUF file (gguf::File::open).
gguf::File open_model_file(const std::string& path);

}  // namespace moe::hf
