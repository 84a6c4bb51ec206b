// hf_e2e_test.cpp: Hugging Face checkpoint directories through the `moe` binary.
//  - tiny-mixtral-hf (F16 shards, rotate-half Q/K rows) against its float64 reference: fast mode within
//    3e-3 relative L2 (the F16 GGUF's bound) and no farther than 1.25x llama.cpp's own error on the F16
//    GGUF (the bound and argument of model_e2e_test.cpp), every argmax equal; exact mode within 1e-5
//    (model_e2e_test.cpp's exact bound, derived in src/model/model_test.cpp; the issue asks 1e-4).
//  - tiny-mixtral-awq: in fast mode no farther from its reference than our Q4_1 GGUF of tiny-mixtral is
//    from its own; in exact mode within 1e-5 (both are at the float32 floor there, ~1.7e-7).
//  - A checkpoint this test writes itself (BF16 weights and norms, Q/K rows un-permuted into HF order,
//    per-expert tensors, one shard) from the F16 GGUF fixture, against a GGUF holding the same BF16
//    values in GGUF order: exact-mode logits within 1e-5 of each other with equal argmaxes (they differ
//    only in the order the attention dot products sum the head dimensions).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "safetensors/safetensors.h"
#include "logits_compare.h"
#include "testutil/fixtures.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe {
namespace {

using moe::testing::expect_same_argmax;
using moe::testing::fixture;
using moe::testing::read_f32;
using moe::testing::rel_l2;
using moe::testing::run_moe;
using moe::testing::temp_path;

constexpr int64_t kVocab = 512;

std::vector<float> logits(const std::string& model, const std::string& flags) {
  const std::string out = temp_path("hf-logits");
  auto r = run_moe(cat("logits '", model, "' --tokens @'", fixture("golden/tiny-mixtral.tokens"), "' --out '", out,
                       "' -t 2 ", flags));
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return {};
  auto v = read_f32(out);
  std::filesystem::remove(out);
  return v;
}

const char* kExact = "--exact --kv-cache-dtype f32";

TEST(HfCheckpoint, LogitsMatchTheFloat64Reference) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/config.json");
  const std::string dir = fixture("models/hf/tiny-mixtral-hf");
  const auto ref = read_f32(fixture("golden/tiny-mixtral-hf.ref.logits.f32"));
  const auto llama_f16 = read_f32(fixture("golden/tiny-mixtral.F16.logits.f32"));
  const auto llama_ref = read_f32(fixture("golden/tiny-mixtral.F16.ref.logits.f32"));
  const auto fast = logits(dir, "");
  ASSERT_EQ(fast.size(), ref.size());
  const double fast_err = rel_l2(fast, ref);
  RecordProperty("hf_fast_error", cat(fast_err));
  EXPECT_LE(fast_err, 3e-3);
  EXPECT_LE(fast_err, 1.25 * rel_l2(llama_f16, llama_ref));
  expect_same_argmax(fast, ref, kVocab);
  const auto exact = logits(dir, kExact);
  ASSERT_EQ(exact.size(), ref.size());
  EXPECT_LE(rel_l2(exact, ref), 1e-5);
  expect_same_argmax(exact, ref, kVocab);
}

TEST(HfCheckpoint, AwqNoFartherThanOurQ4_1FromItsReference) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-awq/config.json");
  const auto awq_ref = read_f32(fixture("golden/tiny-mixtral-awq.ref.logits.f32"));
  const auto q41_ref = read_f32(fixture("golden/tiny-mixtral.Q4_1.ref.logits.f32"));
  for (const char* flags : {"", kExact}) {
    SCOPED_TRACE(flags);
    const auto awq = logits(fixture("models/hf/tiny-mixtral-awq"), flags);
    const auto q41 = logits(fixture("models/tiny-mixtral/tiny-mixtral.Q4_1.gguf"), flags);
    ASSERT_EQ(awq.size(), awq_ref.size());
    ASSERT_EQ(q41.size(), q41_ref.size());
    const double awq_err = rel_l2(awq, awq_ref), q41_err = rel_l2(q41, q41_ref);
    RecordProperty(cat("awq_error", flags[0] ? "_exact" : "_fast"), cat(awq_err, " (Q4_1: ", q41_err, ")"));
    if (flags[0]) {
      // Exact mode: both sit at the float32 rounding floor (~1.7e-7, which of the two is lower is
      // chance), so each is held to the exact bound of every type (model_e2e_test.cpp).
      EXPECT_LE(awq_err, 1e-5);
      EXPECT_LE(q41_err, 1e-5);
    } else {
      EXPECT_LE(awq_err, q41_err);
    }
  }
}

