// vulkan_e2e_test.cpp: the whole model on a Vulkan device (model/vulkan_backend.h) against the same
// goldens and rules as the CPU (model_e2e_test.cpp), on lavapipe in CI:
//  - logits of every tiny-mixtral type with `--device vulkan --kv-cache-dtype f32` against the float64
//    reference of the dequantized weights within the CPU's Exact bound, 1e-5 relative L2 (the device
//    computes in f32 on dequantized weights, as Exact does on the CPU; its sums are f32 rather than
//    double, about sqrt(n) * 2^-24 ~ 1e-6 relative over the 64..512-term dot products of this model,
//    inside the bound's derivation in src/model/model_test.cpp; measured on lavapipe 6.3e-7 to 6.6e-7
//    for F16, Q4_K_M and Q2_K); every argmax equal to the reference's.
//  - with the default f16 KV cache (F16, Q8_0 and Q4_K_M), the CPU's fast rule: median per-position error at most 1.25x
//    llama.cpp's (which rounds K/V to f16 as well).
//  - greedy `moe run --device vulkan` of stories260K and stories260K-moe: llama.cpp's tokens, as on the CPU.
//  - batch invariance on the device: three sequences interleaved in one batch give bit for bit the
//    logits each gives alone.
//  - split placement (some experts computed on the CPU, --gpu-memory too small for all) gives the
//    all-on-device logits within 1e-5 relative (Exact on the CPU side, so both sides compute in f32 on
//    the same dequantized weights; only the summation order differs); rebalance() moves experts by
//    routing statistics and the logits stay the same.
//  - `moe info --devices` lists the device; `moe bench --device vulkan` reports its copy-shader roofline.
//  - `moe plan --device vulkan` counts the backend's bytes and places as many experts for a budget.
//  - a bad device name, a missing device index, too small a --gpu-memory, a LoRA adapter on the device
//    and a malformed placement give clear errors.
// Without any Vulkan device the tests skip with the reason (they fail instead when CI=true).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kv/cache.h"
#include "logits_compare.h"
#include "model/model.h"
#include "model/vulkan_backend.h"
#include "greedy_golden.h"
#include "testutil/fixtures.h"
#include "util/error.h"
#include "vulkan/vk_testing.h"

namespace moe {
namespace {

using moe::testing::fixture;
using moe::testing::read_f32;
using moe::testing::run_moe;
using moe::testing::temp_path;

constexpr int64_t kVocab = 512;

const char* kTypes[] = {"F16",    "Q8_0",   "Q4_0",   "Q4_1",   "Q5_0",   "Q5_1",   "Q2_K", "Q3_K_S",
                        "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"};

std::string model_path(const std::string& type) { return fixture("models/tiny-mixtral/tiny-mixtral." + type + ".gguf"); }

std::vector<float> device_logits(const std::string& type, const std::string& flags) {
  const std::string out = temp_path("vk-logits-" + type);
  auto r = run_moe(cat("logits '", model_path(type), "' --tokens @'", fixture("golden/tiny-mixtral.tokens"), "' --out '",
                       out, "' -t 2 --device vulkan ", flags));
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return {};
  auto v = read_f32(out);
  std::filesystem::remove(out);
  return v;
}

std::vector<double> per_position(const std::vector<float>& got, const std::vector<float>& ref) {
  std::vector<double> e;
  for (size_t p = 0; p * kVocab < ref.size(); ++p) {
    double n = 0, d = 0;
    for (int64_t v = 0; v < kVocab; ++v) {
      const double r = ref[p * kVocab + v], x = got[p * kVocab + v] - r;
      n += x * x;
      d += r * r;
    }
    e.push_back(std::sqrt(n / d));
  }
  return e;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(VulkanLogits, EveryTypeWithinTheCpuBounds) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.F16.gguf");
  for (std::string type : kTypes) {
    SCOPED_TRACE(type);
    const auto ref = read_f32(fixture("golden/tiny-mixtral." + type + ".ref.logits.f32"));
    const auto llama = read_f32(fixture("golden/tiny-mixtral." + type + ".logits.f32"));
    ASSERT_EQ(ref.size(), 25u * kVocab);

    const auto f32kv = device_logits(type, "--kv-cache-dtype f32");
    ASSERT_EQ(f32kv.size(), ref.size());
    const double err = moe::testing::rel_l2(f32kv, ref);
    RecordProperty("vulkan_error_" + type, cat(err));
    EXPECT_LE(err, 1e-5);
    moe::testing::expect_same_argmax(f32kv, ref, kVocab);

    if (type != "F16" && type != "Q8_0" && type != "Q4_K_M") continue;  // the KV type's path is the same for all
    const auto f16kv = device_logits(type, "");
    ASSERT_EQ(f16kv.size(), ref.size());
    EXPECT_LE(median(per_position(f16kv, ref)), 1.25 * median(per_position(llama, ref)));
  }
}

TEST(VulkanRun, GreedyTextsEqualTheCpus) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("golden/stories260K.greedy.jsonl");
  moe::testing::expect_greedy_ids_match_golden(" --device vulkan");
}

// ---- in-process: the backend through Model ------------------------------------------------------

std::vector<int32_t> tokens_of(int n, int seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((seed * 131 + i * 71 + 7) % kVocab));
  return t;
}

