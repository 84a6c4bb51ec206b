// geometry.cpp: model presets and the canonical GGUF tensor list (see geometry.h).
#include "plan/geometry.h"

#include <algorithm>
#include <cctype>

#include "util/checked.h"
#include "util/error.h"

namespace moe::plan {
namespace {

model::HParams make(int64_t n_vocab, int64_t n_ctx, int64_t n_embd, int64_t n_layer, int64_t n_ff, int64_t n_head,
                    int64_t n_head_kv, int64_t n_expert, int64_t n_expert_used, float rope_base) {
  model::HParams hp;
  hp.arch = "llama";
  hp.n_vocab = n_vocab;
  hp.n_ctx_train = n_ctx;
  hp.n_embd = n_embd;
  hp.n_layer = n_layer;
  hp.n_ff = n_ff;
  hp.n_head = n_head;
  hp.n_head_kv = n_head_kv;
  hp.head_dim = n_embd / n_head;
  hp.n_rot = hp.head_dim;
  hp.n_expert = n_expert;
  hp.n_expert_used = n_expert_used;
  hp.rope_freq_base = rope_base;
  hp.rms_norm_eps = 1e-5f;
  return hp;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

const std::vector<ShapePreset>& shape_presets() {
  // Published configurations (config.json of each model). Mixtral 8x22B's vocabulary is the v0.3
  // tokenizer's 32768; the 8x7B and Mistral 7B v0.1 use the 32000-piece SentencePiece model.
  static const std::vector<ShapePreset> kPresets = {
      {"mixtral-8x7b", "Mixtral 8x7B: 32 layers, 8 experts top-2, 46.7B params (12.9B active)",
       make(32000, 32768, 4096, 32, 14336, 32, 8, 8, 2, 1e6f)},
      {"mixtral-8x22b", "Mixtral 8x22B: 56 layers, 8 experts top-2, 141B params (39B active)",
       make(32768, 65536, 6144, 56, 16384, 48, 8, 8, 2, 1e6f)},
      {"mistral-7b", "Mistral 7B v0.1: dense, 32 layers, 7.2B params",
       make(32000, 32768, 4096, 32, 14336, 32, 8, 0, 0, 10000.0f)},
      {"llama-3-8b", "Llama 3 8B: dense, 32 layers, 128K vocabulary, 8.0B params",
       make(128256, 8192, 4096, 32, 14336, 32, 8, 0, 0, 500000.0f)},
      {"tiny-mixtral", "the test fixture's geometry: n_embd 256, 2 layers, 8 experts top-2, vocab 512",
       make(512, 4096, 256, 2, 256, 4, 2, 8, 2, 1e6f)},
      {"mini-mixtral", "a small Mixtral for quick checks: n_embd 512, 4 layers, 8 experts top-2, vocab 32000",
       make(32000, 4096, 512, 4, 1024, 8, 2, 8, 2, 1e6f)},
  };
  return kPresets;
}

std::string preset_names() {
  std::string s;
  for (const auto& p : shape_presets()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

const ShapePreset& find_preset(std::string_view name) {
  for (const auto& p : shape_presets())
    if (iequals(p.name, name)) return p;
  fail("unknown model preset '", name, "' (known: ", preset_names(), ")");
}

void validate_geometry(const model::HParams& hp) {
  auto positive = [](const char* what, int64_t v) {
    if (v <= 0) fail("model geometry: ", what, " = ", v, " must be positive");
  };
  positive("n_vocab", hp.n_vocab);
  positive("n_ctx_train", hp.n_ctx_train);
  positive("n_embd", hp.n_embd);
  positive("n_layer", hp.n_layer);
  positive("n_ff", hp.n_ff);
  positive("n_head", hp.n_head);
  positive("n_head_kv", hp.n_head_kv);
  positive("head_dim", hp.head_dim);
  if (hp.n_head % hp.n_head_kv != 0)
    fail("model geometry: n_head (", hp.n_head, ") is not a multiple of n_head_kv (", hp.n_head_kv, ")");
  if (hp.n_expert < 0 || (hp.n_expert == 0 && hp.n_expert_used != 0) ||
      (hp.n_expert > 0 && (hp.n_expert_used < 1 || hp.n_expert_used > hp.n_expert)))
    fail("model geometry: expert_used_count ", hp.n_expert_used, " does not fit expert_count ", hp.n_expert);
  // Every tensor's element count must fit comfortably in 64 bits (and in memory arithmetic downstream).
  const uint64_t q = checked_mul(static_cast<uint64_t>(hp.n_head), static_cast<uint64_t>(hp.head_dim), "q width");
  checked_mul(q, static_cast<uint64_t>(hp.n_embd), "attn_q elements");
  uint64_t ffn = checked_mul(static_cast<uint64_t>(hp.n_embd), static_cast<uint64_t>(hp.n_ff), "ffn elements");
  checked_mul(ffn, static_cast<uint64_t>(std::max<int64_t>(1, hp.n_expert)), "expert tensor elements");
  checked_mul(static_cast<uint64_t>(hp.n_embd), static_cast<uint64_t>(hp.n_vocab), "embedding elements");
}

model::HParams with_layers(const model::HParams& hp, int64_t n_layer) {
  if (n_layer < 1 || n_layer > hp.n_layer)
    fail("--layers ", n_layer, " is outside [1, ", hp.n_layer, "] for this shape");
  model::HParams out = hp;
  out.n_layer = n_layer;
  return out;
}

uint64_t TensorShape::n_elements() const {
  uint64_t n = 1;
  for (int64_t d : ne) n = checked_mul(n, static_cast<uint64_t>(d), "tensor elements");
  return n;
}

std::vector<TensorShape> tensor_list(const model::HParams& hp) {
  validate_geometry(hp);
  const int64_t e = hp.n_embd, q = hp.n_head * hp.head_dim, kv = hp.n_head_kv * hp.head_dim, f = hp.n_ff;
  std::vector<TensorShape> t;
  t.push_back({"token_embd.weight", {e, hp.n_vocab}});
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string b = cat("blk.", l, ".");
    t.push_back({b + "attn_norm.weight", {e}});
    t.push_back({b + "attn_q.weight", {e, q}});
    t.push_back({b + "attn_k.weight", {e, kv}});
    t.push_back({b + "attn_v.weight", {e, kv}});
    t.push_back({b + "attn_output.weight", {q, e}});
    t.push_back({b + "ffn_norm.weight", {e}});
    if (hp.is_moe()) {
      t.push_back({b + "ffn_gate_inp.weight", {e, hp.n_expert}});
      t.push_back({b + "ffn_gate_exps.weight", {e, f, hp.n_expert}});
      t.push_back({b + "ffn_up_exps.weight", {e, f, hp.n_expert}});
      t.push_back({b + "ffn_down_exps.weight", {f, e, hp.n_expert}});
    } else {
      t.push_back({b + "ffn_gate.weight", {e, f}});
      t.push_back({b + "ffn_up.weight", {e, f}});
      t.push_back({b + "ffn_down.weight", {f, e}});
    }
  }
  t.push_back({"output_norm.weight", {e}});
  t.push_back({"output.weight", {e, hp.n_vocab}});
  return t;
}

uint64_t parameter_count(const model::HParams& hp) {
  uint64_t n = 0;
  for (const auto& t : tensor_list(hp)) n = checked_add(n, t.n_elements(), "parameter count");
  return n;
}

uint64_t active_parameter_count(const model::HParams& hp) {
  if (!hp.is_moe()) return parameter_count(hp);
  const uint64_t all = parameter_count(hp);
  const uint64_t per_expert_layer = 3 * static_cast<uint64_t>(hp.n_embd) * static_cast<uint64_t>(hp.n_ff);
  const uint64_t idle = per_expert_layer * static_cast<uint64_t>(hp.n_expert - hp.n_expert_used) *
                        static_cast<uint64_t>(hp.n_layer);
  return all - idle;
}

}  // namespace moe::plan
