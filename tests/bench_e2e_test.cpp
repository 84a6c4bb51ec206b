// bench_e2e_test.cpp: `moe bench` on the bundled model with tiny sizes: the JSON lines carry every
// promised field, finite and positive; the roofline figures agree with each other (roofline tokens/s =
// bandwidth / active bytes, fraction = decode rate / roofline); the active bytes follow from the file's
// tensor sizes (checked against `moe info`'s figure, which omits only the one embedding row); one line
// per batch size; bad flags end in a clean error. The bundled model fits in the last-level cache, so its
// fraction of the DRAM roofline is not bounded by 1 and is not asserted to be.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "testutil/fixtures.h"

namespace moe {
namespace {

// Runs `moe args...` without a shell.
moe::testing::CommandResult run_moe(const std::vector<std::string>& args) { return moe::testing::run_moe_args(args); }

std::string bundled_model() { return moe::testing::source_dir() + "/models/stories260K-moe.gguf"; }

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

void expect_positive(const nlohmann::json& j, const std::string& key) {
  ASSERT_TRUE(j.contains(key)) << key << " missing in " << j.dump();
  ASSERT_TRUE(j[key].is_number()) << key;
  const double v = j[key].get<double>();
  EXPECT_TRUE(std::isfinite(v)) << key;
  EXPECT_GT(v, 0.0) << key;
}

TEST(BenchCli, JsonHasEveryFieldAndConsistentRoofline) {
  const auto r = run_moe({"bench", bundled_model(), "-t", "2", "-p", "16", "-n", "8", "--reps", "2", "--batch", "1,2",
                          "--batch-prompt", "16", "--batch-gen", "4", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;

  const auto& s = lines[0];
  for (const char* key : {"pp_tokens_per_s", "pp_tokens_per_s_min", "pp_tokens_per_s_max", "tg_tokens_per_s",
                          "ttft_ms", "peak_rss_bytes", "active_bytes_per_token", "bandwidth_bytes_per_s",
                          "roofline_tokens_per_s", "roofline_fraction", "cpu_share"})
    expect_positive(s, key);
  EXPECT_EQ(s["threads"], 2);
  EXPECT_EQ(s["reps"], 2);
  EXPECT_EQ(s["n_prompt"], 16);
  EXPECT_EQ(s["n_gen"], 8);
  EXPECT_LE(s["pp_tokens_per_s_min"].get<double>(), s["pp_tokens_per_s"].get<double>());
  EXPECT_GE(s["pp_tokens_per_s_max"].get<double>(), s["pp_tokens_per_s"].get<double>());

  const double bw = s["bandwidth_bytes_per_s"], active = s["active_bytes_per_token"];
  const double roofline = s["roofline_tokens_per_s"], tg = s["tg_tokens_per_s"];
  EXPECT_NEAR(roofline, bw / active, 1e-9 * roofline);
  EXPECT_NEAR(s["roofline_fraction"].get<double>(), tg / roofline, 1e-9 * tg / roofline);
  // Anything between a laptop and a large server; a unit slip (bits, KiB) falls outside.
  EXPECT_GT(bw, 5e8);
  EXPECT_LT(bw, 5e12);
  // The time to the first token includes the whole prompt pass.
  EXPECT_GE(s["ttft_ms"].get<double>() * 1e-3, 0.99 * 16 / s["pp_tokens_per_s_max"].get<double>());
  // The process maps the whole file and allocates buffers: RSS is above the active bytes, and this tiny
  // model stays far below 1 GB.
  EXPECT_GT(s["peak_rss_bytes"].get<double>(), active);
  EXPECT_LT(s["peak_rss_bytes"].get<double>(), 1e9);

  // Active bytes = moe info's bytes/token (everything but the embedding table and unused experts) plus
  // one embedding row (64 F32 values... whatever the file stores: info's figure is within one row).
  const auto info = run_moe({"info", bundled_model()});
  ASSERT_EQ(info.status, 0) << info.err;
  const auto at = info.out.find("bytes/token:");
  ASSERT_NE(at, std::string::npos) << info.out;
  const double info_bytes = std::stod(info.out.substr(at + 12));
  EXPECT_GT(active, info_bytes);
  EXPECT_LT(active - info_bytes, 0.01 * info_bytes) << "more than one embedding row apart";
  const double experts = s["expert_bytes"];
  EXPECT_LT(active, s["file_bytes"].get<double>() - 0.75 * experts) << "6 of 8 experts must not count";

  // The compute roofline is the kernels' time for each type's active weights, and names the bound.
  expect_positive(s, "compute_roofline_tokens_per_s");
  double kernel_seconds = 0;
  ASSERT_TRUE(s["kernels"].is_object() && !s["kernels"].empty()) << s.dump();
  for (const auto& [type, k] : s["kernels"].items()) {
    expect_positive(k, "active_weights_per_token");
    expect_positive(k, "ns_per_256_1_token");
    expect_positive(k, "ns_per_256_per_token_16_tokens");
    kernel_seconds += k["active_weights_per_token"].get<double>() / 256 * k["ns_per_256_1_token"].get<double>() * 1e-9;
  }
  const double compute = s["compute_roofline_tokens_per_s"];
  EXPECT_NEAR(compute, 1 / kernel_seconds, 1e-9 * compute);
  EXPECT_EQ(s["decode_bound"], compute < roofline ? "compute" : "memory");
  // The probe's buffer follows the sizing rule: at least 4 MiB, a whole number of MiB, at most 8 GiB.
  const uint64_t buffer = s["bandwidth_buffer_bytes"];
  EXPECT_GE(buffer, 4u << 20);
  EXPECT_LE(buffer, 8ull << 30);
  EXPECT_EQ(buffer % (1u << 20), 0u);
  EXPECT_TRUE(s["bandwidth_buffer_exceeds_caches"].is_boolean());

  for (size_t i = 1; i < lines.size(); ++i) {
    const auto& b = lines[i];
    EXPECT_EQ(b["batch"], static_cast<int>(i));
    EXPECT_EQ(b["prompt_tokens"], 16);
    EXPECT_EQ(b["gen_tokens"], 4);
    expect_positive(b, "aggregate_tokens_per_s");
    expect_positive(b, "batch_prefill_tokens_per_s");
    EXPECT_NEAR(b["per_sequence_tokens_per_s"].get<double>() * static_cast<double>(i),
                b["aggregate_tokens_per_s"].get<double>(), 1e-9 * b["aggregate_tokens_per_s"].get<double>());
    EXPECT_EQ(b["shared_prompt"], false);
    // The bundled model runs 2 of 8 experts per token: B distinct sequences read 2 to min(8, 2B) per layer.
    const double read = b["experts_read_per_layer_step"];
    EXPECT_GE(read, 2.0);
    EXPECT_LE(read, std::min(8.0, 2.0 * static_cast<double>(i)));
  }
}

// --batch-shared: every sequence gets the same prompt (llama-batched-bench's workload). Greedy decode is
// batch-invariant, so the sequences stay identical and each step's tokens all route to the same two
// experts per layer, exactly; distinct prompts at B = 8 spread over more.
TEST(BenchCli, SharedPromptBatchesRouteAlike) {
  auto run = [](bool shared) {
    std::vector<std::string> args = {"bench", bundled_model(), "-t", "2", "-p", "8", "-n", "2", "--reps", "1",
                                     "--batch", "8", "--batch-prompt", "16", "--batch-gen", "6", "--json"};
    if (shared) args.push_back("--batch-shared");
    const auto r = run_moe(args);
    EXPECT_EQ(r.status, 0) << r.err;
    const auto lines = json_lines(r.out);
    EXPECT_EQ(lines.size(), 2u) << r.out;
    return lines.size() == 2 ? lines[1] : nlohmann::json::object();
  };
  const nlohmann::json shared = run(true), distinct = run(false);
  ASSERT_TRUE(shared.contains("experts_read_per_layer_step")) << shared.dump();
  EXPECT_EQ(shared["shared_prompt"], true);
  EXPECT_EQ(shared["experts_read_per_layer_step"].get<double>(), 2.0);
  EXPECT_EQ(distinct["shared_prompt"], false);
  EXPECT_GT(distinct["experts_read_per_layer_step"].get<double>(), 2.5) << "8 random prompts should spread";
}

TEST(BenchCli, TableNamesEveryFigure) {
  const auto r = run_moe({"bench", bundled_model(), "-t", "1", "-p", "8", "-n", "4", "--reps", "1", "--batch", "3",
                          "--batch-prompt", "8", "--batch-gen", "2"});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* want : {"active weight bytes per token", "read bandwidth", "decode roofline (memory)",
                           "decode roofline (compute)", "-bound here", "pp8", "tg4",
                           "ttft", "peak RSS", "CPU share", "batched decode", "aggregate"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " missing in:\n" << r.out;
}

TEST(BenchCli, BadFlagsAreCleanErrors) {
  const std::string model = bundled_model();
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{"--batch", "0"}, "--batch"},
      {{"--batch", "1,-4"}, "--batch"},
      {{"-p", "0"}, "-p"},
      {{"-n", "0"}, "-n"},
      {{"--reps", "0"}, "--reps"},
      {{"-t", "-1"}, "-t"},
      {{"--kv-cache-dtype", "f12"}, "kv-cache-dtype"},
      {{"--batch-prompt", "0", "--batch", "1"}, "--batch-prompt"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"bench", model};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = run_moe(args);
    EXPECT_EQ(r.status, 1) << c.args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  }
  const auto missing = run_moe({"bench", "/nonexistent/model.gguf", "-p", "4", "-n", "1"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("/nonexistent/model.gguf"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace moe
