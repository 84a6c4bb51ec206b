// metrics.h: the server's Prometheus metrics (text exposition format 0.0.4) for GET /metrics.
// The server records what only it sees (requests by route and status, time to first token and
// inter-token latency as the client experiences them); the engine's counters and gauges (tokens,
// sequences, KV blocks, prefix cache, expert routing) are read from Engine::stats() at scrape time,
// so there is one source of truth for each number.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace moe::server {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends `# HELP`, `# TYPE`, `_bucket{le=...}` (cumulative, ending with +Inf), `_sum`, `_count`.
  void render(std::string& out, const std::string& name, const std::string& help) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Gauges that describe the process rather than the engine (the memory plan `moe serve` sized its KV pool
// with), set once at start-up by the frontend that knows them and rendered by every Metrics after the
// engine's figures. A gauge set again under the same name takes the new value.
void set_process_gauge(const std::string& name, const std::string& help, double value);

class Metrics {
 public:
  Metrics();
  // `route` is one of the known routes or anything else (counted as "other", bounding label values).
  void count_request(std::string_view route, int status);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds, int64_t tokens);
  std::string render(const engine::Stats& stats) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram ttft_;
  Histogram itl_;
};

}  // namespace moe::server