std::unique_ptr<model::Model> device_model(const std::string& type, uint64_t gpu_memory = 0,
                                           model::Precision prec = model::Precision::Exact, int64_t batch = 64) {
  model::ModelOptions o;
  o.n_threads = 2;
  o.device = "vulkan";
  o.gpu_memory = gpu_memory;
  o.precision = prec;
  o.max_batch_tokens = batch;
  return model::Model::load(model_path(type), o);
}

model::VulkanBackend& backend_of(model::Model& m) { return dynamic_cast<model::VulkanBackend&>(m.backend()); }

// Logits of every position of `tokens` as one sequence, in one step.
std::vector<float> prompt_logits(model::Model& m, const std::vector<int32_t>& tokens, kv::KvType kv = kv::KvType::F32) {
  kv::Cache cache(m.kv_geometry(kv), 8);
  model::Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, true);
  model::ForwardResult r;
  m.forward(b, cache, r);
  return r.logits;
}

TEST(VulkanBackend, BatchInvarianceOnTheDevice) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.Q4_K_M.gguf");
  auto m = device_model("Q4_K_M", 0, model::Precision::Exact, 7);
  const std::vector<std::vector<int32_t>> seqs = {tokens_of(6, 1), tokens_of(3, 2), tokens_of(9, 3)};
  // Alone: each sequence token by token in a cache of its own.
  std::vector<std::vector<float>> alone;
  for (const auto& q : seqs) {
    kv::Cache cache(m->kv_geometry(kv::KvType::F16), 4);
    std::vector<float> out;
    model::ForwardResult r;
    for (size_t i = 0; i < q.size(); ++i) {
      model::Batch b;
      b.add(q[i], static_cast<int32_t>(i), 5, true);
      m->forward(b, cache, r);
      out.insert(out.end(), r.logits.begin(), r.logits.end());
    }
    alone.push_back(out);
  }
  // Together: interleaved steps of several sizes (the 7-token chunks split some of them).
  kv::Cache cache(m->kv_geometry(kv::KvType::F16), 16);
  std::vector<std::vector<float>> together(seqs.size());
  std::vector<size_t> next(seqs.size(), 0);
  model::ForwardResult r;
  for (size_t step_tokens : {2, 1, 3, 1, 5}) {
    model::Batch b;
    std::vector<size_t> owner;
    for (size_t q = 0; q < seqs.size(); ++q)
      for (size_t i = 0; i < step_tokens && next[q] < seqs[q].size(); ++i, ++next[q]) {
        b.add(seqs[q][next[q]], static_cast<int32_t>(next[q]), static_cast<int32_t>(100 + q), true);
        owner.push_back(q);
      }
    if (b.size() == 0) continue;
    m->forward(b, cache, r);
    ASSERT_EQ(r.n_outputs, b.size());
    for (int64_t i = 0; i < r.n_outputs; ++i) {
      auto row = r.logits.begin() + i * kVocab;
      together[owner[static_cast<size_t>(i)]].insert(together[owner[static_cast<size_t>(i)]].end(), row, row + kVocab);
    }
  }
  for (size_t q = 0; q < seqs.size(); ++q) EXPECT_EQ(together[q], alone[q]) << "sequence " << q;
}

