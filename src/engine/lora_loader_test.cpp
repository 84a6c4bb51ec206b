// lora_loader_test.cpp: PEFT adapter directories and the server's adapter registry, with adapters this
// test writes (the project's safetensors writer) for the bundled default model: adapter_config.json's
// fields and refusals, `--lora PATH[:SCALE]`, and the registry's start-up check, lazy loading, failure
// isolation and least-recently-used bound.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "engine/loaded_model.h"
#include "engine/lora_loader.h"
#include "model/model.h"
#include "safetensors/safetensors.h"
#include "testutil/fixtures.h"
#include "util/error.h"
#include "util/fp16.h"

namespace moe::engine {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(LoraConfig, FieldsDefaultsAndRefusals) {
  auto c = parse_lora_config(R"({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "w2"]})", "cfg");
  EXPECT_EQ(c.rank, 16);
  EXPECT_DOUBLE_EQ(c.scale(), 2.0);
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"q_proj", "w2"}));
  c = parse_lora_config(R"({"r": 16, "lora_alpha": 32, "use_rslora": true, "bias": "none", "rank_pattern": {}})", "cfg");
  EXPECT_DOUBLE_EQ(c.scale(), 8.0);  // alpha / sqrt(r)
  EXPECT_DOUBLE_EQ(parse_lora_config(R"({"r": 4})", "cfg").scale(), 1.0);
  const std::pair<const char*, const char*> bad[] = {
      {R"({"lora_alpha": 8})", "cfg: 'r' (the rank) is missing"},
      {R"({"r": 0})", "cfg: rank r = 0"},
      {R"({"r": 4, "peft_type": "IA3"})", "peft_type is \"IA3\""},
      {R"({"r": 4, "use_dora": true})", "'use_dora' is true"},
      {R"({"r": 4, "fan_in_fan_out": true})", "'fan_in_fan_out' is true"},
      {R"({"r": 4, "bias": "all"})", "'bias' is \"all\""},
      {R"({"r": 4, "rank_pattern": {"q_proj": 8}})", "'rank_pattern' is set"},
      {R"({"r": 4, "modules_to_save": ["lm_head"]})", "'modules_to_save' is set"},
      {R"({"r": 4, "target_modules": "all-linear"})", "is the pattern \"all-linear\""},
      {R"({"r": 4, "target_modules": [3]})", "holds 3, not a module name"},
      {R"([1, 2])", "not a JSON object"},
      {"{", "not valid JSON"},
  };
  for (const auto& [text, needle] : bad) {
    const std::string msg = error_of([&] { parse_lora_config(text, "cfg"); });
    EXPECT_NE(msg.find(needle), std::string::npos) << text << " -> " << msg;
  }
}

TEST(LoraConfig, LoraArgumentScale) {
  EXPECT_EQ(parse_lora_arg("dir").path, "dir");
  EXPECT_FLOAT_EQ(parse_lora_arg("dir").scale, 1.0f);
  EXPECT_EQ(parse_lora_arg("a/b:0.25").path, "a/b");
  EXPECT_FLOAT_EQ(parse_lora_arg("a/b:0.25").scale, 0.25f);
  EXPECT_EQ(parse_lora_arg("c:/x").path, "c:/x");  // not a number: part of the path
  EXPECT_FLOAT_EQ(parse_lora_arg("c:/x").scale, 1.0f);
  EXPECT_NE(error_of([] { parse_lora_arg(":2"); }).find("no adapter directory"), std::string::npos);
  EXPECT_EQ(LoraRegistry::parse_module("name=some/dir").path, "some/dir");
  EXPECT_NE(error_of([] { LoraRegistry::parse_module("nodir"); }).find("expected NAME=PATH"), std::string::npos);
}

