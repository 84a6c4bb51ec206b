// hf_test.cpp: the AWQ expansion (lossless, bit for bit, on random packed data; AutoAWQ's nibble order)
// and the checkpoint loader's refusals, on small directories written with the project's writers.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "hf/awq.h"
#include "hf/hf.h"
#include "safetensors/safetensors.h"
#include "testutil/fixtures.h"
#include "util/fp16.h"

namespace moe::hf {
namespace {

TEST(Awq, NibbleOrderIsAutoAwqs) {
  // AutoAWQ packs outputs 0..7 of a word into nibbles in the order 0,2,4,6,1,3,5,7: output 1 is in
  // nibble 4 (bits 16..19), output 2 in nibble 1.
  std::vector<uint8_t> v(8);
  for (int o = 0; o < 8; ++o) v[static_cast<size_t>(o)] = static_cast<uint8_t>(o + 8);
  const auto packed = awq::pack(v, 1, 8);
  uint32_t word;
  std::memcpy(&word, packed.data(), 4);
  EXPECT_EQ(word, 0xFDB9ECA8u);  // nibbles 7..0 hold outputs 7,5,3,1,6,4,2,0 (+8)
  for (int o = 0; o < 8; ++o) EXPECT_EQ(awq::nibble(packed.data(), o), static_cast<unsigned>(o + 8)) << o;
}

TEST(Awq, ExpansionIsExactOnRandomData) {
  std::mt19937 rng(7);
  const int64_t in = 256, out = 48, group = 128, groups = in / group;
  std::vector<uint8_t> q(static_cast<size_t>(in * out)), z(static_cast<size_t>(groups * out));
  for (auto& x : q) x = static_cast<uint8_t>(rng() % 16);
  for (auto& x : z) x = static_cast<uint8_t>(rng() % 16);
  std::vector<uint8_t> scales(static_cast<size_t>(groups * out * 2));
  std::vector<float> s(static_cast<size_t>(groups * out));
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (size_t k = 0; k < s.size(); ++k) {
    const uint16_t h = fp32_to_fp16(nd(rng));
    s[k] = fp16_to_fp32(h);
    scales[2 * k] = static_cast<uint8_t>(h);
    scales[2 * k + 1] = static_cast<uint8_t>(h >> 8);
  }
  const auto qw = awq::pack(q, in, out), qz = awq::pack(z, groups, out);
  std::vector<float> w(static_cast<size_t>(in * out));
  awq::expand(qw.data(), qz.data(), scales.data(), in, out, group, w.data());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      // (q - z) * s in double is exact; the float32 the loader stores must be the same number.
      const double want = (static_cast<double>(q[static_cast<size_t>(i * out + o)]) - z[static_cast<size_t>(i / group * out + o)]) *
                          static_cast<double>(s[static_cast<size_t>(i / group * out + o)]);
      ASSERT_EQ(static_cast<double>(w[static_cast<size_t>(o * in + i)]), want) << o << " " << i;
    }
}

class HfDir : public ::testing::Test {
 protected:
  moe::testing::TempDir dir;
  std::string error() {
    try {
      open_checkpoint(dir.dir());
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "accepted a bad checkpoint";
    return "";
  }
  // A dense Llama with one layer, n_embd 8, BF16 weights, the tok512 vocabulary.
  void write_llama(bool with_tokenizer = true, bool bad_q_shape = false) {
    dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":512,"tie_word_embeddings":true})");
    safetensors::Writer w;
    auto t = [&](const std::string& n, std::vector<int64_t> shape) {
      int64_t c = 1;
      for (auto d : shape) c *= d;
      w.add(n, safetensors::Dtype::BF16, shape, std::vector<uint8_t>(static_cast<size_t>(c * 2), 0x3f));
    };
    t("model.embed_tokens.weight", {512, 8});
    t("model.norm.weight", {8});
    t("model.layers.0.input_layernorm.weight", {8});
    t("model.layers.0.post_attention_layernorm.weight", {8});
    t("model.layers.0.self_attn.q_proj.weight", {bad_q_shape ? 4 : 8, 8});
    t("model.layers.0.self_attn.k_proj.weight", {8, 8});
    t("model.layers.0.self_attn.v_proj.weight", {8, 8});
    t("model.layers.0.self_attn.o_proj.weight", {8, 8});
    t("model.layers.0.mlp.gate_proj.weight", {16, 8});
    t("model.layers.0.mlp.up_proj.weight", {16, 8});
    t("model.layers.0.mlp.down_proj.weight", {8, 16});
    w.write(dir.file("model.safetensors"));
    if (with_tokenizer) std::filesystem::copy_file(moe::testing::fixture("models/tok512.model"), dir.file("tokenizer.model"),
                                                   std::filesystem::copy_options::overwrite_existing);
  }
};

TEST_F(HfDir, OpensADenseBf16Llama) {
  MOE_REQUIRE_FIXTURE("models/tok512.model");
  write_llama();
  EXPECT_TRUE(is_checkpoint_dir(dir.dir()));
  const gguf::File f = open_checkpoint(dir.dir());
  const gguf::TensorInfo* q = f.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::BF16);
  EXPECT_EQ(q->ne[0], 8);
  const gguf::TensorInfo* n = f.find_tensor("blk.0.attn_norm.weight");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->type, GgmlType::F32);  // widened for the kernels
  float v;
  std::memcpy(&v, n->data, 4);
  EXPECT_EQ(v, bf16_to_fp32(0x3f3f));
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);  // tied
  EXPECT_EQ(f.get_bool(kRotateHalfKey), true);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens")->size(), 512u);
}

TEST_F(HfDir, RefusesWhatItCannotRun) {
  MOE_REQUIRE_FIXTURE("models/tok512.model");
  EXPECT_FALSE(is_checkpoint_dir(dir.dir()));
  write_llama(false);
  EXPECT_NE(error().find("tokenizer.model is missing"), std::string::npos);
  write_llama(true, true);
  EXPECT_NE(error().find("q_proj.weight' has shape [4, 8], expected [8, 8]"), std::string::npos);
  write_llama();
  dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":100})");
  EXPECT_NE(error().find("vocab_size 100 is smaller"), std::string::npos);
  dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":512,"rope_scaling":{"type":"yarn"}})");
  EXPECT_NE(error().find("rope_scaling"), std::string::npos);
  dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":512,"quantization_config":{"quant_method":"gptq"}})");
  EXPECT_NE(error().find("gptq"), std::string::npos);
  dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":512,"quantization_config":{"quant_method":"awq","bits":8}})");
  EXPECT_NE(error().find("AWQ bits must be 4"), std::string::npos);
  dir.write("config.json", R"({"architectures":["LlamaForCausalLM"],"hidden_size":-8,"intermediate_size":16,
      "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":512})");
  EXPECT_NE(error().find("hidden_size"), std::string::npos);
  dir.write("config.json", "{");
  EXPECT_NE(error().find("not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace moe::hf
