// quant_mix.cpp: the per-tensor type rules behind each quantization name (see quant_mix.h).
//
// The rules restate, as facts about the file format's ecosystem, what llama.cpp's quantizer chooses;
// they were checked tensor by tensor against the reference files in ../shared/models/tiny-mixtral
// (tests/quantize_e2e_test.cpp compares our choices with those files' types for every mix).
#include "plan/quant_mix.h"

#include <cctype>
#include <charconv>

#include "util/error.h"

namespace moe::plan {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

int64_t block_size(GgmlType t) {
  const TypeTraits* tr = type_traits(t);
  return tr ? tr->block_size : 1;
}

// The 32-element type with the same bits per weight as a 256-element K-quant, for rows that are not a
// multiple of 256. (llama.cpp uses IQ4_NL for Q2_K/Q3_K; Q4_0 has its size and is readable everywhere.)
GgmlType fallback_type(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K: return GgmlType::Q4_0;
    case GgmlType::Q4_K: return GgmlType::Q5_0;
    case GgmlType::Q5_K: return GgmlType::Q5_1;
    case GgmlType::Q6_K: return GgmlType::Q8_0;
    default: return GgmlType::F16;
  }
}

}  // namespace

const std::vector<QuantMix>& quant_mixes() {
  // general.file_type values are llama.cpp's llama_ftype enum (LLAMA_FTYPE_MOSTLY_*); the reference
  // files carry exactly these.
  static const std::vector<QuantMix> kMixes = {
      {"Q2_K", GgmlType::Q2_K, 10, true, "2-bit K-quant; Q3_K down projections, Q5_K attention output (MoE)"},
      {"Q3_K_S", GgmlType::Q3_K, 11, true, "3-bit K-quant; more bits only in the head and attention"},
      {"Q3_K_M", GgmlType::Q3_K, 12, true, "3-bit K-quant; Q4_K/Q5_K down projections and attention"},
      {"Q3_K_L", GgmlType::Q3_K, 13, true, "3-bit K-quant; Q5_K down projections and attention V"},
      {"Q4_0", GgmlType::Q4_0, 2, true, "4-bit legacy blocks of 32 (4.5 bits/weight)"},
      {"Q4_K_S", GgmlType::Q4_K, 14, true, "4-bit K-quant; Q5_K in the first layers' down projections"},
      {"Q4_K_M", GgmlType::Q4_K, 15, true, "4-bit K-quant; Q6_K down projections in half the layers"},
      {"Q4_1", GgmlType::Q4_1, 3, true, "4-bit legacy blocks of 32 with offsets (5 bits/weight)"},
      {"Q5_0", GgmlType::Q5_0, 8, true, "5-bit legacy blocks of 32 (5.5 bits/weight)"},
      {"Q5_K_S", GgmlType::Q5_K, 16, true, "5-bit K-quant; Q6_K head, 8-bit attention K/V (MoE)"},
      {"Q5_K_M", GgmlType::Q5_K, 17, true, "5-bit K-quant; Q6_K down projections in half the layers"},
      {"Q5_1", GgmlType::Q5_1, 9, true, "5-bit legacy blocks of 32 with offsets (6 bits/weight)"},
      {"Q6_K", GgmlType::Q6_K, 18, true, "6-bit K-quant (6.56 bits/weight)"},
      {"Q8_0", GgmlType::Q8_0, 7, true, "8-bit blocks of 32 (8.5 bits/weight)"},
      {"BF16", GgmlType::BF16, 32, false, "bfloat16 matrices, F32 norms and router"},
      {"F16", GgmlType::F16, 1, false, "float16 matrices, F32 norms and router"},
      {"F32", GgmlType::F32, 0, false, "float32 throughout"},
  };
  return kMixes;
}

