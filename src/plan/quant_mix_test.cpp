// quant_mix_test.cpp: the per-tensor choices of each quantization name. The full comparison with
// llama.cpp's files (every tensor of every reference file) is in tests/quantize_e2e_test.cpp; here the
// rules are pinned at Mixtral geometry, where the reference files cannot show them (32 layers).
#include "plan/quant_mix.h"

#include <gtest/gtest.h>

#include <map>

#include "plan/geometry.h"
#include "plan/layout.h"
#include "util/error.h"

namespace moe::plan {
namespace {

GgmlType pick(const char* mix, const model::HParams& hp, const std::string& name, std::vector<int64_t> ne) {
  return choose_type(find_mix(mix), hp, name, ne).type;
}

TEST(QuantMix, NamesAndFileTypes) {
  EXPECT_EQ(find_mix("q4_k_m").name, "Q4_K_M");
  EXPECT_EQ(find_mix("Q4_K_M").file_type, 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_EQ(find_mix("Q8_0").file_type, 7u);
  EXPECT_EQ(find_mix("Q2_K").file_type, 10u);
  EXPECT_EQ(find_mix("F16").file_type, 1u);
  EXPECT_EQ(find_mix("BF16").file_type, 32u);
  EXPECT_EQ(mix_for_file_type(17)->name, "Q5_K_M");
  EXPECT_EQ(mix_for_file_type(4), nullptr);
  try {
    find_mix("Q4_K_X");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K_M"), std::string::npos) << e.what();
  }
}

TEST(QuantMix, Classify) {
  EXPECT_EQ(classify_tensor("blk.12.ffn_down_exps.weight").role, TensorRole::FfnDown);
  EXPECT_EQ(classify_tensor("blk.12.ffn_down_exps.weight").layer, 12);
  EXPECT_EQ(classify_tensor("blk.3.ffn_down.7.weight").role, TensorRole::FfnDown);  // Dec-2023 per-expert
  EXPECT_EQ(classify_tensor("blk.3.ffn_down.7.weight").layer, 3);
  EXPECT_EQ(classify_tensor("blk.0.ffn_gate_inp.weight").role, TensorRole::Router);
  EXPECT_EQ(classify_tensor("blk.0.ffn_gate.weight").role, TensorRole::FfnGate);
  EXPECT_EQ(classify_tensor("blk.0.attn_norm.weight").role, TensorRole::Norm);
  EXPECT_EQ(classify_tensor("output_norm.weight").role, TensorRole::Norm);
  EXPECT_EQ(classify_tensor("output.weight").role, TensorRole::Output);
  EXPECT_EQ(classify_tensor("blkx.0.attn_q.weight").role, TensorRole::Other);
  EXPECT_EQ(classify_tensor("blk..attn_q.weight").role, TensorRole::Other);
}

TEST(QuantMix, MixtralQ4KM) {
  const auto& hp = find_preset("mixtral-8x7b").hp;
  // Down projections: Q6_K in the first and last 4 layers and every third layer between (16 of 32).
  int more = 0;
  for (int l = 0; l < 32; ++l) {
    GgmlType t = pick("Q4_K_M", hp, cat("blk.", l, ".ffn_down_exps.weight"), {14336, 4096, 8});
    EXPECT_TRUE(t == GgmlType::Q6_K || t == GgmlType::Q4_K);
    more += t == GgmlType::Q6_K;
  }
  EXPECT_EQ(more, 16);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.ffn_down_exps.weight", {14336, 4096, 8}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.6.ffn_down_exps.weight", {14336, 4096, 8}), GgmlType::Q6_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_k.weight", {4096, 1024}), GgmlType::Q8_0);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q8_0);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q5_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_q.weight", {4096, 4096}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.ffn_gate_inp.weight", {4096, 8}), GgmlType::F32);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.ffn_norm.weight", {4096}), GgmlType::F32);
  EXPECT_EQ(pick("Q4_K_M", hp, "output.weight", {4096, 32000}), GgmlType::Q6_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "token_embd.weight", {4096, 32000}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q8_0", hp, "output.weight", {4096, 32000}), GgmlType::Q8_0);
  EXPECT_EQ(pick("F16", hp, "output.weight", {4096, 32000}), GgmlType::F16);
  EXPECT_EQ(pick("F16", hp, "blk.0.ffn_gate_inp.weight", {4096, 8}), GgmlType::F32);
}

TEST(QuantMix, DenseMistralRules) {
  const auto& hp = find_preset("mistral-7b").hp;  // 32 heads / 8 KV heads: n_gqa 4
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.0.attn_v.weight", {4096, 1024}), GgmlType::Q6_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_k.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q2_K", hp, "blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q2_K", hp, "blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q3_K);
  EXPECT_EQ(pick("Q3_K_M", hp, "blk.1.attn_v.weight", {4096, 1024}), GgmlType::Q5_K);
  EXPECT_EQ(pick("Q3_K_M", hp, "blk.2.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q3_K_M", hp, "blk.1.ffn_down.weight", {14336, 4096}), GgmlType::Q5_K);
  EXPECT_EQ(pick("Q3_K_M", hp, "blk.2.ffn_down.weight", {14336, 4096}), GgmlType::Q4_K);
  EXPECT_EQ(pick("Q4_K_S", hp, "blk.3.ffn_down.weight", {14336, 4096}), GgmlType::Q5_K);
  EXPECT_EQ(pick("Q4_K_S", hp, "blk.4.ffn_down.weight", {14336, 4096}), GgmlType::Q4_K);
}

TEST(QuantMix, BlockSizeFallbacks) {
  const auto& hp = find_preset("mixtral-8x7b").hp;
  // Rows of 172 (stories260K's n_ff) fit no block: F16. Rows of 64 fit 32-blocks, not 256-blocks.
  auto c = choose_type(find_mix("Q4_K_M"), hp, "blk.0.ffn_gate_exps.weight", std::vector<int64_t>{64, 172, 8});
  EXPECT_EQ(c.type, GgmlType::Q5_0);
  EXPECT_EQ(c.wanted, GgmlType::Q4_K);
  EXPECT_TRUE(c.fell_back());
  EXPECT_EQ(pick("Q2_K", hp, "blk.0.ffn_gate_exps.weight", {64, 172, 8}), GgmlType::Q4_0);
  EXPECT_EQ(pick("Q5_K_S", hp, "blk.0.ffn_gate_exps.weight", {64, 172, 8}), GgmlType::Q5_1);
  EXPECT_EQ(pick("Q6_K", hp, "blk.0.ffn_gate_exps.weight", {64, 172, 8}), GgmlType::Q8_0);
  EXPECT_EQ(pick("Q4_K_M", hp, "blk.0.ffn_down_exps.weight", {172, 64, 8}), GgmlType::F16);
  EXPECT_EQ(pick("Q4_0", hp, "blk.0.ffn_down_exps.weight", {172, 64, 8}), GgmlType::F16);
  // The head with rows that do not fit the mix's block: Q8_0 (llama.cpp's rule), or F16 below 32.
  EXPECT_EQ(pick("Q4_K_M", hp, "output.weight", {64, 512}), GgmlType::Q8_0);
  EXPECT_EQ(pick("Q4_K_M", hp, "output.weight", {48, 512}), GgmlType::F16);
  // Tied embeddings: without output.weight the embedding is the head.
  EXPECT_EQ(choose_type(find_mix("Q4_K_M"), hp, "token_embd.weight", std::vector<int64_t>{4096, 32000}, false).type,
            GgmlType::Q6_K);
}

TEST(QuantMix, MixtralSizesOrdered) {
  // Planned data bytes grow along quant_mixes() (smallest first; Q5_0 and Q5_K_S tie at 5.5 bits per weight, F16 and BF16 too), and Q4_K_M is the
  // 28.45 GB the issue quotes for today's MoE mix: 28,447,727,616 bytes by hand (tensor by tensor:
  // 16 down projections at Q6_K, K/V at Q8_0, attention output Q5_K, head Q6_K, the rest Q4_K).
  const auto& hp = find_preset("mixtral-8x7b").hp;
  const Vocab vocab = synthetic_vocab(hp.n_vocab);
  uint64_t prev = 0;
  std::map<std::string, uint64_t> bytes;
  for (const auto& mix : quant_mixes()) {
    auto layout = layout_of_synth(hp, mix, vocab);
    bytes[mix.name] = layout.tensor_bytes;
    EXPECT_GE(layout.tensor_bytes, prev) << mix.name;
    prev = layout.tensor_bytes;
  }
  EXPECT_EQ(bytes["Q4_K_M"], 28'447'727'616u);
  EXPECT_EQ(bytes["F16"], bytes["BF16"]);
  EXPECT_EQ(bytes["Q5_0"], bytes["Q5_K_S"]);
  EXPECT_LT(bytes["Q4_K_S"], bytes["Q4_K_M"]);
  EXPECT_LT(bytes["Q5_K_S"], bytes["Q5_K_M"]);
}

}  // namespace
}  // namespace moe::plan