// GGUF row r of a head (2i + k) holds HF row k * hd/2 + i (llama.cpp's converter permutation).
std::vector<uint8_t> unpermute_rows(const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t hd) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t h = r / hd, j = r % hd, i = j / 2, k = j % 2;
    const int64_t hf_row = h * hd + k * (hd / 2) + i;
    std::memcpy(out.data() + hf_row * row_bytes, src + r * row_bytes, static_cast<size_t>(row_bytes));
  }
  return out;
}

std::vector<uint8_t> f16_to_bf16(const uint8_t* p, uint64_t n) {
  std::vector<uint8_t> out(n * 2);
  for (uint64_t i = 0; i < n; ++i) {
    const uint16_t b = fp32_to_bf16(fp16_to_fp32(static_cast<uint16_t>(p[2 * i] | p[2 * i + 1] << 8)));
    out[2 * i] = static_cast<uint8_t>(b);
    out[2 * i + 1] = static_cast<uint8_t>(b >> 8);
  }
  return out;
}

std::vector<uint8_t> f32_to_bf16(const uint8_t* p, uint64_t n) {
  std::vector<uint8_t> out(n * 2);
  for (uint64_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    const uint16_t b = fp32_to_bf16(f);
    out[2 * i] = static_cast<uint8_t>(b);
    out[2 * i + 1] = static_cast<uint8_t>(b >> 8);
  }
  return out;
}

std::vector<uint8_t> bf16_to_f32_bytes(const std::vector<uint8_t>& b) {
  std::vector<uint8_t> out(b.size() * 2);
  for (size_t i = 0; i < b.size() / 2; ++i) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(b[2 * i] | b[2 * i + 1] << 8));
    std::memcpy(out.data() + 4 * i, &f, 4);
  }
  return out;
}

