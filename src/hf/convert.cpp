// convert.cpp: the HF view as llama.cpp's GGUF (see convert.h).
#include "hf/convert.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "hf/hf.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::hf {
namespace {

// How one output tensor is made from the view's tensors.
struct Source {
  std::vector<const gguf::TensorInfo*> parts;  // one, or the experts to stack
  int64_t permute_heads = 0;                   // > 0: Q/K rows to permute, this many heads
  std::string name;                            // the GGUF name
  std::vector<int64_t> ne;                     // the output's ggml shape
  bool edited = false;                         // goes through TensorEdit::apply (written as out_type)
  GgmlType out_type = GgmlType::F32;
};

// The stored bytes of F32/F16/BF16 values as floats.
void to_f32(GgmlType type, const uint8_t* src, std::span<float> dst, const std::string& name) {
  for (size_t i = 0; i < dst.size(); ++i) {
    uint16_t h = 0;
    switch (type) {
      case GgmlType::F32: std::memcpy(&dst[i], src + 4 * i, 4); break;
      case GgmlType::F16: std::memcpy(&h, src + 2 * i, 2); dst[i] = fp16_to_fp32(h); break;
      case GgmlType::BF16: std::memcpy(&h, src + 2 * i, 2); dst[i] = bf16_to_fp32(h); break;
      default: fail(name, ": only F32, F16 or BF16 tensors can be edited (merged), not ", type_name(type));
    }
  }
}

// Sort key: non-layer tensors first (by name), then layer by layer, each layer's by name.
std::pair<int64_t, std::string> order_key(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return {-1, name};
  const size_t dot = name.find('.', 4);
  return {std::stoll(name.substr(4, dot - 4)), name.substr(dot + 1)};
}

}  // namespace

gguf::Writer gguf_writer_for(const gguf::File& view, gguf::Writer::Producer& producer, const TensorEdit* edit) {
  const auto n_expert = view.get_int("llama.expert_count").value_or(0);
  const auto n_head = view.get_int("llama.attention.head_count").value_or(0);
  const auto n_head_kv = view.get_int("llama.attention.head_count_kv").value_or(n_head);
  const bool hf_order = view.get_bool(kRotateHalfKey).value_or(false);

  std::map<std::string, Source> out;
  for (const gguf::TensorInfo& t : view.tensors()) {
    std::string name = t.name;
    // blk.N.ffn_gate.E.weight -> blk.N.ffn_gate_exps.weight, part E.
    if (n_expert > 0 && name.rfind("blk.", 0) == 0) {
      for (const char* kind : {"ffn_gate.", "ffn_up.", "ffn_down."}) {
        const size_t at = name.find(kind);
        if (at == std::string::npos) continue;
        const size_t e_begin = at + std::strlen(kind), e_end = name.find('.', e_begin);
        const int64_t e = std::stoll(name.substr(e_begin, e_end - e_begin));
        const std::string stacked = name.substr(0, at) + std::string(kind, std::strlen(kind) - 1) + "_exps.weight";
        Source& s = out[stacked];
        if (s.parts.size() <= static_cast<size_t>(e)) s.parts.resize(static_cast<size_t>(e) + 1, nullptr);
        s.parts[static_cast<size_t>(e)] = &t;
        name.clear();
        break;
      }
      if (name.empty()) continue;
    }
    Source& s = out[name];
    s.parts = {&t};
    if (hf_order && name.ends_with(".attn_q.weight")) s.permute_heads = n_head;
    if (hf_order && name.ends_with(".attn_k.weight")) s.permute_heads = n_head_kv;
  }

  std::vector<std::pair<std::string, Source>> ordered(out.begin(), out.end());
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return order_key(a.first) < order_key(b.first); });

  gguf::Writer w;
  GgmlType common = GgmlType::F32;
  bool first_matrix = true;
  for (const auto& [key, value] : view.metadata())
    if (key.rfind("moe.", 0) != 0 || key == kEosIdsKey) w.set(key, value);  // the EOS list still holds
  auto sources = std::make_shared<std::vector<Source>>();
  for (auto& [name, s] : ordered) {
    for (size_t e = 0; e < s.parts.size(); ++e)
      if (!s.parts[e]) fail(view.name(), ": expert ", e, " of ", name, " is missing");
    const gguf::TensorInfo& t0 = *s.parts[0];
    for (const auto* p : s.parts)
      if (p->type != t0.type || p->ne != t0.ne) fail(view.name(), ": the experts of ", name, " differ in type or shape");
    std::vector<int64_t> ne(t0.ne.begin(), t0.ne.begin() + t0.n_dims);
    if (s.parts.size() > 1 || name.find("_exps.") != std::string::npos) ne.push_back(static_cast<int64_t>(s.parts.size()));
    if (s.permute_heads > 0 && (t0.ne[1] % s.permute_heads != 0 || (t0.ne[1] / s.permute_heads) % 2 != 0))
      fail(view.name(), ": ", name, " rows (", t0.ne[1], ") do not split into ", s.permute_heads, " heads of even size");
    s.name = name;
    s.ne = ne;
    s.edited = edit && edit->edits(name);
    s.out_type = s.edited ? (t0.type == GgmlType::F32 || edit->f32 ? GgmlType::F32 : GgmlType::F16) : t0.type;
    w.add_tensor(name, s.out_type, ne);
    sources->push_back(s);
    if (t0.n_dims == 2 && name.find("ffn_gate_inp") == std::string::npos) {
      if (first_matrix) common = s.out_type;
      else if (common != s.out_type) common = GgmlType::F32;
      first_matrix = false;
    }
  }
  // general.file_type as llama.cpp writes it for an unquantized conversion: 0 F32, 1 F16, 32 BF16.
  w.set("general.quantization_version", gguf::Value::uint32(2));
  w.set("general.file_type", gguf::Value::uint32(common == GgmlType::F16 ? 1 : common == GgmlType::BF16 ? 32 : 0));

  auto copy = [](const Source& s, std::span<uint8_t> dst) {
    uint8_t* at = dst.data();
    for (const gguf::TensorInfo* p : s.parts) {
      if (s.permute_heads > 0) {
        const int64_t rows = p->ne[1], hd = rows / s.permute_heads;
        const uint64_t rb = p->n_bytes / static_cast<uint64_t>(rows);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t h = r / hd, j = r % hd, hf_row = h * hd + (j % 2) * (hd / 2) + j / 2;
          std::memcpy(at + static_cast<uint64_t>(r) * rb, p->data + static_cast<uint64_t>(hf_row) * rb, rb);
        }
      } else {
        std::memcpy(at, p->data, p->n_bytes);
      }
      at += p->n_bytes;
    }
  };
  producer = [sources, copy, edit](size_t index, std::span<uint8_t> dst) {
    const Source& s = (*sources)[index];
    if (!s.edited) return copy(s, dst);
    // As stored (rows permuted), to floats, edited, to the output type.
    uint64_t stored = 0;
    for (const gguf::TensorInfo* p : s.parts) stored += p->n_bytes;
    std::vector<uint8_t> raw(stored);
    copy(s, raw);
    const size_t n = dst.size() / (s.out_type == GgmlType::F32 ? 4 : 2);
    std::vector<float> values(n);
    to_f32(s.parts[0]->type, raw.data(), values, s.name);
    edit->apply(s.name, s.ne, values);
    for (size_t i = 0; i < n; ++i) {
      if (s.out_type == GgmlType::F32) {
        std::memcpy(dst.data() + 4 * i, &values[i], 4);
      } else {
        const uint16_t h = fp32_to_fp16(values[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
    }
  };
  return w;
}

}  // namespace moe::hf