std::string mix_names() {
  std::string s;
  for (const auto& m : quant_mixes()) s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

const QuantMix& find_mix(std::string_view name) {
  for (const auto& m : quant_mixes())
    if (iequals(m.name, name)) return m;
  fail("unknown quantization type '", name, "' (known: ", mix_names(), ")");
}

const QuantMix* mix_for_file_type(uint64_t file_type) {
  for (const auto& m : quant_mixes())
    if (m.file_type == file_type) return &m;
  return nullptr;
}

const char* role_name(TensorRole role) {
  switch (role) {
    case TensorRole::TokenEmbd: return "token_embd";
    case TensorRole::Output: return "output";
    case TensorRole::Norm: return "norm";
    case TensorRole::Router: return "router";
    case TensorRole::AttnQ: return "attn_q";
    case TensorRole::AttnK: return "attn_k";
    case TensorRole::AttnV: return "attn_v";
    case TensorRole::AttnOutput: return "attn_output";
    case TensorRole::FfnGate: return "ffn_gate";
    case TensorRole::FfnUp: return "ffn_up";
    case TensorRole::FfnDown: return "ffn_down";
    case TensorRole::Other: return "other";
  }
  return "other";
}

TensorKind classify_tensor(std::string_view name) {
  TensorKind k;
  if (name == "token_embd.weight") return {TensorRole::TokenEmbd, -1};
  if (name == "output.weight") return {TensorRole::Output, -1};
  if (name == "output_norm.weight") return {TensorRole::Norm, -1};
  constexpr std::string_view kBlk = "blk.";
  if (name.substr(0, kBlk.size()) != kBlk) return k;
  std::string_view rest = name.substr(kBlk.size());
  int64_t layer = -1;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
  if (ec != std::errc() || p == rest.data() || p == rest.data() + rest.size() || *p != '.') return k;
  k.layer = layer;
  std::string_view t = rest.substr(static_cast<size_t>(p - rest.data()) + 1);  // "attn_q.weight", ...
  // The stem before any ".E" expert index and ".weight": "ffn_down.3.weight" -> "ffn_down".
  std::string_view stem = t.substr(0, t.find('.'));
  if (ends_with(stem, "_norm")) k.role = TensorRole::Norm;
  else if (stem == "ffn_gate_inp") k.role = TensorRole::Router;
  else if (stem == "attn_q") k.role = TensorRole::AttnQ;
  else if (stem == "attn_k") k.role = TensorRole::AttnK;
  else if (stem == "attn_v") k.role = TensorRole::AttnV;
  else if (stem == "attn_output") k.role = TensorRole::AttnOutput;
  else if (stem == "ffn_gate" || stem == "ffn_gate_exps") k.role = TensorRole::FfnGate;
  else if (stem == "ffn_up" || stem == "ffn_up_exps") k.role = TensorRole::FfnUp;
  else if (stem == "ffn_down" || stem == "ffn_down_exps") k.role = TensorRole::FfnDown;
  return k;
}

// The layers that get more bits in the _M mixes: the first and the last eighth, where errors matter
// most (the first layers feed everything; the last feed the head), and every third layer in between.
bool use_more_bits(int64_t layer, int64_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

TypeChoice choose_type(const QuantMix& mix, const model::HParams& hp, std::string_view name,
                       std::span<const int64_t> ne, bool has_output) {
  const TensorKind kind = classify_tensor(name);
  // Vectors (norms, biases) and the router stay F32: they are tiny, and the router's logits decide
  // which experts run, so their error would change the computation itself, not just perturb it.
  if (ne.size() < 2 || kind.role == TensorRole::Norm || kind.role == TensorRole::Router)
    return {GgmlType::F32, GgmlType::F32};

  GgmlType t = mix.base;
  if (mix.quantized) {
    const std::string& m = mix.name;
    const int64_t layer = kind.layer < 0 ? 0 : kind.layer;
    const int64_t n_layer = hp.n_layer;
    const bool eight_experts = hp.n_expert == 8;
    const int64_t n_gqa = hp.n_head_kv > 0 ? hp.n_head / hp.n_head_kv : 1;
    const bool is_head = kind.role == TensorRole::Output || (!has_output && kind.role == TensorRole::TokenEmbd);
    if (is_head) {
      // The output head maps every hidden state to the vocabulary: 6-bit at least (8-bit in Q8_0), and
      // Q8_0 when its rows do not fit the mix's block size.
      if (ne[0] % block_size(mix.base) != 0) t = GgmlType::Q8_0;
      else if (mix.base != GgmlType::Q8_0) t = GgmlType::Q6_K;
    } else {
      switch (kind.role) {
        case TensorRole::AttnV:
          // V carries the attended content into the residual; with grouped-query attention it is also
          // a small tensor (n_head_kv / n_head of Q), so bits there are cheap.
          if (m == "Q2_K") t = n_gqa >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K;
          else if (m == "Q3_K_M") t = layer < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
          else if (m == "Q3_K_L") t = GgmlType::Q5_K;
          else if ((m == "Q4_K_M" || m == "Q5_K_M") && use_more_bits(layer, n_layer)) t = GgmlType::Q6_K;
          else if (m == "Q4_K_S" && layer < 4) t = GgmlType::Q5_K;
          // With 8 experts the attention is ~3 % of the weights: 8-bit K and V cost little.
          if (eight_experts) t = GgmlType::Q8_0;
          break;
        case TensorRole::AttnK:
          if (eight_experts) t = GgmlType::Q8_0;
          break;
        case TensorRole::FfnDown:
          // The down projection writes straight into the residual stream; its error is the most
          // visible in perplexity, so the larger mixes spend their extra bits here.
          if (m == "Q2_K") t = GgmlType::Q3_K;
          else if (m == "Q3_K_M") t = layer < n_layer / 16 ? GgmlType::Q5_K : GgmlType::Q4_K;
          else if (m == "Q3_K_L") t = GgmlType::Q5_K;
          else if ((m == "Q4_K_M" || m == "Q5_K_M") && use_more_bits(layer, n_layer)) t = GgmlType::Q6_K;
          else if (m == "Q4_K_S" && layer < n_layer / 8) t = GgmlType::Q5_K;
          break;
        case TensorRole::AttnOutput:
          if (eight_experts) {
            if (m == "Q2_K" || m == "Q3_K_S" || m == "Q3_K_M" || m == "Q4_K_S" || m == "Q4_K_M") t = GgmlType::Q5_K;
          } else {
            if (m == "Q2_K") t = GgmlType::Q3_K;
            else if (m == "Q3_K_M") t = GgmlType::Q4_K;
            else if (m == "Q3_K_L") t = GgmlType::Q5_K;
          }
          break;
        default:
          break;  // attn_q, ffn_gate, ffn_up, token_embd and unknown matrices: the mix's base type
      }
    }
  }
  const GgmlType wanted = t;
  if (ne[0] % block_size(t) != 0) t = fallback_type(t);
  if (ne[0] % block_size(t) != 0) t = GgmlType::F16;
  return {t, wanted};
}

}  // namespace moe::plan
