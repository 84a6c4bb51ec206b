// layout.cpp: GGUF file sizes before writing, and the metadata quantize/synth write (see layout.h).
//
// The size arithmetic mirrors the format (and gguf::Writer): "GGUF", u32 version, u64 tensor count,
// u64 kv count; each kv as u64-length key, u32 type, value; each tensor info as u64-length name, u32
// n_dims, n_dims u64 dims, u32 type, u64 offset; zero padding to the alignment; then each tensor's data
// at an aligned offset, followed by padding to the alignment (the last one too).
#include "plan/layout.h"

#include "util/checked.h"
#include "util/error.h"

namespace moe::plan {
namespace {

uint64_t align(uint64_t x, uint64_t a) {
  auto r = align_up(x, a);
  if (!r) fail("GGUF layout: size ", x, " overflows when aligned to ", a);
  return *r;
}

uint64_t tensor_data_bytes(GgmlType type, const std::vector<int64_t>& ne, const std::string& name) {
  if (ne.empty()) fail("tensor '", name, "' has no dimensions");
  auto row = row_bytes(type, static_cast<uint64_t>(ne[0]));
  if (!row) fail("tensor '", name, "': ne[0] = ", ne[0], " is not a multiple of the ", type_name(type), " block size");
  uint64_t n = *row;
  for (size_t d = 1; d < ne.size(); ++d) n = checked_mul(n, static_cast<uint64_t>(ne[d]), "tensor bytes");
  return n;
}

uint64_t alignment_of(const Metadata& kv) {
  for (const auto& [k, v] : kv) {
    if (k != "general.alignment") continue;
    auto a = v.as_int();
    if (!a || *a <= 0 || (*a & (*a - 1)) != 0) fail("general.alignment is not a positive power of two");
    return static_cast<uint64_t>(*a);
  }
  return 32;
}

void set_key(Metadata& kv, const std::string& key, gguf::Value v) {
  for (auto& [k, old] : kv) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  kv.emplace_back(key, std::move(v));
}

}  // namespace

uint64_t serialized_value_bytes(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::STRING: return 8 + v.s.size();
    case ValueType::ARRAY: {
      uint64_t n = 4 + 8;
      for (const auto& e : v.array) n = checked_add(n, serialized_value_bytes(e), "metadata size");
      return n;
    }
    default: return gguf::value_type_min_bytes(v.type);
  }
}

WeightsLayout layout_file(const Metadata& kv, std::vector<PlannedTensor> tensors) {
  WeightsLayout out;
  out.alignment = alignment_of(kv);
  uint64_t header = 4 + 4 + 8 + 8;
  for (const auto& [k, v] : kv) header = checked_add(header, 8 + k.size() + 4 + serialized_value_bytes(v), "header");
  uint64_t data = 0;
  for (auto& t : tensors) {
    t.bytes = tensor_data_bytes(t.type, t.ne, t.name);
    header = checked_add(header, 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8, "header");
    out.tensor_bytes = checked_add(out.tensor_bytes, t.bytes, "tensor bytes");
    data = checked_add(align(data, out.alignment), t.bytes, "data section");
  }
  out.file_bytes = checked_add(align(header, out.alignment), align(data, out.alignment), "file size");
  out.tensors = std::move(tensors);
  return out;
}

WeightsLayout layout_of_file(const gguf::File& file) {
  std::vector<PlannedTensor> ts;
  for (const auto& t : file.tensors()) {
    std::vector<int64_t> ne(t.ne.begin(), t.ne.begin() + t.n_dims);
    ts.push_back({t.name, ne, t.type, t.type, 0});
  }
  WeightsLayout out = layout_file(file.metadata(), std::move(ts));
  // The file's own size is the truth (a file written elsewhere may pad differently).
  out.file_bytes = file.file_size();
  return out;
}

Metadata quantized_metadata(const gguf::File& file, const QuantMix& mix) {
  Metadata kv = file.metadata();
  set_key(kv, "general.file_type", gguf::Value::uint32(mix.file_type));
  if (mix.quantized) set_key(kv, "general.quantization_version", gguf::Value::uint32(2));
  return kv;
}

WeightsLayout layout_of_quantized_file(const gguf::File& file, const model::HParams& hp, const QuantMix& mix) {
  const bool has_output = file.find_tensor("output.weight") != nullptr;
  std::vector<PlannedTensor> ts;
  for (const auto& t : file.tensors()) {
    std::vector<int64_t> ne(t.ne.begin(), t.ne.begin() + t.n_dims);
    TypeChoice c = choose_type(mix, hp, t.name, ne, has_output);
    ts.push_back({t.name, ne, c.type, c.wanted, 0});
  }
  return layout_file(quantized_metadata(file, mix), std::move(ts));
}

