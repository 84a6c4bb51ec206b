// weights.cpp: binds the model's tensors to views into the GGUF file, checking each one's presence,
// shape and type, so that the forward pass can index them without further checks. The tensors through
// which one bad value reaches every token — the norms, the routers and the output matrix — are also
// scanned for NaN and infinity (quant/finite.h: value by value for plain types, only the block scales
// for block formats); they are a small part of the file (on Mixtral 8x7B Q4_K_M: 113 MB of 28 GB, about 0.05 s warm);
// the experts and attention matrices are not scanned.
#include "model/weights.h"

#include <array>
#include <cstdint>

#include "gguf/gguf.h"
#include "quant/finite.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::model {
namespace {

std::string shape_str(const std::array<int64_t, 4>& ne, uint32_t n_dims) {
  std::string s = "[";
  for (uint32_t i = 0; i < n_dims; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

class Binder {
 public:
  Binder(const gguf::File& f, std::shared_ptr<const void> owner) : f_(f), owner_(std::move(owner)) {}

  const gguf::TensorInfo* find(const std::string& name) const { return f_.find_tensor(name); }

  // A tensor with ggml shape `ne` (ne0 first, trailing ones may be omitted by the file).
  WeightView bind(const std::string& name, std::array<int64_t, 3> ne) const {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) fail("tensor '", name, "' is missing");
    return in_map(view(*t, ne));
  }

  // A view of the file's memory map, kept alive by the owner.
  WeightView in_map(const TensorView& v) const { return WeightView(v, Residency::Mmap, owner_); }

  TensorView view(const gguf::TensorInfo& t, std::array<int64_t, 3> ne) const {
    std::array<int64_t, 4> want{ne[0], ne[1], ne[2], 1};
    if (t.ne != want)
      fail("tensor '", t.name, "' has shape ", shape_str(t.ne, t.n_dims), ", expected ",
           shape_str(want, ne[2] != 1 ? 3 : (ne[1] != 1 ? 2 : 1)));
    if (!quant::is_supported(t.type)) fail("tensor '", t.name, "' has type ", type_name(t.type), ", which is not supported");
    auto rb = row_bytes(t.type, static_cast<uint64_t>(ne[0]));
    if (!rb) fail("tensor '", t.name, "': rows of ", ne[0], " values do not fit ", type_name(t.type), " blocks");
    TensorView v;
    v.type = t.type;
    v.data = t.data;
    v.cols = ne[0];
    v.rows = ne[1];
    v.count = ne[2];
    v.row_bytes = *rb;
    v.matrix_bytes = *rb * static_cast<uint64_t>(ne[1]);
    if (v.matrix_bytes * static_cast<uint64_t>(ne[2]) != t.n_bytes)
      fail("tensor '", t.name, "' holds ", t.n_bytes, " bytes, expected ", v.matrix_bytes * static_cast<uint64_t>(ne[2]));
    return v;
  }

  // Refuses a tensor holding NaN or infinity, naming it and where.
  static void check_finite(const std::string& name, const WeightView& v) {
    if (!v.data) return;
    const uint64_t n = static_cast<uint64_t>(v.cols) * static_cast<uint64_t>(v.rows) * static_cast<uint64_t>(v.count);
    if (auto at = quant::first_non_finite(v.type, v.data, n)) {
      const uint64_t row = *at / static_cast<uint64_t>(v.cols), col = *at % static_cast<uint64_t>(v.cols);
      if (type_traits(v.type)->block_size == 1)
        fail("tensor '", name, "' holds a NaN or infinite value at row ", row, ", column ", col,
             "; the file is corrupt");
      fail("tensor '", name, "' holds a NaN or infinite block scale (", type_name(v.type), " block at row ", row,
           ", column ", col, "); the file is corrupt");
    }
  }

  // A norm weight: n floats, used directly as float*.
  WeightView bind_norm(const std::string& name, int64_t n) const {
    WeightView v = bind(name, {n, 1, 1});
    if (v.type != GgmlType::F32) fail("tensor '", name, "' has type ", type_name(v.type), "; norm weights must be F32");
    if (reinterpret_cast<uintptr_t>(v.data) % alignof(float) != 0) fail("tensor '", name, "' is not 4-byte aligned");
    check_finite(name, v);
    return v;
  }

 private:
  const gguf::File& f_;
  std::shared_ptr<const void> owner_;
};

}  // namespace

const char* expert_layout_name(ExpertLayout layout) {
  switch (layout) {
    case ExpertLayout::Dense: return "dense";
    case ExpertLayout::Stacked: return "stacked";
    case ExpertLayout::PerExpert: return "per-expert";
  }
  return "?";
}

Weights Weights::from_gguf(const gguf::File& f, const HParams& hp, std::shared_ptr<const void> owner) {
  Binder b(f, std::move(owner));
  Weights w;
  const int64_t E = hp.n_embd, V = hp.n_vocab, F = hp.n_ff;
  const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_head_kv * hp.head_dim;

  w.token_embd = b.bind("token_embd.weight", {E, V, 1});
  w.output_norm = b.bind_norm("output_norm.weight", E);
  if (b.find("output.weight")) {
    w.output = b.bind("output.weight", {E, V, 1});
  } else {
    w.output = w.token_embd;
    w.output_tied = true;
  }
  Binder::check_finite(w.output_tied ? "token_embd.weight" : "output.weight", w.output);

  if (hp.n_expert > 0) {
    bool stacked = b.find("blk.0.ffn_gate_exps.weight") != nullptr;
    w.expert_layout = stacked ? ExpertLayout::Stacked : ExpertLayout::PerExpert;
  }

  w.layers.resize(static_cast<size_t>(hp.n_layer));
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    LayerWeights& L = w.layers[static_cast<size_t>(l)];
    const std::string p = cat("blk.", l, ".");
    L.attn_norm = b.bind_norm(p + "attn_norm.weight", E);
    L.wq = b.bind(p + "attn_q.weight", {E, q_dim, 1});
    L.wk = b.bind(p + "attn_k.weight", {E, kv_dim, 1});
    L.wv = b.bind(p + "attn_v.weight", {E, kv_dim, 1});
    L.wo = b.bind(p + "attn_output.weight", {q_dim, E, 1});
    L.ffn_norm = b.bind_norm(p + "ffn_norm.weight", E);

    switch (w.expert_layout) {
      case ExpertLayout::Dense:
        L.ffn_gate.push_back(b.bind(p + "ffn_gate.weight", {E, F, 1}));
        L.ffn_up.push_back(b.bind(p + "ffn_up.weight", {E, F, 1}));
        L.ffn_down.push_back(b.bind(p + "ffn_down.weight", {F, E, 1}));
        break;
      case ExpertLayout::Stacked: {
        L.router = b.bind(p + "ffn_gate_inp.weight", {E, hp.n_expert, 1});
        Binder::check_finite(p + "ffn_gate_inp.weight", L.router);
        WeightView gate = b.bind(p + "ffn_gate_exps.weight", {E, F, hp.n_expert});
        WeightView up = b.bind(p + "ffn_up_exps.weight", {E, F, hp.n_expert});
        WeightView down = b.bind(p + "ffn_down_exps.weight", {F, E, hp.n_expert});
        for (int64_t e = 0; e < hp.n_expert; ++e) {
          L.ffn_gate.push_back(b.in_map(gate.matrix(e)));
          L.ffn_up.push_back(b.in_map(up.matrix(e)));
          L.ffn_down.push_back(b.in_map(down.matrix(e)));
        }
        break;
      }
      case ExpertLayout::PerExpert:
        L.router = b.bind(p + "ffn_gate_inp.weight", {E, hp.n_expert, 1});
        Binder::check_finite(p + "ffn_gate_inp.weight", L.router);
        for (int64_t e = 0; e < hp.n_expert; ++e) {
          L.ffn_gate.push_back(b.bind(cat(p, "ffn_gate.", e, ".weight"), {E, F, 1}));
          L.ffn_up.push_back(b.bind(cat(p, "ffn_up.", e, ".weight"), {E, F, 1}));
          L.ffn_down.push_back(b.bind(cat(p, "ffn_down.", e, ".weight"), {F, E, 1}));
        }
        break;
    }
  }
  return w;
}

}  // namespace moe::model
