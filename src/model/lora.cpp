// lora.cpp: binding a LoRA adapter's tensors to a base (every check, the Q/K row permutation) and the
// side path's arithmetic (see lora.h).
#include "model/lora.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "quant/quant.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::model {

double LoraConfig::scale() const {
  if (rank < 1) return 0;
  return rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

LoraGeometry LoraGeometry::of(const HParams& hp) {
  return LoraGeometry{hp.n_layer, hp.n_embd, hp.n_ff, std::max<int64_t>(hp.n_expert, 1), hp.n_head * hp.head_dim,
                      hp.n_head_kv * hp.head_dim, hp.rope_rotate_half};
}

int64_t gguf_qk_row(int64_t hf_row, int64_t head_dim) {
  const int64_t half = head_dim / 2, head = hf_row / head_dim, j = hf_row % head_dim;
  const int64_t s = j / half, i = j % half;
  return head * head_dim + 2 * i + s;
}

namespace {

enum class Module { Q, K, V, O, Gate, Up, Down };

const char* module_name(Module m, bool dense) {
  switch (m) {
    case Module::Q: return "q_proj";
    case Module::K: return "k_proj";
    case Module::V: return "v_proj";
    case Module::O: return "o_proj";
    case Module::Gate: return dense ? "gate_proj" : "w1";
    case Module::Up: return dense ? "up_proj" : "w3";
    case Module::Down: return dense ? "down_proj" : "w2";
  }
  return "?";
}

// The module a target_modules entry names, for this base (MoE: w1/w2/w3; dense: gate/up/down_proj).
// PEFT matches an entry against the end of a module's path, so "self_attn.q_proj" names q_proj too.
bool target_module(const std::string& entry, bool dense, Module& out) {
  const std::string last = entry.substr(entry.rfind('.') == std::string::npos ? 0 : entry.rfind('.') + 1);
  for (Module m : {Module::Q, Module::K, Module::V, Module::O, Module::Gate, Module::Up, Module::Down})
    if (last == module_name(m, dense)) {
      out = m;
      return true;
    }
  return false;
}

bool parse_index(std::string_view s, int64_t& v) {
  if (s.empty() || s.size() > 9) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

struct Key {
  int64_t layer = -1, expert = 0;
  Module module = Module::Q;
  bool is_a = true;
};

// Parses a PEFT tensor name; false when it is not a LoRA A/B of a projection this base has.
bool parse_key(std::string_view name, bool dense, Key& k) {
  constexpr std::string_view kPrefix = "base_model.model.model.layers.";
  if (!name.starts_with(kPrefix)) return false;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || !parse_index(name.substr(0, dot), k.layer)) return false;
  name.remove_prefix(dot + 1);
  if (name.ends_with(".lora_A.weight")) {
    k.is_a = true;
  } else if (name.ends_with(".lora_B.weight")) {
    k.is_a = false;
  } else {
    return false;
  }
  name.remove_suffix(std::string_view(".lora_A.weight").size());
  if (name.starts_with("self_attn.")) {
    name.remove_prefix(10);
    for (Module m : {Module::Q, Module::K, Module::V, Module::O})
      if (name == module_name(m, dense)) {
        k.module = m;
        return true;
      }
    return false;
  }
  if (dense) {
    if (!name.starts_with("mlp.")) return false;
    name.remove_prefix(4);
  } else {
    constexpr std::string_view kExperts = "block_sparse_moe.experts.";
    if (!name.starts_with(kExperts)) return false;
    name.remove_prefix(kExperts.size());
    const size_t d = name.find('.');
    if (d == std::string_view::npos || !parse_index(name.substr(0, d), k.expert)) return false;
    name.remove_prefix(d + 1);
  }
  for (Module m : {Module::Gate, Module::Up, Module::Down})
    if (name == module_name(m, dense)) {
      k.module = m;
      return true;
    }
  return false;
}

size_t elem_bytes(GgmlType t) { return t == GgmlType::F32 ? 4 : 2; }

float value_at(GgmlType t, const uint8_t* p, size_t i) {
  if (t == GgmlType::F32) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return t == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
}

}  // namespace

std::shared_ptr<const LoraWeights> bind_lora(const HParams& hp, const LoraConfig& config,
                                             std::span<const LoraTensor> tensors, QkRowOrder base_order,
                                             const std::string& source, bool check_only) {
  const bool dense = !hp.is_moe();
  auto where = [&] { return source.empty() ? std::string("the adapter") : cat("the adapter ", source); };
  if (config.rank < 1) fail(where(), ": rank r = ", config.rank, " (adapter_config.json 'r' must be at least 1)");
  if (!std::isfinite(config.alpha) || config.alpha == 0)
    fail(where(), ": lora_alpha = ", config.alpha, " (must be finite and non-zero)");
  std::set<Module> targeted;
  for (const std::string& t : config.target_modules) {
    Module m;
    if (!target_module(t, dense, m))
      fail(where(), ": unknown target module '", t, "' in adapter_config.json (this ", dense ? "dense" : "Mixtral",
           " base has q_proj, k_proj, v_proj, o_proj", dense ? ", gate_proj, up_proj, down_proj" : ", w1, w2, w3",
           ")");
    targeted.insert(m);
  }
  if (tensors.empty()) fail(where(), ": adapter_model.safetensors holds no tensors");

  auto out = std::make_shared<LoraWeights>();
  out->source = source;
  out->config = config;
  out->scale = static_cast<float>(config.scale());
  out->geometry = LoraGeometry::of(hp);
  out->geometry.rotate_half = base_order == QkRowOrder::RotateHalf;  // the order B's rows were bound in
  const LoraGeometry& g = out->geometry;
  const int64_t r = config.rank;
  if (r > (int64_t{1} << 20)) fail(where(), ": rank ", r, " is implausibly large");
  out->layers.resize(static_cast<size_t>(hp.n_layer));

  // First pass: names, shapes, dtypes, and where each tensor goes in the buffer.
  struct Placed {
    const LoraTensor* t;
    Key key;
    size_t offset;
  };
  std::vector<Placed> placed;
  std::set<std::string> seen;
  std::set<std::tuple<int64_t, int64_t, Module, bool>> have;  // (layer, expert, module, is A)
  size_t total = 0;
  for (const LoraTensor& t : tensors) {
    if (!seen.insert(t.name).second) fail(where(), ": tensor ", t.name, " appears twice");
    Key k;
    if (!parse_key(t.name, dense, k))
      fail(where(), ": tensor ", t.name, " is not a LoRA A/B matrix of a projection of this ",
           dense ? "dense" : "Mixtral", " base (q_proj, k_proj, v_proj, o_proj, ",
           dense ? "mlp.gate_proj/up_proj/down_proj" : "block_sparse_moe.experts.E.w1/w2/w3", ")");
    if (k.layer >= hp.n_layer) fail(where(), ": tensor ", t.name, " is for layer ", k.layer, " but the base has ", hp.n_layer);
    if (k.expert >= g.n_expert)
      fail(where(), ": tensor ", t.name, " is for expert ", k.expert, " but the base has ", g.n_expert);
    if (!config.target_modules.empty() && !targeted.count(k.module))
      fail(where(), ": tensor ", t.name, " is for ", module_name(k.module, dense),
           ", which adapter_config.json's target_modules does not list");
    if (t.type != GgmlType::F32 && t.type != GgmlType::F16 && t.type != GgmlType::BF16)
      fail(where(), ": tensor ", t.name, " has dtype ", type_name(t.type), " (F32, F16 or BF16 expected)");
    int64_t in = 0, outd = 0;
    switch (k.module) {
      case Module::Q: in = g.n_embd; outd = g.q_dim; break;
      case Module::K:
      case Module::V: in = g.n_embd; outd = g.kv_dim; break;
      case Module::O: in = g.q_dim; outd = g.n_embd; break;
      case Module::Gate:
      case Module::Up: in = g.n_embd; outd = g.n_ff; break;
      case Module::Down: in = g.n_ff; outd = g.n_embd; break;
    }
    const int64_t want_rows = k.is_a ? r : outd, want_cols = k.is_a ? in : r;
    if (t.shape.size() != 2 || t.shape[0] != want_rows || t.shape[1] != want_cols) {
      std::string got = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) got += cat(i ? ", " : "", t.shape[i]);
      fail(where(), ": tensor ", t.name, " has shape ", got, "] but rank ", r, " on this base needs [", want_rows, ", ",
           want_cols, "]");
    }
    const size_t bytes = static_cast<size_t>(want_rows * want_cols) * elem_bytes(t.type);
    if (t.bytes != bytes || (bytes > 0 && t.data == nullptr))
      fail(where(), ": tensor ", t.name, " has ", t.bytes, " bytes of data, its shape and dtype need ", bytes);
    placed.push_back({&t, k, total});
    have.insert({k.layer, k.expert, k.module, k.is_a});
    total += (bytes + 63) / 64 * 64;
    out->bytes += bytes;
  }
  // Every A has its B and every B its A.
  for (const Placed& p : placed)
    if (!have.count({p.key.layer, p.key.expert, p.key.module, !p.key.is_a})) {
      std::string other = p.t->name;
      other.replace(other.size() - 13, 6, p.key.is_a ? "lora_B" : "lora_A");
      fail(where(), ": tensor ", p.t->name, " has no partner ", other);
    }
  if (check_only) return out;

  // Second pass: copy (Q/K's B rows permuted for a GGUF base), scan for NaN/Inf, and bind the views.
  std::shared_ptr<uint8_t> buf(static_cast<uint8_t*>(std::aligned_alloc(64, std::max<size_t>(total, 64))), std::free);
  if (!buf) fail(where(), ": cannot allocate ", total, " bytes");
  for (const Placed& p : placed) {
    const LoraTensor& t = *p.t;
    const size_t n = t.bytes / elem_bytes(t.type);
    for (size_t i = 0; i < n; ++i) {
      const float v = value_at(t.type, t.data, i);
      if (!std::isfinite(v))
        fail(where(), ": tensor ", t.name, " holds ", std::isnan(v) ? "NaN" : "an infinity", " at row ",
             static_cast<int64_t>(i) / t.shape[1], ", column ", static_cast<int64_t>(i) % t.shape[1]);
    }
    uint8_t* dst = buf.get() + p.offset;
    const size_t row_bytes = static_cast<size_t>(t.shape[1]) * elem_bytes(t.type);
    const bool permute = !p.key.is_a && base_order == QkRowOrder::Interleaved &&
                         (p.key.module == Module::Q || p.key.module == Module::K);
    if (permute) {
      if (hp.head_dim % 2 != 0) fail(where(), ": head size ", hp.head_dim, " is odd, Q/K rows cannot be paired");
      for (int64_t row = 0; row < t.shape[0]; ++row)
        std::memcpy(dst + static_cast<size_t>(gguf_qk_row(row, hp.head_dim)) * row_bytes, t.data + row * row_bytes,
                    row_bytes);
    } else {
      std::memcpy(dst, t.data, t.bytes);
    }
    TensorView v;
    v.type = t.type;
    v.data = dst;
    v.rows = t.shape[0];
    v.cols = t.shape[1];
    v.row_bytes = row_bytes;
    v.matrix_bytes = t.bytes;
    LoraLayer& L = out->layers[static_cast<size_t>(p.key.layer)];
    LoraPair* pair = nullptr;
    auto expert_pair = [&](std::vector<LoraPair>& v) {
      v.resize(static_cast<size_t>(g.n_expert));
      return &v[static_cast<size_t>(p.key.expert)];
    };
    switch (p.key.module) {
      case Module::Q: pair = &L.q; break;
      case Module::K: pair = &L.k; break;
      case Module::V: pair = &L.v; break;
      case Module::O: pair = &L.o; break;
      case Module::Gate: pair = expert_pair(L.gate); break;
      case Module::Up: pair = expert_pair(L.up); break;
      case Module::Down: pair = expert_pair(L.down); break;
    }
    (p.key.is_a ? pair->a : pair->b) = v;
  }
  out->storage = std::move(buf);
  return out;
}

