// hparams.h: the hyperparameters of a Llama-architecture model with optional experts (Mixtral), read
// from GGUF `llama.*` metadata. A dense model is the one-expert case: n_expert = 0 (no router).
#pragma once
#include <cstdint>
#include <string>

namespace moe::gguf { class File; }

namespace moe::model {

struct HParams {
  std::string arch = "llama";
  int64_t n_vocab = 0;          // from tokenizer.ggml.tokens (or the embedding's ne[1])
  int64_t n_ctx_train = 0;      // llama.context_length
  int64_t n_embd = 0;           // llama.embedding_length
  int64_t n_layer = 0;          // llama.block_count
  int64_t n_ff = 0;             // llama.feed_forward_length (per expert)
  int64_t n_head = 0;           // llama.attention.head_count
  int64_t n_head_kv = 0;        // llama.attention.head_count_kv (default n_head)
  int64_t head_dim = 0;         // n_embd / n_head (llama.attention.key_length if present)
  int64_t n_rot = 0;            // llama.rope.dimension_count (default head_dim)
  int64_t n_expert = 0;         // llama.expert_count (0: dense)
  int64_t n_expert_used = 0;    // llama.expert_used_count
  float rope_freq_base = 10000.0f;   // llama.rope.freq_base
  float rms_norm_eps = 1e-5f;        // llama.attention.layer_norm_rms_epsilon
  // moe.rope.rotate_half: Q/K rows in Hugging Face order, so RoPE rotates the pairs (i, i + n_rot/2)
  // (NeoX style) instead of the adjacent pairs of GGUF's permuted rows. Set by the HF loader only.
  bool rope_rotate_half = false;

  bool is_moe() const { return n_expert > 0; }
  // Reads and validates (positive, bounded, consistent; throws moe::Error naming the key).
  static HParams from_gguf(const gguf::File& file);
};

}  // namespace moe::model
