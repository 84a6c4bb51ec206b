// hf.cpp: opening a Hugging Face checkpoint directory as a gguf::File view (see hf.h). Each JSON file
// is read with a size bound and each field checked for type and range before use; the hyperparameters
// are then validated once more by model::HParams::from_gguf like any GGUF file's.
#include "hf/hf.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "hf/awq.h"
#include "safetensors/safetensors.h"
#include "tokenizer/sentencepiece_model.h"
#include "util/checked.h"
#include "util/fp16.h"
#include "util/mapped_file.h"

namespace moe::hf {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kMaxJsonBytes = 64u << 20;

json read_json(const fs::path& path, bool required) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (required) fail(path.string(), ": missing");
    return json();
  }
  const auto size = fs::file_size(path, ec);
  if (ec) fail("cannot read ", path.string(), ": ", ec.message());
  if (size > kMaxJsonBytes) fail(path.string(), ": ", size, " bytes is over the limit of ", kMaxJsonBytes);
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    json j = json::parse(ss.str());
    if (!j.is_object()) fail(path.string(), ": not a JSON object");
    return j;
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
}

// An integer field: absent → fallback (or an error when fallback is nullopt).
int64_t get_int(const json& j, const std::string& file, const char* key, std::optional<int64_t> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!fallback) fail(file, ": '", key, "' is missing");
    return *fallback;
  }
  if (!it->is_number_integer()) fail(file, ": '", key, "' is not an integer");
  return it->get<int64_t>();
}

double get_float(const json& j, const std::string& file, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(file, ": '", key, "' is not a number");
  return it->get<double>();
}

// A token id that may be given as an int or a list of ints (generation_config's eos_token_id).
std::optional<int64_t> first_id(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return std::nullopt;
}

struct Awq {
  bool on = false;
  int64_t group = 128;
};

struct Config {
  std::string arch;  // architectures[0]
  int64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ctx = 0, n_vocab = 0;
  int64_t n_expert = 0, n_expert_used = 0;
  double rope_theta = 10000.0, rms_eps = 1e-6;
  bool tied = false;
  std::optional<int64_t> bos, eos;
  Awq awq;
};

Config read_config(const fs::path& dir) {
  const fs::path p = dir / "config.json";
  const std::string name = p.string();
  const json j = read_json(p, true);
  Config c;
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    fail(name, ": 'architectures' is missing or not a list of names");
  c.arch = (*archs)[0].get<std::string>();
  if (c.arch != "MixtralForCausalLM" && c.arch != "MistralForCausalLM" && c.arch != "LlamaForCausalLM")
    fail(name, ": architecture '", c.arch, "' is not supported (MixtralForCausalLM, MistralForCausalLM, LlamaForCausalLM)");
  c.n_embd = get_int(j, name, "hidden_size", std::nullopt);
  c.n_ff = get_int(j, name, "intermediate_size", std::nullopt);
  c.n_layer = get_int(j, name, "num_hidden_layers", std::nullopt);
  c.n_head = get_int(j, name, "num_attention_heads", std::nullopt);
  c.n_head_kv = get_int(j, name, "num_key_value_heads", c.n_head);
  if (c.n_head < 1 || c.n_embd < 1) fail(name, ": hidden_size and num_attention_heads must be positive");
  c.head_dim = get_int(j, name, "head_dim", c.n_embd / c.n_head);
  c.n_ctx = get_int(j, name, "max_position_embeddings", 4096);
  c.n_vocab = get_int(j, name, "vocab_size", std::nullopt);
  if (c.arch == "MixtralForCausalLM") {
    c.n_expert = get_int(j, name, "num_local_experts", std::nullopt);
    c.n_expert_used = get_int(j, name, "num_experts_per_tok", std::nullopt);
  }
  c.rope_theta = get_float(j, name, "rope_theta", 10000.0);
  c.rms_eps = get_float(j, name, "rms_norm_eps", 1e-6);
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail(name, ": 'tie_word_embeddings' is not a boolean");
    c.tied = it->get<bool>();
  }
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null() && *it != "silu")
    fail(name, ": hidden_act ", it->dump(), " is not supported (only silu)");
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    fail(name, ": rope_scaling ", it->dump(), " is not supported");
  c.bos = first_id(j, "bos_token_id");
  c.eos = first_id(j, "eos_token_id");
  if (auto q = j.find("quantization_config"); q != j.end() && !q->is_null()) {
    if (!q->is_object()) fail(name, ": quantization_config is not an object");
    const std::string method = q->value("quant_method", std::string());
    if (method != "awq") fail(name, ": quantization_config.quant_method '", method, "' is not supported (only awq)");
    const std::string version = q->contains("version") && (*q)["version"].is_string() ? (*q)["version"].get<std::string>() : "gemm";
    if (version != "gemm" && version != "GEMM")
      fail(name, ": AWQ version '", version, "' is not supported (only the GEMM layout)");
    if (get_int(*q, name, "bits", 4) != 4) fail(name, ": AWQ bits must be 4");
    if (auto zp = q->find("zero_point"); zp != q->end() && !(zp->is_boolean() && zp->get<bool>()))
      fail(name, ": AWQ without zero points is not supported");
    c.awq.on = true;
    c.awq.group = get_int(*q, name, "group_size", 128);
    if (c.awq.group < 1 || c.awq.group > (1 << 16)) fail(name, ": AWQ group_size ", c.awq.group, " is out of range");
  }
  return c;
}

