// lora_convert_e2e_test.cpp: `moe convert HF_DIR OUT.gguf --lora DIR[:SCALE]`, the adapters merged into
// a single GGUF (W' = W + scale·B·A in float), against the shared goldens and against the run-time side
// path (`moe logits --lora`) over the same HF base.
//
// Bounds:
//  - F16 output (the default; merged weights rounded once to F16), fast mode: relative L2 <= 5e-3 of
//    tiny-mixtral-lora-*.ref.logits.f32 (the issue's bound for adapters) and every argmax equal.
//  - F32 output (--type F32; the merged values kept in float), Exact mode with an f32 KV cache: within
//    1e-5 of the reference, the bound lora_e2e_test.cpp holds the side path to in the same mode; so the
//    two are within 2e-5 of each other (triangle inequality), which is checked directly too. A q/k delta
//    left in HF row order in the GGUF (not permuted with the base rows) gives errors of order 1e-1.
//  Measured: F16 8.7e-4 (attn) / 7.1e-4 (experts); F32 3.2e-7 / 2.1e-7 from the reference and 3.9e-7 /
//  2.5e-7 from the side path.
//  - `:0` merges nothing: the F32 output's logits equal the plain conversion's, bit for bit.
// Bad adapters fail naming the key (the checks of lora_loader), and no output file is left.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "logits_compare.h"
#include "testutil/fixtures.h"
#include "util/error.h"

namespace moe {
namespace {

using moe::testing::expect_same_argmax;
using moe::testing::fixture;
using moe::testing::read_f32;
using moe::testing::rel_l2;
using moe::testing::run_moe_args;

constexpr int64_t kVocab = 512;
constexpr size_t kPositions = 25;
const char* kHfBase = "models/hf/tiny-mixtral-hf";

// `moe logits MODEL` on the golden tokens with extra arguments ({} on error, the test failed).
std::vector<float> logits(const std::string& model, const std::vector<std::string>& extra, const std::string& tag) {
  const std::string out = moe::testing::temp_path("lora-convert-" + tag + ".f32");
  std::vector<std::string> args = {"logits", model, "--tokens", "@" + fixture("golden/tiny-mixtral.tokens"),
                                   "--out", out, "-t", "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = run_moe_args(args);
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return {};
  auto v = read_f32(out);
  std::filesystem::remove(out);
  return v;
}

std::string convert(const moe::testing::TempDir& dir, const std::string& name, const std::vector<std::string>& extra) {
  const std::string out = dir.file(name);
  std::vector<std::string> args = {"convert", fixture(kHfBase), out, "-q"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = run_moe_args(args);
  EXPECT_EQ(r.status, 0) << r.err;
  return out;
}

const std::vector<std::string> kExact = {"--exact", "--kv-cache-dtype", "f32"};

TEST(LoraConvert, MergedAdaptersMatchTheReferenceAndTheSidePath) {
  MOE_REQUIRE_FIXTURE(std::string(kHfBase) + "/config.json");
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-lora-attn/adapter_model.safetensors");
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-lora-experts/adapter_model.safetensors");
  moe::testing::TempDir dir;
  for (const std::string name : {"attn", "experts"}) {
    SCOPED_TRACE(name);
    const std::string adapter = fixture("models/hf/tiny-mixtral-lora-" + name);
    const auto ref = read_f32(fixture("golden/tiny-mixtral-lora-" + name + ".ref.logits.f32"));
    ASSERT_EQ(ref.size(), kPositions * kVocab);

    const std::string f16 = convert(dir, name + ".F16.gguf", {"--lora", adapter});
    const auto fast = logits(f16, {}, name + "-f16");
    ASSERT_EQ(fast.size(), ref.size());
    EXPECT_LE(rel_l2(fast, ref), 5e-3);
    expect_same_argmax(fast, ref, kVocab);

    const std::string f32 = convert(dir, name + ".F32.gguf", {"--lora", adapter, "--type", "F32"});
    const auto merged = logits(f32, kExact, name + "-f32");
    std::vector<std::string> side_args = {"--lora", adapter};
    side_args.insert(side_args.end(), kExact.begin(), kExact.end());
    const auto side = logits(fixture(kHfBase), side_args, name + "-side");
    ASSERT_EQ(merged.size(), ref.size());
    ASSERT_EQ(side.size(), ref.size());
    EXPECT_LE(rel_l2(merged, ref), 1e-5);
    EXPECT_LE(rel_l2(merged, side), 2e-5);
    ::testing::Test::RecordProperty("f16_error_" + name, cat(rel_l2(fast, ref)));
    ::testing::Test::RecordProperty("f32_error_" + name, cat(rel_l2(merged, ref)));
    ::testing::Test::RecordProperty("f32_vs_side_" + name, cat(rel_l2(merged, side)));
  }
}

TEST(LoraConvert, ZeroScaleAndStacking) {
  MOE_REQUIRE_FIXTURE(std::string(kHfBase) + "/config.json");
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-lora-attn/adapter_model.safetensors");
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-lora-experts/adapter_model.safetensors");
  moe::testing::TempDir dir;
  const std::string attn = fixture("models/hf/tiny-mixtral-lora-attn"), experts = fixture("models/hf/tiny-mixtral-lora-experts");
  const auto plain = logits(convert(dir, "plain.gguf", {"--type", "F32"}), kExact, "plain");
  const auto zero = logits(convert(dir, "zero.gguf", {"--type", "F32", "--lora", attn + ":0"}), kExact, "zero");
  ASSERT_FALSE(plain.empty());
  EXPECT_EQ(zero, plain);  // a zero scale adds exact zeros
  // Both adapters merged at once equal both stacked on the side path (same bound as above).
  std::vector<std::string> side_args = {"--lora", attn, "--lora", experts};
  side_args.insert(side_args.end(), kExact.begin(), kExact.end());
  const auto both = logits(convert(dir, "both.gguf", {"--type", "F32", "--lora", attn, "--lora", experts}), kExact, "both");
  const auto side = logits(fixture(kHfBase), side_args, "both-side");
  ASSERT_EQ(both.size(), side.size());
  EXPECT_LE(rel_l2(both, side), 2e-5);
  EXPECT_GT(rel_l2(both, plain), 1e-2);
}

TEST(LoraConvert, AnAdapterThatDoesNotFitFailsNamingTheKey) {
  MOE_REQUIRE_FIXTURE(std::string(kHfBase) + "/config.json");
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-lora-attn/adapter_model.safetensors");
  moe::testing::TempDir dir;
  const std::string bad = dir.file("bad");
  std::filesystem::create_directories(bad);
  dir.write("bad/adapter_config.json", R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "lm_head"]})");
  std::filesystem::copy_file(fixture("models/hf/tiny-mixtral-lora-attn/adapter_model.safetensors"),
                             bad + "/adapter_model.safetensors");
  const std::string out = dir.file("bad.gguf");
  const auto r = run_moe_args({"convert", fixture(kHfBase), out, "-q", "--lora", bad});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("unknown target module 'lm_head'"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace moe