TEST(VulkanBackend, SplitPlacementGivesTheAllOnDeviceLogits) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.Q4_K_M.gguf");
  const auto tokens = tokens_of(12, 4);
  auto whole = device_model("Q4_K_M");
  const auto all_on_device = prompt_logits(*whole, tokens);
  const model::DevicePlacement& full = backend_of(*whole).placement();
  ASSERT_EQ(full.experts_on_card, full.experts_total);
  ASSERT_GT(full.experts_total, 1);

  // A budget with room for about half the experts (the KV mirror of prompt_logits' cache included).
  kv::Cache probe(whole->kv_geometry(kv::KvType::F32), 8);
  const uint64_t budget = full.fixed_bytes + full.workspace_bytes + probe.bytes() + full.expert_bytes_on_card / 2;
  auto split = device_model("Q4_K_M", budget);
  const auto split_logits = prompt_logits(*split, tokens);
  const model::DevicePlacement& p = backend_of(*split).placement();
  EXPECT_GT(p.experts_on_card, 0);
  EXPECT_LT(p.experts_on_card, p.experts_total);
  ASSERT_EQ(split_logits.size(), all_on_device.size());
  EXPECT_LE(moe::testing::rel_l2(split_logits, all_on_device), 1e-5);
  moe::testing::expect_same_argmax(split_logits, all_on_device, kVocab);

  // Rebalancing by routing statistics keeps the most routed experts on the card, and the logits.
  const auto counts = split->expert_token_counts();
  split->rebalance_experts();
  const model::DevicePlacement& q = backend_of(*split).placement();
  EXPECT_EQ(q.experts_on_card + 0, p.experts_on_card + 0);
  int64_t min_on = INT64_MAX, max_off = -1;
  for (size_t l = 0; l < counts.size(); ++l)
    for (size_t e = 0; e < counts[l].size(); ++e) {
      if (q.on_card[l][e]) min_on = std::min(min_on, counts[l][e]);
      else max_off = std::max(max_off, counts[l][e]);
    }
  EXPECT_GE(min_on, max_off) << "an expert on the CPU was routed more often than one on the card";
  const auto after = prompt_logits(*split, tokens);
  EXPECT_LE(moe::testing::rel_l2(after, all_on_device), 1e-5);

  // An explicit placement: everything on the CPU but expert 0 of each layer.
  std::vector<std::vector<uint8_t>> only0(q.on_card.size(), std::vector<uint8_t>(q.on_card[0].size(), 0));
  for (auto& row : only0) row[0] = 1;
  backend_of(*split).place(only0);
  EXPECT_EQ(backend_of(*split).placement().experts_on_card, static_cast<int64_t>(only0.size()));
  EXPECT_LE(moe::testing::rel_l2(prompt_logits(*split, tokens), all_on_device), 1e-5);
}