// The vocabulary and template from tokenizer.model, tokenizer_config.json and generation_config.json,
// as the `tokenizer.ggml.*` keys llama.cpp's converter writes.
void tokenizer_metadata(const fs::path& dir, const Config& c, std::vector<std::pair<std::string, gguf::Value>>& kv) {
  const fs::path model_path = dir / "tokenizer.model";
  if (!fs::exists(model_path)) fail(dir.string(), ": tokenizer.model is missing (only SentencePiece tokenizers are supported)");
  MappedFile map(model_path.string());
  tokenizer::Vocabulary v = tokenizer::parse_sentencepiece_model(map.bytes(), model_path.string());
  const fs::path tc_path = dir / "tokenizer_config.json";
  const json tc = read_json(tc_path, false);
  const json gc = read_json(dir / "generation_config.json", false);

  // Ids the model has beyond the SentencePiece pieces: added tokens where tokenizer_config names them,
  // else padding pieces (as llama.cpp's converter pads).
  if (c.n_vocab < static_cast<int64_t>(v.pieces.size()))
    fail(dir.string(), ": config.json vocab_size ", c.n_vocab, " is smaller than tokenizer.model's ", v.pieces.size(), " pieces");
  if (c.n_vocab > (int64_t{1} << 24)) fail(dir.string(), ": config.json vocab_size ", c.n_vocab, " is too large");
  std::map<int64_t, std::string> added;
  if (auto d = tc.find("added_tokens_decoder"); d != tc.end() && d->is_object())
    for (auto it = d->begin(); it != d->end(); ++it)
      if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        char* end = nullptr;
        const long long id = std::strtoll(it.key().c_str(), &end, 10);
        if (end && *end == 0) added[id] = (*it)["content"].get<std::string>();
      }
  for (int64_t id = static_cast<int64_t>(v.pieces.size()); id < c.n_vocab; ++id) {
    auto a = added.find(id);
    v.pieces.push_back(a != added.end() ? a->second : cat("[PAD", id, "]"));
    v.scores.push_back(0.0f);
    v.types.push_back(a != added.end() ? tokenizer::TokenType::Control : tokenizer::TokenType::Unused);
  }

  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
  kv.emplace_back("tokenizer.ggml.model", gguf::Value::string("llama"));
  kv.emplace_back("tokenizer.ggml.tokens", gguf::Value::string_array(v.pieces));
  kv.emplace_back("tokenizer.ggml.scores", gguf::Value::float32_array(v.scores));
  kv.emplace_back("tokenizer.ggml.token_type", gguf::Value::int32_array(types));
  // Special ids: generation_config.json, then config.json, then the SentencePiece model's own.
  auto id_or = [&](std::optional<int64_t> a, std::optional<int64_t> b, int32_t own) -> int64_t {
    return a ? *a : b ? *b : own;
  };
  const int64_t bos = id_or(first_id(gc, "bos_token_id"), c.bos, v.bos_id);
  const int64_t eos = id_or(first_id(gc, "eos_token_id"), c.eos, v.eos_id);
  for (auto [key, id] : {std::pair{"bos", bos}, {"eos", eos}})
    if (id >= c.n_vocab) fail(dir.string(), ": the ", key, " token id ", id, " is outside the vocabulary of ", c.n_vocab);
  if (bos >= 0) kv.emplace_back("tokenizer.ggml.bos_token_id", gguf::Value::uint32(static_cast<uint32_t>(bos)));
  if (eos >= 0) kv.emplace_back("tokenizer.ggml.eos_token_id", gguf::Value::uint32(static_cast<uint32_t>(eos)));
  // generation_config.json may list several EOS ids (a base's EOS and a chat end-of-turn token); the
  // first is EOS above, and every one must stop generation: the whole list goes to kEosIdsKey, which the
  // engine adds to its stop ids (GGUF has one EOS id only).
  if (auto it = gc.find("eos_token_id"); it != gc.end() && it->is_array()) {
    std::vector<int32_t> ids;
    for (const json& x : *it) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= c.n_vocab)
        fail((dir / "generation_config.json").string(), ": eos_token_id holds ", x.dump(),
             ", not a token id of the vocabulary of ", c.n_vocab);
      ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    if (ids.size() > 1) kv.emplace_back(kEosIdsKey, gguf::Value::int32_array(ids));
  }
  if (v.unk_id < 0)  // the tokenizer's rule: the first piece of type Unknown
    for (size_t i = 0; i < v.types.size() && v.unk_id < 0; ++i)
      if (v.types[i] == tokenizer::TokenType::Unknown) v.unk_id = static_cast<int32_t>(i);
  if (v.unk_id >= 0) kv.emplace_back("tokenizer.ggml.unknown_token_id", gguf::Value::uint32(static_cast<uint32_t>(v.unk_id)));
  if (v.pad_id >= 0) kv.emplace_back("tokenizer.ggml.padding_token_id", gguf::Value::uint32(static_cast<uint32_t>(v.pad_id)));
  auto flag = [&](const char* key, bool fallback) {
    auto it = tc.find(key);
    if (it == tc.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(tc_path.string(), ": '", key, "' is not a boolean");
    return it->get<bool>();
  };
  kv.emplace_back("tokenizer.ggml.add_bos_token", gguf::Value::boolean(flag("add_bos_token", true)));
  kv.emplace_back("tokenizer.ggml.add_eos_token", gguf::Value::boolean(flag("add_eos_token", false)));
  if (!v.add_dummy_prefix) kv.emplace_back("tokenizer.ggml.add_space_prefix", gguf::Value::boolean(false));
  if (v.remove_extra_whitespaces) kv.emplace_back("tokenizer.ggml.remove_extra_whitespaces", gguf::Value::boolean(true));
  // The chat template: a string, or a list of {name, template} (the one named "default").
  if (auto t = tc.find("chat_template"); t != tc.end() && !t->is_null()) {
    std::string text;
    if (t->is_string()) {
      text = t->get<std::string>();
    } else if (t->is_array()) {
      for (const json& e : *t)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
          text = e["template"].get<std::string>();
      if (text.empty()) fail(tc_path.string(), ": chat_template is a list without a 'default' template");
    } else {
      fail(tc_path.string(), ": chat_template is neither a string nor a list");
    }
    kv.emplace_back("tokenizer.chat_template", gguf::Value::string(text));
  }
}