TEST(HfCheckpoint, OwnBf16CheckpointMatchesTheSameWeightsAsGguf) {
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.F16.gguf");
  MOE_REQUIRE_FIXTURE("models/tok512.model");
  const gguf::File src = gguf::File::open(fixture("models/tiny-mixtral/tiny-mixtral.F16.gguf"));
  moe::testing::TempDir dir;
  const int64_t hd = 64, n_expert = 8;
  safetensors::Writer st;
  gguf::Writer gw;
  for (const auto& [key, value] : src.metadata()) gw.set(key, value);
  gw.set("general.file_type", gguf::Value::uint32(32));  // MOSTLY_BF16
  for (const gguf::TensorInfo& t : src.tensors()) {
    const bool norm = t.name.find("norm") != std::string::npos, router = t.name.find("ffn_gate_inp") != std::string::npos;
    std::vector<uint8_t> bf = t.type == GgmlType::F16 ? f16_to_bf16(t.data, t.n_elements) : f32_to_bf16(t.data, t.n_elements);
    // The GGUF copy: the same values, norms and router widened back to F32 (exactly).
    const std::vector<int64_t> ne(t.ne.begin(), t.ne.begin() + t.n_dims);
    if (norm || router) {
      gw.add_tensor(t.name, GgmlType::F32, ne, bf16_to_f32_bytes(bf));
    } else {
      gw.add_tensor(t.name, GgmlType::BF16, ne, bf);
    }
    // The HF copy.
    std::string name = t.name;
    const int64_t cols = t.ne[0], rows = t.ne[1];
    auto hf = [&](const std::string& n, std::vector<uint8_t> bytes, std::vector<int64_t> shape) {
      st.add(n, router ? safetensors::Dtype::F32 : safetensors::Dtype::BF16, shape,
             router ? bf16_to_f32_bytes(bytes) : std::move(bytes));
    };
    if (name == "token_embd.weight") { hf("model.embed_tokens.weight", bf, {rows, cols}); continue; }
    if (name == "output.weight") { hf("lm_head.weight", bf, {rows, cols}); continue; }
    if (name == "output_norm.weight") { hf("model.norm.weight", bf, {cols}); continue; }
    const size_t dot = name.find('.', 4);
    const std::string layer = name.substr(4, dot - 4), rest = name.substr(dot + 1);
    const std::string h = "model.layers." + layer + ".";
    if (rest == "attn_norm.weight") hf(h + "input_layernorm.weight", bf, {cols});
    else if (rest == "ffn_norm.weight") hf(h + "post_attention_layernorm.weight", bf, {cols});
    else if (rest == "attn_q.weight") hf(h + "self_attn.q_proj.weight", unpermute_rows(bf.data(), rows, cols * 2, hd), {rows, cols});
    else if (rest == "attn_k.weight") hf(h + "self_attn.k_proj.weight", unpermute_rows(bf.data(), rows, cols * 2, hd), {rows, cols});
    else if (rest == "attn_v.weight") hf(h + "self_attn.v_proj.weight", bf, {rows, cols});
    else if (rest == "attn_output.weight") hf(h + "self_attn.o_proj.weight", bf, {rows, cols});
    else if (rest == "ffn_gate_inp.weight") hf(h + "block_sparse_moe.gate.weight", bf, {rows, cols});
    else {
      const char* w = rest == "ffn_gate_exps.weight" ? "w1" : rest == "ffn_down_exps.weight" ? "w2" : "w3";
      const size_t per = static_cast<size_t>(rows * cols * 2);
      for (int64_t e = 0; e < n_expert; ++e)
        hf(cat(h, "block_sparse_moe.experts.", e, ".", w, ".weight"),
           std::vector<uint8_t>(bf.begin() + static_cast<long>(e * per), bf.begin() + static_cast<long>((e + 1) * per)),
           {rows, cols});
    }
  }
  st.write(dir.file("model.safetensors"));
  gw.write(dir.file("same.gguf"));
  dir.write("config.json", R"({"architectures":["MixtralForCausalLM"],"hidden_size":256,"intermediate_size":256,
    "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":8,"num_experts_per_tok":2,
    "vocab_size":512,"max_position_embeddings":4096,"rms_norm_eps":1e-05,"rope_theta":1000000.0,"torch_dtype":"bfloat16"})");
  dir.write("tokenizer_config.json", R"({"add_bos_token":true,"add_eos_token":false})");
  std::filesystem::copy_file(fixture("models/tok512.model"), dir.file("tokenizer.model"));

  auto info = run_moe(cat("info '", dir.dir(), "'"));
  EXPECT_EQ(info.status, 0) << info.err;
  EXPECT_NE(info.out.find("BF16"), std::string::npos) << info.out;
  const auto a = logits(dir.dir(), kExact), b = logits(dir.file("same.gguf"), kExact);
  ASSERT_EQ(a.size(), 25u * kVocab);
  ASSERT_EQ(b.size(), a.size());
  EXPECT_LE(rel_l2(a, b), 1e-5);
  expect_same_argmax(a, b, kVocab);
  // And the tokenizer came along: the same ids as the GGUF's.
  auto t1 = run_moe(cat("tokenize '", dir.dir(), "'"), "Once upon a time");
  auto t2 = run_moe(cat("tokenize '", dir.file("same.gguf"), "'"), "Once upon a time");
  EXPECT_EQ(t1.status, 0) << t1.err;
  EXPECT_EQ(t1.out, t2.out);
}

// Tensor by tensor: the same names in the same order, shapes, types and bytes.
void expect_same_tensors(const gguf::File& a, const gguf::File& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t k = 0; k < a.tensors().size(); ++k) {
    const gguf::TensorInfo &x = a.tensors()[k], &y = b.tensors()[k];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.ne, y.ne) << x.name;
    EXPECT_EQ(x.type, y.type) << x.name;
    ASSERT_EQ(x.n_bytes, y.n_bytes) << x.name;
    EXPECT_EQ(std::memcmp(x.data, y.data, x.n_bytes), 0) << x.name << " differs";
  }
}

