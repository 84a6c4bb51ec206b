// progress.h: a progress indicator on stderr for long jobs (quantize, synth, perplexity). On a terminal
// it redraws one line with a bar; otherwise (a log file, a test) it prints a plain "label: 40%" line at
// each 10 % step, so logs stay readable. Thread-safe: workers may advance it concurrently.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace moe::plan {

class Progress {
 public:
  // `total` units of work (bytes, rows, tokens); `enabled` false makes it silent.
  Progress(std::string label, uint64_t total, bool enabled = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(uint64_t units);
  void set_detail(const std::string& detail);  // shown after the bar on a terminal (e.g. the tensor name)
  void finish();                               // draws 100 % and ends the line (idempotent)

 private:
  void draw(uint64_t done, bool force);
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool tty_;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
  int last_shown_ = -1;  // percent (tty) or tens of percent (plain) last printed
  std::string detail_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moe::plan