// ---------------------------------------------------------------------------------------------------

LoraAdapter::LoraAdapter(std::string name, std::vector<Part> parts) : name_(std::move(name)), parts_(std::move(parts)) {
  static std::atomic<uint64_t> next_id{1};
  if (parts_.empty()) fail("the LoRA adapter '", name_, "' has no parts");
  for (const Part& p : parts_) {
    if (!p.weights) fail("internal: a LoRA adapter part without weights");
    if (!(p.weights->geometry == parts_.front().weights->geometry))
      fail("the LoRA adapters ", parts_.front().weights->source, " and ", p.weights->source,
           " were bound to bases of different shapes");
    if (!std::isfinite(p.scale)) fail("the LoRA adapter ", p.weights->source, " has a scale that is not finite");
  }
  id_ = next_id.fetch_add(1);
}

uint64_t LoraAdapter::bytes() const {
  uint64_t b = 0;
  std::set<const LoraWeights*> seen;
  for (const Part& p : parts_)
    if (seen.insert(p.weights.get()).second) b += p.weights->bytes;
  return b;
}

void lora_apply(const LoraPair& p, float scale, const float* x, int64_t n, float* y, kernels::Precision prec,
                ThreadPool& pool, float* h, float* out, float* deq) {
  if (n == 0 || !p.present()) return;
  const int64_t r = p.a.rows, rows = p.b.rows;
  kernels::Activations ax = kernels::prepare_activations(x, n, p.a.cols, p.a.type, prec, nullptr, 0, pool);
  kernels::matmul(p.a, ax, h, prec, pool, deq);
  for (int64_t i = 0; i < n * r; ++i) h[i] *= scale;
  kernels::Activations ah = kernels::prepare_activations(h, n, r, p.b.type, prec, nullptr, 0, pool);
  kernels::matmul(p.b, ah, out, prec, pool, deq);
  for (int64_t i = 0; i < n * rows; ++i) y[i] += out[i];
}

void lora_apply_reference(const LoraPair& p, double scale, const float* x, int64_t n, double* y) {
  const int64_t r = p.a.rows, in = p.a.cols, rows = p.b.rows;
  std::vector<float> arow(static_cast<size_t>(in)), brow(static_cast<size_t>(r));
  std::vector<double> h(static_cast<size_t>(n * r));
  for (int64_t j = 0; j < r; ++j) {
    quant::dequantize_row(p.a.type, p.a.row(j), arow.data(), in);
    for (int64_t t = 0; t < n; ++t) {
      double s = 0;
      for (int64_t c = 0; c < in; ++c) s += static_cast<double>(arow[static_cast<size_t>(c)]) * x[t * in + c];
      h[static_cast<size_t>(t * r + j)] = s * scale;
    }
  }
  for (int64_t o = 0; o < rows; ++o) {
    quant::dequantize_row(p.b.type, p.b.row(o), brow.data(), r);
    for (int64_t t = 0; t < n; ++t) {
      double s = 0;
      for (int64_t j = 0; j < r; ++j) s += static_cast<double>(brow[static_cast<size_t>(j)]) * h[static_cast<size_t>(t * r + j)];
      y[t * rows + o] += s;
    }
  }
}

}  // namespace moe::model
