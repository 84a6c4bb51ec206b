// progress.cpp: the stderr progress indicator (see progress.h).
#include "plan/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace moe::plan {

Progress::Progress(std::string label, uint64_t total, bool enabled)
    : label_(std::move(label)), total_(std::max<uint64_t>(total, 1)), enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() {
  // A job that failed midway leaves the bar where it stopped; end the line so the error prints cleanly.
  std::lock_guard<std::mutex> lock(mu_);
  if (enabled_ && tty_ && !finished_ && last_shown_ >= 0) std::fputc('\n', stderr);
}

void Progress::advance(uint64_t units) {
  const uint64_t done = done_.fetch_add(units, std::memory_order_relaxed) + units;
  draw(done, false);
}

void Progress::set_detail(const std::string& detail) {
  std::lock_guard<std::mutex> lock(mu_);
  detail_ = detail;
}

void Progress::finish() {
  draw(total_, true);
  std::lock_guard<std::mutex> lock(mu_);
  if (enabled_ && !finished_ && tty_) std::fputc('\n', stderr);
  finished_ = true;
}

void Progress::draw(uint64_t done, bool force) {
  if (!enabled_) return;
  const int pct = static_cast<int>(std::min<uint64_t>(done, total_) * 100 / total_);
  const int step = tty_ ? pct : pct / 10;
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    if (!force) return;  // another thread is drawing; the next advance redraws
    lock.lock();
  }
  if (finished_ || (step <= last_shown_ && !force) || (force && step == last_shown_)) return;
  last_shown_ = step;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = pct * kWidth / 100;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, ' ');
    std::string detail = detail_.size() > 40 ? detail_.substr(0, 40) : detail_;
    std::fprintf(stderr, "\r%s [%s] %3d%% %6.1fs %-40s", label_.c_str(), bar.c_str(), pct, secs, detail.c_str());
  } else {
    std::fprintf(stderr, "%s: %d%% (%.1fs)\n", label_.c_str(), step * 10, secs);
  }
  std::fflush(stderr);
}

}  // namespace moe::plan
