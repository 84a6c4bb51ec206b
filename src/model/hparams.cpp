// hparams.cpp: reads and validates the `llama.*` hyperparameters of a GGUF model. Every number here
// later sizes an allocation or an index, so each is checked for sign, an upper bound and consistency
// with the others before anything trusts it; errors name the metadata key.
#include "model/hparams.h"

#include <cmath>

#include "gguf/gguf.h"
#include "util/error.h"

namespace moe::model {
namespace {

// Upper bounds far above any real model (Mixtral 8x22B: 56 layers, n_embd 6144, n_ff 16384) but low
// enough that products of them cannot overflow 64 bits.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxEmbd = 1 << 17;
constexpr int64_t kMaxFf = 1 << 20;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxCtx = int64_t{1} << 24;

int64_t require_int(const gguf::File& f, const std::string& key) {
  auto v = f.get_int(key);
  if (!v) fail("missing metadata key '", key, "'");
  return *v;
}

int64_t optional_int(const gguf::File& f, const std::string& key, int64_t fallback) {
  auto v = f.get_int(key);
  return v ? *v : fallback;
}

void check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) fail("metadata '", key, "' = ", v, " is outside [", lo, ", ", hi, "]");
}

}  // namespace

HParams HParams::from_gguf(const gguf::File& f) {
  HParams hp;
  auto arch = f.get_string("general.architecture");
  if (!arch) fail("missing metadata key 'general.architecture'");
  if (*arch != "llama")
    fail("general.architecture is '", *arch, "'; only 'llama' (Llama, Mistral, Mixtral) is supported");
  hp.arch = *arch;
  const std::string p = "llama.";

  hp.n_ctx_train = require_int(f, p + "context_length");
  hp.n_embd = require_int(f, p + "embedding_length");
  hp.n_layer = require_int(f, p + "block_count");
  hp.n_ff = require_int(f, p + "feed_forward_length");
  hp.n_head = require_int(f, p + "attention.head_count");
  check_range(p + "context_length", hp.n_ctx_train, 1, kMaxCtx);
  check_range(p + "embedding_length", hp.n_embd, 1, kMaxEmbd);
  check_range(p + "block_count", hp.n_layer, 1, kMaxLayers);
  check_range(p + "feed_forward_length", hp.n_ff, 1, kMaxFf);
  check_range(p + "attention.head_count", hp.n_head, 1, kMaxHeads);

  hp.n_head_kv = optional_int(f, p + "attention.head_count_kv", hp.n_head);
  check_range(p + "attention.head_count_kv", hp.n_head_kv, 1, hp.n_head);
  if (hp.n_head % hp.n_head_kv != 0)
    fail("llama.attention.head_count (", hp.n_head, ") is not a multiple of llama.attention.head_count_kv (",
         hp.n_head_kv, ")");

  // The head size is n_embd / n_head unless the file says otherwise (key_length, as in Mistral Nemo).
  if (auto kl = f.get_int(p + "attention.key_length")) {
    hp.head_dim = *kl;
    check_range(p + "attention.key_length", hp.head_dim, 1, kMaxHeadDim);
    if (auto vl = f.get_int(p + "attention.value_length"); vl && *vl != hp.head_dim)
      fail("llama.attention.value_length (", *vl, ") differs from llama.attention.key_length (", hp.head_dim,
           "); only equal K and V head sizes are supported");
  } else {
    if (hp.n_embd % hp.n_head != 0)
      fail("llama.embedding_length (", hp.n_embd, ") is not a multiple of llama.attention.head_count (", hp.n_head,
           ")");
    hp.head_dim = hp.n_embd / hp.n_head;
    check_range("head size (embedding_length / head_count)", hp.head_dim, 1, kMaxHeadDim);
  }

  hp.n_rot = optional_int(f, p + "rope.dimension_count", hp.head_dim);
  check_range(p + "rope.dimension_count", hp.n_rot, 0, hp.head_dim);
  if (hp.n_rot % 2 != 0) fail("llama.rope.dimension_count (", hp.n_rot, ") must be even");

  hp.n_expert = optional_int(f, p + "expert_count", 0);
  hp.n_expert_used = optional_int(f, p + "expert_used_count", 0);
  check_range(p + "expert_count", hp.n_expert, 0, kMaxExperts);
  if (hp.n_expert > 0) {
    check_range(p + "expert_used_count", hp.n_expert_used, 1, hp.n_expert);
  } else if (hp.n_expert_used != 0) {
    fail("llama.expert_used_count is ", hp.n_expert_used, " but llama.expert_count is 0 (a dense model)");
  }

  if (auto base = f.get_float(p + "rope.freq_base")) {
    if (!std::isfinite(*base) || *base <= 1.0 || *base > 1e12)
      fail("llama.rope.freq_base = ", *base, " is not a finite number in (1, 1e12]");
    hp.rope_freq_base = static_cast<float>(*base);
  }
  if (auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon")) {
    if (!std::isfinite(*eps) || *eps <= 0.0 || *eps > 1.0)
      fail("llama.attention.layer_norm_rms_epsilon = ", *eps, " is not in (0, 1]");
    hp.rms_norm_eps = static_cast<float>(*eps);
  }

  hp.rope_rotate_half = f.get_bool("moe.rope.rotate_half").value_or(false);

  // Vocabulary: the tokenizer's token list when present, else the embedding's row count.
  if (const gguf::Value* tokens = f.find("tokenizer.ggml.tokens")) {
    if (tokens->type != gguf::ValueType::ARRAY) fail("metadata 'tokenizer.ggml.tokens' is not an array");
    hp.n_vocab = static_cast<int64_t>(tokens->array.size());
    check_range("tokenizer.ggml.tokens (length)", hp.n_vocab, 1, kMaxVocab);
  } else if (const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight"); emb && emb->n_dims == 2) {
    hp.n_vocab = emb->ne[1];
    check_range("token_embd.weight ne[1] (vocabulary)", hp.n_vocab, 1, kMaxVocab);
  } else {
    fail("cannot tell the vocabulary size: neither 'tokenizer.ggml.tokens' nor a 2-D 'token_embd.weight'");
  }
  return hp;
}

}  // namespace moe::model
