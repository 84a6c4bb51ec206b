// geometry_test.cpp: presets carry the published sizes, and the tensor list has the shapes GGUF
// converters write.
#include "plan/geometry.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace moe::plan {
namespace {

TEST(Geometry, PublishedParameterCounts) {
  // Mixtral 8x7B: 46.7B parameters, 12.9B used per token (Mistral AI's model card figures, exact
  // values from the checkpoint's tensor shapes).
  const auto& mixtral = find_preset("mixtral-8x7b").hp;
  EXPECT_EQ(parameter_count(mixtral), 46'702'792'704u);
  EXPECT_EQ(active_parameter_count(mixtral), 12'879'925'248u);
  // Mistral 7B v0.1: 7.24B; Llama 3 8B: 8.03B.
  EXPECT_EQ(parameter_count(find_preset("mistral-7b").hp), 7'241'732'096u);
  EXPECT_EQ(parameter_count(find_preset("llama-3-8b").hp), 8'030'261'248u);
  // Mixtral 8x22B: 141B total, 39B active.
  const auto& big = find_preset("mixtral-8x22b").hp;
  EXPECT_NEAR(static_cast<double>(parameter_count(big)), 140.6e9, 0.5e9);
  EXPECT_NEAR(static_cast<double>(active_parameter_count(big)), 39.2e9, 0.5e9);
}

TEST(Geometry, MixtralShapes) {
  const auto& hp = find_preset("MIXTRAL-8x7B").hp;  // case-insensitive
  EXPECT_EQ(hp.head_dim, 128);
  auto ts = tensor_list(hp);
  ASSERT_EQ(ts.size(), 3u + 32u * 10u);
  EXPECT_EQ(ts.front().name, "token_embd.weight");
  EXPECT_EQ(ts.front().ne, (std::vector<int64_t>{4096, 32000}));
  EXPECT_EQ(ts.back().name, "output.weight");
  bool saw_down = false, saw_k = false;
  for (const auto& t : ts) {
    if (t.name == "blk.31.ffn_down_exps.weight") {
      EXPECT_EQ(t.ne, (std::vector<int64_t>{14336, 4096, 8}));
      saw_down = true;
    }
    if (t.name == "blk.0.attn_k.weight") {
      EXPECT_EQ(t.ne, (std::vector<int64_t>{4096, 1024}));
      saw_k = true;
    }
  }
  EXPECT_TRUE(saw_down && saw_k);
}

TEST(Geometry, DenseHasNoRouter) {
  for (const auto& t : tensor_list(find_preset("mistral-7b").hp)) {
    EXPECT_EQ(t.name.find("gate_inp"), std::string::npos);
    EXPECT_EQ(t.name.find("_exps"), std::string::npos);
  }
}

TEST(Geometry, LayersAndErrors) {
  auto hp = with_layers(find_preset("mixtral-8x7b").hp, 4);
  EXPECT_EQ(tensor_list(hp).size(), 3u + 4u * 10u);
  EXPECT_THROW(with_layers(hp, 0), Error);
  EXPECT_THROW(with_layers(hp, 5), Error);
  try {
    find_preset("mixtral-9x9b");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixtral-8x22b"), std::string::npos) << e.what();
  }
  model::HParams bad = hp;
  bad.n_head_kv = 3;
  EXPECT_THROW(tensor_list(bad), Error);
  bad = hp;
  bad.n_expert_used = 9;
  EXPECT_THROW(tensor_list(bad), Error);
}

}  // namespace
}  // namespace moe::plan
