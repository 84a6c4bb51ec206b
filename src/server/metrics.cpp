// metrics.cpp: Prometheus text rendering (see metrics.h). Values print with enough digits to round-trip;
// label values come from a fixed set (routes) or are integers, so nothing needs escaping.
#include "server/metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace moe::server {

namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {  // integers as integers, not 1e+02
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // Else the shortest form that reads back as the same double ("0.1", not "0.10000000000000001").
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void scalar(std::string& out, const std::string& name, const char* type, const std::string& help, double v) {
  header(out, name, type, help);
  out += name + " " + number(v) + "\n";
}

constexpr std::array<std::string_view, 9> kRoutes = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/tokenize",
    "/detokenize", "/health", "/metrics", "/v1/models/{model}"};

// This process's resident and peak resident memory (VmRSS, VmHWM of /proc/self/status) and CPU time.
struct ProcessStats {
  double rss_bytes = 0, peak_rss_bytes = 0, cpu_seconds = 0;
};

ProcessStats process_stats() {
  ProcessStats p;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    double* into = line.starts_with("VmRSS:") ? &p.rss_bytes : line.starts_with("VmHWM:") ? &p.peak_rss_bytes : nullptr;
    if (!into) continue;
    std::istringstream fields(line.substr(6));
    double kib = 0;
    if (fields >> kib) *into = kib * 1024;
  }
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) == 0)
    p.cpu_seconds = double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  return p;
}

struct ProcessGauge {
  std::string name, help;
  double value;
};
std::mutex g_process_gauges_mu;
std::vector<ProcessGauge>& process_gauges() {
  static std::vector<ProcessGauge> gauges;
  return gauges;
}

}  // namespace

void set_process_gauge(const std::string& name, const std::string& help, double value) {
  std::lock_guard lock(g_process_gauges_mu);
  for (auto& g : process_gauges())
    if (g.name == name) {
      g.help = help;
      g.value = value;
      return;
    }
  process_gauges().push_back({name, help, value});
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  if (!std::isfinite(value) || value < 0) value = 0;
  size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::count_request(std::string_view route, int status) {
  std::string_view label = "other";
  for (auto r : kRoutes)
    if (r == route) label = r;
  if (route.starts_with("/v1/models/")) label = "/v1/models/{model}";
  std::lock_guard lock(mu_);
  ++requests_[{std::string(label), status}];
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds, int64_t tokens) {
  if (tokens <= 0) return;
  std::lock_guard lock(mu_);
  for (int64_t i = 0; i < tokens; ++i) itl_.observe(seconds / double(tokens));
}

std::string Metrics::render(const engine::Stats& s) const {
  std::string out;
  {
    std::lock_guard lock(mu_);
    header(out, "moe_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (const auto& [key, n] : requests_)
      out += "moe_http_requests_total{route=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"} " +
             std::to_string(n) + "\n";
    ttft_.render(out, "moe_time_to_first_token_seconds",
                 "Seconds from a request's submission to its first generated token.");
    itl_.render(out, "moe_inter_token_latency_seconds", "Seconds between successive generated tokens.");
  }
  scalar(out, "moe_prompt_tokens_total", "counter", "Prompt tokens processed.", double(s.prompt_tokens_total));
  scalar(out, "moe_generation_tokens_total", "counter", "Tokens generated.", double(s.generated_tokens_total));
  scalar(out, "moe_num_requests_running", "gauge", "Sequences running in the engine.", double(s.running));
  scalar(out, "moe_num_requests_waiting", "gauge", "Requests waiting for a slot.", double(s.waiting));
  scalar(out, "moe_kv_blocks_used", "gauge", "KV cache blocks in use.", double(s.kv_blocks_used));
  scalar(out, "moe_kv_blocks_free", "gauge", "KV cache blocks free.",
         double(std::max<int64_t>(0, s.kv_blocks_total - s.kv_blocks_used)));
  scalar(out, "moe_kv_blocks_total", "gauge", "KV cache blocks in the pool.", double(s.kv_blocks_total));
  scalar(out, "moe_prefix_cache_queries_total", "counter", "Prompt blocks looked up in the prefix cache.",
         double(s.prefix_cache_queries));
  scalar(out, "moe_prefix_cache_hits_total", "counter", "Prompt blocks found in the prefix cache.",
         double(s.prefix_cache_hits));
  scalar(out, "moe_prefix_cache_hit_rate", "gauge", "Prefix cache hits / queries since start (0 before any query).",
         s.prefix_cache_queries > 0 ? double(s.prefix_cache_hits) / double(s.prefix_cache_queries) : 0.0);
  scalar(out, "moe_preemptions_total", "counter", "Sequences preempted (recomputed later) for lack of KV blocks.",
         double(s.preemptions));
  scalar(out, "moe_lora_adapters_loaded", "gauge", "LoRA adapters held in memory (loaded on first use).",
         double(s.lora_adapters_loaded));
  scalar(out, "moe_lora_adapter_bytes", "gauge", "Bytes of the LoRA adapters held in memory.",
         double(s.lora_adapter_bytes));
  header(out, "moe_expert_tokens_total", "counter", "Tokens routed to each expert of each layer.");
  for (size_t layer = 0; layer < s.expert_tokens.size(); ++layer)
    for (size_t e = 0; e < s.expert_tokens[layer].size(); ++e)
      out += "moe_expert_tokens_total{layer=\"" + std::to_string(layer) + "\",expert=\"" + std::to_string(e) +
             "\"} " + std::to_string(s.expert_tokens[layer][e]) + "\n";
  // The standard process metrics of Prometheus clients, and the peak, for memory and load checks
  // (benchmarks, the load test) from outside the process.
  ProcessStats p = process_stats();
  scalar(out, "process_resident_memory_bytes", "gauge", "Resident memory of the server process, in bytes.",
         p.rss_bytes);
  scalar(out, "moe_process_peak_resident_memory_bytes", "gauge",
         "Peak resident memory of the server process since it started (VmHWM), in bytes.", p.peak_rss_bytes);
  scalar(out, "process_cpu_seconds_total", "counter", "User and system CPU time of the server process, in seconds.",
         p.cpu_seconds);
  std::lock_guard lock(g_process_gauges_mu);
  for (const auto& g : process_gauges()) scalar(out, g.name, "gauge", g.help, g.value);
  return out;
}

}  // namespace moe::server