// A dense model's FFN is its one expert: with too little memory for it, it runs on the CPU.
TEST(VulkanBackend, DenseFfnOnTheCpuGivesTheSameLogits) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/stories260K.gguf");
  const std::string path = fixture("models/stories260K.gguf");
  auto load = [&](uint64_t gpu_memory) {
    model::ModelOptions o;
    o.n_threads = 2;
    o.device = "vulkan";
    o.gpu_memory = gpu_memory;
    o.precision = model::Precision::Exact;
    o.max_batch_tokens = 16;
    return model::Model::load(path, o);
  };
  const std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 429, 259, 300, 511};
  auto whole = load(0);
  const auto expected = prompt_logits(*whole, tokens);
  const model::DevicePlacement& full = backend_of(*whole).placement();
  kv::Cache probe(whole->kv_geometry(kv::KvType::F32), 8);
  // Room for all but one layer's FFN.
  const uint64_t one_ffn = full.expert_bytes_on_card / static_cast<uint64_t>(full.experts_total);
  auto split = load(full.fixed_bytes + full.workspace_bytes + probe.bytes() + full.expert_bytes_on_card - one_ffn);
  const auto got = prompt_logits(*split, tokens);
  EXPECT_EQ(backend_of(*split).placement().experts_on_card, full.experts_total - 1);
  EXPECT_LE(moe::testing::rel_l2(got, expected), 1e-5);
  moe::testing::expect_same_argmax(got, expected, whole->hparams().n_vocab);
}

TEST(VulkanBackend, OutputsHiddenRoutingAndCountsMatchTheCpu) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.Q8_0.gguf");
  model::ModelOptions co;
  co.n_threads = 2;
  co.precision = model::Precision::Exact;
  auto cpu = model::Model::load(model_path("Q8_0"), co);
  auto dev = device_model("Q8_0");
  const auto tokens = tokens_of(10, 6);
  model::ForwardOptions fo;
  fo.hidden = true;
  fo.routing = true;
  auto run = [&](model::Model& m) {
    kv::Cache cache(m.kv_geometry(kv::KvType::F32), 4);
    model::Batch b;
    for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], static_cast<int32_t>(i), 0, i == 3 || i == 9);
    model::ForwardResult r;
    m.forward(b, cache, r, fo);
    return r;
  };
  const model::ForwardResult a = run(*cpu), b = run(*dev);
  ASSERT_EQ(b.n_outputs, 2);
  EXPECT_EQ(b.output_index, a.output_index);
  EXPECT_LE(moe::testing::rel_l2(b.logits, a.logits), 1e-5);
  EXPECT_LE(moe::testing::rel_l2(b.hidden, a.hidden), 1e-5);
  EXPECT_EQ(b.routing_experts, a.routing_experts);
  for (size_t i = 0; i < a.routing_weights.size(); ++i) EXPECT_NEAR(b.routing_weights[i], a.routing_weights[i], 1e-5);
  EXPECT_EQ(dev->expert_token_counts(), cpu->expert_token_counts());
}

// `moe plan --device vulkan` applies the backend's placement rule to the file's layout: for the same
// budget, context and batch it counts the bytes the backend counts and puts as many experts on the card.
TEST(VulkanPlan, PlanPlacesWhatTheBackendPlaces) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  (void)ctx;
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.Q4_K_M.gguf");
  auto whole = device_model("Q4_K_M", 0, model::Precision::Exact, 512);
  const model::DevicePlacement full = backend_of(*whole).placement();
  kv::Cache cache(whole->kv_geometry(kv::KvType::F16), kv::Cache::blocks_for_tokens(256));
  const uint64_t budget = full.fixed_bytes + full.workspace_bytes + cache.bytes() + full.expert_bytes_on_card / 3;
  auto r = run_moe(cat("plan '", model_path("Q4_K_M"), "' -c 256 --device vulkan --gpu-memory ", budget, " --json"));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["device_fixed_bytes"].get<uint64_t>(), full.fixed_bytes);
  EXPECT_EQ(j["device_workspace_bytes"].get<uint64_t>(), full.workspace_bytes);
  EXPECT_EQ(j["device_kv_bytes"].get<uint64_t>(), cache.bytes());

  auto split = device_model("Q4_K_M", budget, model::Precision::Exact, 512);
  model::Batch b;
  b.add(1, 0, 0, true);
  model::ForwardResult res;
  split->forward(b, cache, res);  // binds the cache: the KV mirror joins the budget
  const model::DevicePlacement& p = backend_of(*split).placement();
  EXPECT_EQ(j["experts_on_device"].get<int64_t>(), p.experts_on_card);
  EXPECT_EQ(j["experts_total"].get<int64_t>(), p.experts_total);
  EXPECT_LT(p.experts_on_card, p.experts_total);
  EXPECT_GT(p.experts_on_card, 0);
}