// What keeps the view's bytes alive: the checkpoint's maps and the buffers made at load.
struct Storage {
  safetensors::Checkpoint ckpt;
  std::vector<std::vector<float>> buffers;
};

class ViewBuilder {
 public:
  ViewBuilder(const std::string& dir, const Config& c, Storage& s) : dir_(dir), c_(c), s_(s) {}

  // HF [rows][cols] tensor `hf` as GGUF tensor `gg` (ne {cols, rows}); norms are made F32.
  void add(const std::string& hf, const std::string& gg, int64_t rows, int64_t cols, bool f32 = false) {
    const safetensors::TensorInfo* t = s_.ckpt.find(hf);
    if (!t && c_.awq.on && !f32) {
      add_awq(hf.substr(0, hf.size() - std::string(".weight").size()), gg, rows, cols);
      return;
    }
    if (!t) fail(dir_, ": tensor '", hf, "' is missing");
    const std::vector<int64_t> want = rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    if (t->shape != want) fail(dir_, ": tensor '", hf, "' has shape ", shape_str(t->shape), ", expected ", shape_str(want));
    GgmlType type;
    switch (t->dtype) {
      case safetensors::Dtype::F32: type = GgmlType::F32; break;
      case safetensors::Dtype::F16: type = GgmlType::F16; break;
      case safetensors::Dtype::BF16: type = GgmlType::BF16; break;
      default: fail(dir_, ": tensor '", hf, "' has dtype ", safetensors::dtype_name(t->dtype), " (F32, F16 or BF16 expected)");
    }
    if (f32 && type != GgmlType::F32) {
      std::vector<float>& buf = s_.buffers.emplace_back(static_cast<size_t>(t->n_elements));
      for (uint64_t i = 0; i < t->n_elements; ++i) {
        const uint16_t h = static_cast<uint16_t>(t->data[2 * i] | t->data[2 * i + 1] << 8);
        buf[i] = type == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      }
      push(gg, GgmlType::F32, rows, cols, reinterpret_cast<const uint8_t*>(buf.data()));
      return;
    }
    push(gg, type, rows, cols, t->data);
  }