// A rank-2 F16 adapter on q/v of every layer of `hp`; `poison` puts a NaN into one value.
void write_adapter(const std::string& dir, const model::HParams& hp, bool poison, int64_t q_rows = 0) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  safetensors::Writer w;
  auto add = [&](const std::string& n, int64_t rows, int64_t cols, bool nan) {
    std::vector<uint8_t> bytes;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const uint16_t h = fp32_to_fp16(nan && i == 1 ? NAN : normal(rng));
      bytes.push_back(static_cast<uint8_t>(h));
      bytes.push_back(static_cast<uint8_t>(h >> 8));
    }
    w.add(n, safetensors::Dtype::F16, {rows, cols}, std::move(bytes));
  };
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const std::string p = cat("base_model.model.model.layers.", l, ".self_attn.");
    add(p + "q_proj.lora_A.weight", 2, hp.n_embd, poison && l == hp.n_layer - 1);
    add(p + "q_proj.lora_B.weight", q_rows ? q_rows : hp.n_head * hp.head_dim, 2, false);
    add(p + "v_proj.lora_A.weight", 2, hp.n_embd, false);
    add(p + "v_proj.lora_B.weight", hp.n_head_kv * hp.head_dim, 2, false);
  }
  w.write(dir + "/adapter_model.safetensors");
  std::ofstream(dir + "/adapter_config.json") << R"({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]})";
}

TEST(LoraRegistry, ChecksAtStartLoadsOnFirstUseIsolatesFailuresAndBoundsMemory) {
  LoadOptions lo;
  lo.n_threads = 1;
  auto base = load_model(moe::testing::source_dir() + "/models/stories260K-moe.gguf", lo);
  const model::HParams& hp = base->model->hparams();
  moe::testing::TempDir tmp;
  write_adapter(tmp.file("a"), hp, false);
  write_adapter(tmp.file("b"), hp, false);
  write_adapter(tmp.file("nan"), hp, true);
  write_adapter(tmp.file("narrow"), hp, false, hp.n_head * hp.head_dim / 2);

  const std::string msg = error_of([&] { LoraRegistry r(base, {{"a", tmp.file("a")}, {"narrow", tmp.file("narrow")}}); });
  EXPECT_NE(msg.find("--lora-modules: the adapter 'narrow' cannot be used"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q_proj.lora_B.weight has shape"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { LoraRegistry r(base, {{"a", tmp.file("a")}, {"a", tmp.file("b")}}); }).find("given twice"),
            std::string::npos);

  LoraRegistry reg(base, {{"a", tmp.file("a")}, {"b", tmp.file("b")}, {"nan", tmp.file("nan")}}, 1);
  const uint64_t one = reg.declared_bytes("a");
  // Per layer, F16 (2 bytes) rank 2: A of q and v (2 x n_embd each), B of q (q_dim x 2) and v (kv_dim x 2).
  EXPECT_EQ(one, static_cast<uint64_t>(hp.n_layer * 2 * 2 * (2 * hp.n_embd + hp.n_head * hp.head_dim + hp.n_head_kv * hp.head_dim)));
  EXPECT_EQ(reg.declared_bytes(), 3 * one);
  EXPECT_EQ(reg.loaded_count(), 0);  // nothing read yet: the NaN is not found at start

  std::string nan_msg = error_of([&] { reg.get("nan"); });
  EXPECT_NE(nan_msg.find("the LoRA adapter 'nan' cannot be loaded"), std::string::npos) << nan_msg;
  EXPECT_NE(nan_msg.find(cat("layers.", hp.n_layer - 1, ".self_attn.q_proj.lora_A.weight holds NaN at row 0, column 1")),
            std::string::npos)
      << nan_msg;
  EXPECT_NE(error_of([&] { reg.get("zzz"); }).find("no LoRA adapter is named 'zzz'"), std::string::npos);

  auto a = reg.get("a");
  EXPECT_EQ(reg.get("a"), a);  // loaded once
  EXPECT_EQ(reg.loaded_count(), 1);
  EXPECT_EQ(reg.loaded_bytes(), one);
  auto b = reg.get("b");  // over the bound of 1, but `a` is in use: both stay
  EXPECT_EQ(reg.loaded_count(), 2);
  a.reset();
  b.reset();
  auto again = reg.get("b");  // now `a` is idle and least recently used: dropped
  EXPECT_EQ(reg.loaded_count(), 1);
  EXPECT_EQ(reg.loaded_bytes(), one);
  EXPECT_NE(reg.get("a"), nullptr);  // and loaded again when asked for
}

}  // namespace
}  // namespace moe::engine