TEST(HfConvert, WritesTheF16GgufFixtureBitForBit) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/config.json");
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.F16.gguf");
  const std::string hf_dir = fixture("models/hf/tiny-mixtral-hf");
  const std::string ref_path = fixture("models/tiny-mixtral/tiny-mixtral.F16.gguf");
  moe::testing::TempDir dir;
  auto r = run_moe(cat("convert '", hf_dir, "' '", dir.file("out.gguf"), "'"));
  ASSERT_EQ(r.status, 0) << r.err;
  const gguf::File out = gguf::File::open(dir.file("out.gguf"));
  const gguf::File ref = gguf::File::open(ref_path);
  expect_same_tensors(out, ref);
  // The Q/K permutation checked independently of both files' agreement: GGUF row 2i + k of a head is HF
  // row k * hd/2 + i of the checkpoint's q_proj (llama.cpp's converter).
  const auto ckpt = safetensors::Checkpoint::open_dir(hf_dir);
  const auto* q_hf = ckpt.find("model.layers.1.self_attn.q_proj.weight");
  const auto* q_gg = out.find_tensor("blk.1.attn_q.weight");
  ASSERT_NE(q_hf, nullptr);
  ASSERT_NE(q_gg, nullptr);
  const int64_t hd = 64, rb = 256 * 2;
  for (int64_t row = 0; row < 256; ++row) {
    const int64_t h = row / hd, i = (row % hd) / 2, k = row % 2;
    ASSERT_EQ(std::memcmp(q_gg->data + row * rb, q_hf->data + (h * hd + k * hd / 2 + i) * rb, rb), 0) << row;
  }
  // Metadata a GGUF reader needs, as llama.cpp names it.
  EXPECT_EQ(out.get_string("general.architecture"), "llama");
  EXPECT_EQ(out.get_int("llama.expert_count"), 8);
  EXPECT_EQ(out.get_int("general.file_type"), 1);
  EXPECT_EQ(out.get_string_array("tokenizer.ggml.tokens"), ref.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(out.get_float_array("tokenizer.ggml.scores"), ref.get_float_array("tokenizer.ggml.scores"));
  EXPECT_EQ(out.get_int_array("tokenizer.ggml.token_type"), ref.get_int_array("tokenizer.ggml.token_type"));
  EXPECT_EQ(out.get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(out.get_int("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_EQ(out.get_int("tokenizer.ggml.unknown_token_id"), 0);
  EXPECT_NE(out.get_string("tokenizer.chat_template").value_or("").find("[INST]"), std::string::npos);
  EXPECT_EQ(out.find("moe.rope.rotate_half"), nullptr);
  // So the logits are the F16 GGUF's, bit for bit.
  EXPECT_EQ(logits(dir.file("out.gguf"), ""), logits(ref_path, ""));

  // --type goes through moe quantize's pipeline: the same bytes as quantizing the F16 GGUF.
  r = run_moe(cat("convert '", hf_dir, "' '", dir.file("q.gguf"), "' --type Q4_K_M -q -t 2"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run_moe(cat("quantize '", ref_path, "' '", dir.file("ref-q.gguf"), "' Q4_K_M -q -t 2"));
  ASSERT_EQ(r.status, 0) << r.err;
  expect_same_tensors(gguf::File::open(dir.file("q.gguf")), gguf::File::open(dir.file("ref-q.gguf")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.gguf.unquantized.tmp")));
}

TEST(HfQuantizeOnLoad, GeneratesWhatTheConvertedFileGenerates) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/config.json");
  const std::string hf_dir = fixture("models/hf/tiny-mixtral-hf");
  moe::testing::TempDir dir;
  auto c = run_moe(cat("convert '", hf_dir, "' '", dir.file("q.gguf"), "' --type Q4_K_M -q -t 2"));
  ASSERT_EQ(c.status, 0) << c.err;
  const std::string args = " -p 'Once upon a time' -n 16 --temp 0 --print-ids -t 2";
  auto a = run_moe(cat("run '", hf_dir, "' --quantize Q4_K_M", args));
  auto b = run_moe(cat("run '", dir.file("q.gguf"), "'", args));
  ASSERT_EQ(a.status, 0) << a.err;
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.err.find("quantizing"), std::string::npos) << a.err;
  auto bad = run_moe(cat("run '", dir.file("q.gguf"), "' --quantize Q8_0 -n 1"));
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("--quantize applies to a Hugging Face checkpoint"), std::string::npos) << bad.err;
}

TEST(HfCheckpoint, BadDirectoriesGiveClearErrors) {
  moe::testing::TempDir dir;
  auto r = run_moe(cat("info '", dir.dir(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("without config.json"), std::string::npos) << r.err;
  dir.write("config.json", R"({"architectures":["GPT2LMHeadModel"]})");
  r = run_moe(cat("info '", dir.dir(), "'"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("GPT2LMHeadModel"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe
