// metrics_test.cpp: the Prometheus text format of /metrics: HELP/TYPE lines, cumulative histogram
// buckets ending in +Inf with _sum and _count, label sets, and the engine's numbers passed through.
#include "server/metrics.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

namespace moe::server {
namespace {

// Every non-comment line is `name{labels} value` or `name value`, and every metric has HELP and TYPE.
void expect_valid_exposition(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN)$)");
  std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  while (std::getline(in, line)) {
    if (line.starts_with("#"))
      EXPECT_TRUE(std::regex_match(line, comment)) << line;
    else
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
  }
  EXPECT_TRUE(text.ends_with("\n"));
}

TEST(ServerMetrics, HistogramIsCumulative) {
  Histogram h({0.1, 1.0});
  h.observe(0.05);
  h.observe(0.1);  // on the bound: le is inclusive
  h.observe(0.5);
  h.observe(7);
  std::string out;
  h.render(out, "x_seconds", "help");
  EXPECT_NE(out.find("# TYPE x_seconds histogram\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_bucket{le=\"0.1\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{le=\"1\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_sum 7.65\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_count 4\n"), std::string::npos) << out;
  EXPECT_EQ(h.count(), 4u);
}

TEST(ServerMetrics, RenderHasEveryFamilyAndValidFormat) {
  Metrics m;
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 200);
  m.count_request("/v1/chat/completions", 400);
  m.count_request("/some/unknown/path", 404);
  m.count_request("/v1/models/foo", 404);
  m.observe_time_to_first_token(0.02);
  m.observe_inter_token_latency(0.03, 3);
  engine::Stats s;
  s.running = 2;
  s.waiting = 1;
  s.kv_blocks_total = 100;
  s.kv_blocks_used = 30;
  s.prefix_cache_queries = 8;
  s.prefix_cache_hits = 6;
  s.prompt_tokens_total = 123;
  s.generated_tokens_total = 45;
  s.expert_tokens = {{1, 2}, {3, 4}};
  std::string text = m.render(s);
  expect_valid_exposition(text);
  auto has = [&](const std::string& line) { EXPECT_NE(text.find(line + "\n"), std::string::npos) << line << "\n" << text; };
  has("moe_http_requests_total{route=\"/v1/chat/completions\",code=\"200\"} 2");
  has("moe_http_requests_total{route=\"/v1/chat/completions\",code=\"400\"} 1");
  has("moe_http_requests_total{route=\"other\",code=\"404\"} 1");
  has("moe_http_requests_total{route=\"/v1/models/{model}\",code=\"404\"} 1");
  has("moe_time_to_first_token_seconds_count 1");
  has("moe_inter_token_latency_seconds_count 3");
  has("moe_inter_token_latency_seconds_bucket{le=\"0.01\"} 3");
  has("moe_prompt_tokens_total 123");
  has("moe_generation_tokens_total 45");
  has("moe_num_requests_running 2");
  has("moe_num_requests_waiting 1");
  has("moe_kv_blocks_used 30");
  has("moe_kv_blocks_free 70");
  has("moe_prefix_cache_hits_total 6");
  has("moe_prefix_cache_queries_total 8");
  has("moe_prefix_cache_hit_rate 0.75");
  has("moe_expert_tokens_total{layer=\"1\",expert=\"0\"} 3");
  has("moe_expert_tokens_total{layer=\"0\",expert=\"1\"} 2");
}

// The process's own numbers: this test process has some megabytes resident, a peak no lower than that,
// and has used some CPU time by now (the loop below makes sure of a measurable amount).
TEST(ServerMetrics, ProcessMemoryAndCpu) {
  volatile double sink = 0;
  for (int i = 0; i < 20'000'000; ++i) sink = sink + i * 1e-9;
  std::string text = Metrics().render(engine::Stats{});
  expect_valid_exposition(text);
  auto value = [&](const std::string& name) {
    size_t at = text.find("\n" + name + " ");
    EXPECT_NE(at, std::string::npos) << name;
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + name.size() + 2));
  };
  double rss = value("process_resident_memory_bytes");
  double peak = value("moe_process_peak_resident_memory_bytes");
  double cpu = value("process_cpu_seconds_total");
  EXPECT_GT(rss, 1 << 20);
  EXPECT_LT(rss, 64.0 * (1 << 30));
  EXPECT_GE(peak, rss);
  EXPECT_GT(cpu, 0.0);
}

TEST(ServerMetrics, HitRateIsZeroBeforeAnyQuery) {
  Metrics m;
  std::string text = m.render(engine::Stats{});
  EXPECT_NE(text.find("moe_prefix_cache_hit_rate 0\n"), std::string::npos);
  expect_valid_exposition(text);
}

TEST(ServerMetrics, ProcessGaugesRenderAfterTheEngineFiguresAndTakeTheLatestValue) {
  set_process_gauge("moe_test_pool_bytes", "A test gauge.", 1234);
  set_process_gauge("moe_test_fraction", "Another.", 0.9);
  set_process_gauge("moe_test_pool_bytes", "A test gauge.", 5678);
  Metrics m;
  const std::string out = m.render(engine::Stats{});
  expect_valid_exposition(out);
  EXPECT_NE(out.find("# TYPE moe_test_pool_bytes gauge\nmoe_test_pool_bytes 5678\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("moe_test_pool_bytes 1234"), std::string::npos);
  EXPECT_NE(out.find("moe_test_fraction 0.9\n"), std::string::npos);
  EXPECT_GT(out.find("moe_test_pool_bytes"), out.find("moe_kv_blocks_total"));
}

}  // namespace
}  // namespace moe::server