  std::vector<gguf::TensorInfo> take() { return std::move(out_); }

 private:
  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

  void add_awq(const std::string& base, const std::string& gg, int64_t out, int64_t in) {
    const auto* qw = s_.ckpt.find(base + ".qweight");
    const auto* qz = s_.ckpt.find(base + ".qzeros");
    const auto* sc = s_.ckpt.find(base + ".scales");
    if (!qw || !qz || !sc) fail(dir_, ": tensor '", base, ".weight' is missing, and so is its AWQ qweight/qzeros/scales");
    const int64_t g = c_.awq.group;
    if (in % g != 0 || out % 8 != 0)
      fail(dir_, ": AWQ tensor '", base, "': ", in, " inputs are not a multiple of the group size ", g, " or ", out,
           " outputs not of 8");
    auto expect = [&](const safetensors::TensorInfo* t, safetensors::Dtype d, std::vector<int64_t> shape) {
      if (t->dtype != d || t->shape != shape)
        fail(dir_, ": AWQ tensor '", t->name, "' is ", safetensors::dtype_name(t->dtype), " ", shape_str(t->shape),
             ", expected ", safetensors::dtype_name(d), " ", shape_str(shape));
    };
    expect(qw, safetensors::Dtype::I32, {in, out / 8});
    expect(qz, safetensors::Dtype::I32, {in / g, out / 8});
    expect(sc, safetensors::Dtype::F16, {in / g, out});
    std::vector<float>& buf = s_.buffers.emplace_back(static_cast<size_t>(checked_mul(static_cast<uint64_t>(in), static_cast<uint64_t>(out), "AWQ size")));
    awq::expand(qw->data, qz->data, sc->data, in, out, g, buf.data());
    push(gg, GgmlType::F32, out, in, reinterpret_cast<const uint8_t*>(buf.data()));
  }