Vocab synthetic_vocab(int64_t n_vocab) {
  if (n_vocab < 259)
    fail("a synthetic vocabulary needs at least 259 tokens (<unk>, <s>, </s> and 256 byte tokens), not ", n_vocab);
  Vocab v;
  v.tokens.reserve(static_cast<size_t>(n_vocab));
  auto add = [&](std::string piece, float score, int32_t type) {
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0.0f, 2);
  add("<s>", 0.0f, 3);
  add("</s>", 0.0f, 3);
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) add(cat("<0x", kHex[b >> 4], kHex[b & 15], ">"), 0.0f, 6);
  // Normal pieces: "▁" (the SentencePiece space) alone, then "▁" + one and two lowercase letters, then
  // numbered pieces; all distinct, scores decreasing so merges have a strict order.
  const std::string space = "\xe2\x96\x81";
  std::vector<std::string> pieces = {space};
  for (char a = 'a'; a <= 'z'; ++a) pieces.push_back(space + a);
  for (char a = 'a'; a <= 'z'; ++a) pieces.push_back(std::string(1, a));
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) pieces.push_back(space + a + b);
  int64_t k = 0;
  while (static_cast<int64_t>(v.tokens.size()) < n_vocab) {
    const size_t i = v.tokens.size() - 259;
    std::string piece = i < pieces.size() ? pieces[i] : cat(space, "t", k++);
    add(std::move(piece), -static_cast<float>(i + 1), 1);
  }
  return v;
}

Metadata synth_metadata(const model::HParams& hp, const QuantMix& mix, const std::string& name, const Vocab& vocab) {
  using gguf::Value;
  if (static_cast<int64_t>(vocab.tokens.size()) != hp.n_vocab)
    fail("the tokenizer has ", vocab.tokens.size(), " tokens but the shape's vocabulary is ", hp.n_vocab);
  auto u32 = [](int64_t x) { return Value::uint32(static_cast<uint32_t>(x)); };
  Metadata kv;
  kv.emplace_back("general.architecture", Value::string("llama"));
  kv.emplace_back("general.name", Value::string(name));
  kv.emplace_back("llama.vocab_size", u32(hp.n_vocab));
  kv.emplace_back("llama.context_length", u32(hp.n_ctx_train));
  kv.emplace_back("llama.embedding_length", u32(hp.n_embd));
  kv.emplace_back("llama.block_count", u32(hp.n_layer));
  kv.emplace_back("llama.feed_forward_length", u32(hp.n_ff));
  kv.emplace_back("llama.rope.dimension_count", u32(hp.n_rot));
  kv.emplace_back("llama.attention.head_count", u32(hp.n_head));
  kv.emplace_back("llama.attention.head_count_kv", u32(hp.n_head_kv));
  if (hp.head_dim * hp.n_head != hp.n_embd) {
    kv.emplace_back("llama.attention.key_length", u32(hp.head_dim));
    kv.emplace_back("llama.attention.value_length", u32(hp.head_dim));
  }
  kv.emplace_back("llama.attention.layer_norm_rms_epsilon", Value::float32(hp.rms_norm_eps));
  kv.emplace_back("llama.rope.freq_base", Value::float32(hp.rope_freq_base));
  if (hp.is_moe()) {
    kv.emplace_back("llama.expert_count", u32(hp.n_expert));
    kv.emplace_back("llama.expert_used_count", u32(hp.n_expert_used));
  }
  kv.emplace_back("general.file_type", Value::uint32(mix.file_type));
  kv.emplace_back("tokenizer.ggml.model", Value::string("llama"));
  kv.emplace_back("tokenizer.ggml.tokens", Value::string_array(vocab.tokens));
  kv.emplace_back("tokenizer.ggml.scores", Value::float32_array(vocab.scores));
  kv.emplace_back("tokenizer.ggml.token_type", Value::int32_array(vocab.types));
  kv.emplace_back("tokenizer.ggml.bos_token_id", Value::uint32(static_cast<uint32_t>(vocab.bos_id)));
  kv.emplace_back("tokenizer.ggml.eos_token_id", Value::uint32(static_cast<uint32_t>(vocab.eos_id)));
  kv.emplace_back("tokenizer.ggml.unknown_token_id", Value::uint32(static_cast<uint32_t>(vocab.unk_id)));
  kv.emplace_back("tokenizer.ggml.add_bos_token", Value::boolean(vocab.add_bos));
  kv.emplace_back("tokenizer.ggml.add_eos_token", Value::boolean(vocab.add_eos));
  kv.emplace_back("general.quantization_version", Value::uint32(2));
  return kv;
}

WeightsLayout layout_of_synth(const model::HParams& hp, const QuantMix& mix, const Vocab& vocab,
                              const std::string& name) {
  std::vector<PlannedTensor> ts;
  for (auto& t : tensor_list(hp)) {
    TypeChoice c = choose_type(mix, hp, t.name, t.ne, true);
    ts.push_back({t.name, t.ne, c.type, c.wanted, 0});
  }
  return layout_file(synth_metadata(hp, mix, name, vocab), std::move(ts));
}

}  // namespace moe::plan