// `moe info --devices` lists the CPU and the device; `moe bench --device vulkan` measures the device's
// copy bandwidth for its roofline and reports the placement.
TEST(VulkanCli, InfoDevicesAndBench) {
  MOE_VK_CONTEXT_OR_SKIP(ctx);
  MOE_REQUIRE_FIXTURE("models/stories260K-moe.gguf");
  auto info = run_moe("info --devices");
  ASSERT_EQ(info.status, 0) << info.err;
  EXPECT_NE(info.out.find("cpu "), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("vulkan:0 "), std::string::npos) << info.out;
  EXPECT_NE(info.out.find(ctx.info().name), std::string::npos) << info.out;

  auto r = run_moe(cat("bench '", fixture("models/stories260K-moe.gguf"),
                       "' --device vulkan -p 8 -n 4 --batch 2 --batch-prompt 4 --batch-gen 2 --reps 1 --json"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream lines(r.out);
  std::string first;
  std::getline(lines, first);
  const auto j = nlohmann::json::parse(first);
  EXPECT_EQ(j["device"], "vulkan");
  EXPECT_EQ(j["bandwidth_source"], "device copy shader (read + write)");
  EXPECT_GT(j["bandwidth_bytes_per_s"].get<double>(), 0);
  EXPECT_GT(j["tg_tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(j["experts_on_device"], j["experts_total"]);
  EXPECT_NEAR(j["roofline_fraction"].get<double>(),
              j["tg_tokens_per_s"].get<double>() / j["roofline_tokens_per_s"].get<double>(), 1e-9);
}

TEST(VulkanErrors, BadDeviceNamesAndTooLittleMemoryAreClear) {
  MOE_REQUIRE_FIXTURE("models/tiny-mixtral/tiny-mixtral.Q4_0.gguf");
  auto expect_error = [](const std::string& args, const std::string& needle) {
    auto r = run_moe(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
  };
  const std::string base = cat("logits '", model_path("Q4_0"), "' --tokens 1,2,3 --out '", temp_path("vk-err"), "' ");
  expect_error(base + "--device gpu", "unknown device 'gpu'");
  expect_error(base + "--device vulkan:x", "unknown device 'vulkan:x'");
  expect_error(base + "--device vulkan --gpu-memory lots", "--gpu-memory");
  std::string why;
  if (vk::list_devices(&why).empty()) {
    expect_error(base + "--device vulkan", "no Vulkan device");
    return;
  }
  expect_error(base + "--device vulkan:99", "no Vulkan device 99");
  expect_error(base + "--device vulkan --gpu-memory 4096", "cannot hold the model's attention");
  // LoRA adapters run on the CPU only: refused by name on the device.
  if (moe::testing::fixture_exists("models/hf/tiny-mixtral-lora-attn/adapter_model.safetensors"))
    expect_error(base + "--device vulkan --lora '" + fixture("models/hf/tiny-mixtral-lora-attn") + "'",
                 "LoRA adapters run on the CPU backend only (--device cpu)");
  // A placement of the wrong shape is refused.
  model::ModelOptions o;
  o.device = "vulkan";
  auto m = model::Model::load(model_path("Q4_0"), o);
  EXPECT_THROW(backend_of(*m).place(std::vector<std::vector<uint8_t>>(1)), Error);
}

}  // namespace
}  // namespace moe