  void push(const std::string& gg, GgmlType type, int64_t rows, int64_t cols, const uint8_t* data) {
    gguf::TensorInfo t;
    t.name = gg;
    t.n_dims = rows == 1 ? 1 : 2;
    t.ne = {cols, rows, 1, 1};
    t.type = type;
    t.n_elements = static_cast<uint64_t>(rows * cols);
    t.n_bytes = *row_bytes(type, static_cast<uint64_t>(cols)) * static_cast<uint64_t>(rows);
    t.data = data;
    out_.push_back(std::move(t));
  }

  std::string dir_;
  const Config& c_;
  Storage& s_;
  std::vector<gguf::TensorInfo> out_;
};

void check_range(const std::string& file, const char* key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) fail(file, ": '", key, "' = ", v, " is outside [", lo, ", ", hi, "]");
}

}  // namespace

bool is_checkpoint_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

gguf::File open_checkpoint(const std::string& dir_str) {
  const fs::path dir(dir_str);
  const Config c = read_config(dir);
  const std::string cfg = (dir / "config.json").string();
  // Bounds before any size below is computed from them (HParams::from_gguf checks the rest again).
  check_range(cfg, "hidden_size", c.n_embd, 1, 1 << 17);
  check_range(cfg, "intermediate_size", c.n_ff, 1, 1 << 20);
  check_range(cfg, "num_hidden_layers", c.n_layer, 1, 1024);
  check_range(cfg, "num_attention_heads", c.n_head, 1, 4096);
  check_range(cfg, "num_key_value_heads", c.n_head_kv, 1, c.n_head);
  check_range(cfg, "head_dim", c.head_dim, 1, 4096);
  check_range(cfg, "max_position_embeddings", c.n_ctx, 1, int64_t{1} << 24);
  check_range(cfg, "vocab_size", c.n_vocab, 1, int64_t{1} << 24);
  if (c.arch == "MixtralForCausalLM") {
    check_range(cfg, "num_local_experts", c.n_expert, 1, 1024);
    check_range(cfg, "num_experts_per_tok", c.n_expert_used, 1, c.n_expert);
  }

  std::vector<std::pair<std::string, gguf::Value>> kv;
  kv.emplace_back("general.architecture", gguf::Value::string("llama"));
  // The model's name: the directory's (a trailing slash leaves an empty last component).
  fs::path normal = fs::absolute(dir).lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  kv.emplace_back("general.name", gguf::Value::string(normal.filename().string()));
  kv.emplace_back("llama.context_length", gguf::Value::uint32(static_cast<uint32_t>(c.n_ctx)));
  kv.emplace_back("llama.embedding_length", gguf::Value::uint32(static_cast<uint32_t>(c.n_embd)));
  kv.emplace_back("llama.block_count", gguf::Value::uint32(static_cast<uint32_t>(c.n_layer)));
  kv.emplace_back("llama.feed_forward_length", gguf::Value::uint32(static_cast<uint32_t>(c.n_ff)));
  kv.emplace_back("llama.rope.dimension_count", gguf::Value::uint32(static_cast<uint32_t>(c.head_dim)));
  kv.emplace_back("llama.attention.head_count", gguf::Value::uint32(static_cast<uint32_t>(c.n_head)));
  kv.emplace_back("llama.attention.head_count_kv", gguf::Value::uint32(static_cast<uint32_t>(c.n_head_kv)));
  if (c.head_dim * c.n_head != c.n_embd) {
    kv.emplace_back("llama.attention.key_length", gguf::Value::uint32(static_cast<uint32_t>(c.head_dim)));
    kv.emplace_back("llama.attention.value_length", gguf::Value::uint32(static_cast<uint32_t>(c.head_dim)));
  }
  kv.emplace_back("llama.attention.layer_norm_rms_epsilon", gguf::Value::float32(static_cast<float>(c.rms_eps)));
  kv.emplace_back("llama.rope.freq_base", gguf::Value::float32(static_cast<float>(c.rope_theta)));
  if (c.n_expert > 0) {
    kv.emplace_back("llama.expert_count", gguf::Value::uint32(static_cast<uint32_t>(c.n_expert)));
    kv.emplace_back("llama.expert_used_count", gguf::Value::uint32(static_cast<uint32_t>(c.n_expert_used)));
  }
  tokenizer_metadata(dir, c, kv);
  kv.emplace_back(kRotateHalfKey, gguf::Value::boolean(true));

  auto storage = std::make_shared<Storage>();
  storage->ckpt = safetensors::Checkpoint::open_dir(dir_str);
  ViewBuilder b(dir_str, c, *storage);
  const int64_t E = c.n_embd, V = c.n_vocab, F = c.n_ff, QD = c.n_head * c.head_dim, KD = c.n_head_kv * c.head_dim;
  b.add("model.embed_tokens.weight", "token_embd.weight", V, E);
  b.add("model.norm.weight", "output_norm.weight", 1, E, true);
  if (storage->ckpt.find("lm_head.weight") || !c.tied) b.add("lm_head.weight", "output.weight", V, E);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string h = cat("model.layers.", l, "."), g = cat("blk.", l, ".");
    b.add(h + "input_layernorm.weight", g + "attn_norm.weight", 1, E, true);
    b.add(h + "post_attention_layernorm.weight", g + "ffn_norm.weight", 1, E, true);
    b.add(h + "self_attn.q_proj.weight", g + "attn_q.weight", QD, E);
    b.add(h + "self_attn.k_proj.weight", g + "attn_k.weight", KD, E);
    b.add(h + "self_attn.v_proj.weight", g + "attn_v.weight", KD, E);
    b.add(h + "self_attn.o_proj.weight", g + "attn_output.weight", E, QD);
    if (c.n_expert > 0) {
      // The router stays as stored (AutoAWQ never quantizes it: modules_to_not_convert).
      b.add(h + "block_sparse_moe.gate.weight", g + "ffn_gate_inp.weight", c.n_expert, E);
      for (int64_t e = 0; e < c.n_expert; ++e) {
        const std::string x = cat(h, "block_sparse_moe.experts.", e, ".");
        b.add(x + "w1.weight", cat(g, "ffn_gate.", e, ".weight"), F, E);
        b.add(x + "w2.weight", cat(g, "ffn_down.", e, ".weight"), E, F);
        b.add(x + "w3.weight", cat(g, "ffn_up.", e, ".weight"), F, E);
      }
    } else {
      b.add(h + "mlp.gate_proj.weight", g + "ffn_gate.weight", F, E);
      b.add(h + "mlp.down_proj.weight", g + "ffn_down.weight", E, F);
      b.add(h + "mlp.up_proj.weight", g + "ffn_up.weight", F, E);
    }
  }
  // What the model occupies: the mapped shards plus the buffers made at load (AWQ expansions, widened
  // norms), so that the planner's totals count the buffers too.
  uint64_t copies = 0;
  for (const auto& buf : storage->buffers) copies += buf.size() * sizeof(float);
  const uint64_t bytes = storage->ckpt.total_bytes() + copies;
  kv.emplace_back(kLoadCopyBytesKey, gguf::Value::uint64(copies));
  return gguf::File::assemble(dir_str, std::move(kv), b.take(), storage, bytes);
}

gguf::File open_model_file(const std::string& path) {
  if (is_checkpoint_dir(path)) return open_checkpoint(path);
  std::error_code ec;
  if (fs::is_directory(path, ec))
    fail(path, ": is a directory without config.json (a Hugging Face checkpoint needs config.json, safetensors weights "
               "and tokenizer.model)");
  return gguf::File::open(path);
}

}  // namespace moe::hf
