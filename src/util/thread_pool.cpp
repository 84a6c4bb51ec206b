// thread_pool.cpp: persistent workers with a spin-then-sleep wait and dynamic task hand-out.
#include "util/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <tuple>
#include <utility>

namespace moe {

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::work(int thread) {
  for (;;) {
    int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) break;
    try {
      (*fn_)(task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
      next_task_.store(n_tasks_, std::memory_order_relaxed);  // stop handing out work
    }
  }
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a short while: back-to-back parallel regions arrive within microseconds during decode.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < 20000; ++spin) {
      _mm_pause();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_) return;
    work(thread);
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  regions_.fetch_add(1, std::memory_order_relaxed);
  fn_ = &fn;
  n_tasks_ = n_tasks;
  error_ = nullptr;
  next_task_.store(0, std::memory_order_relaxed);
  active_.store(n_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  work(0);
  // Wait for the workers' last tasks. Spin first (they usually finish within microseconds), then yield
  // the core: when the machine is oversubscribed a worker may be waiting for exactly this CPU.
  for (int spin = 0; active_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < 4096)
      _mm_pause();
    else
      std::this_thread::yield();
  }
  fn_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

std::pair<int64_t, int64_t> ThreadPool::chunking(int64_t n, int64_t grain) const {
  grain = std::max<int64_t>(1, grain);
  // A few chunks per thread, handed out dynamically: a thread that is slowed (another process on its
  // core, a busier memory channel) takes fewer, instead of everyone waiting for its one big chunk.
  int64_t chunks = std::min<int64_t>(n_threads_ == 1 ? 1 : 4 * int64_t{n_threads_}, (n + grain - 1) / grain);
  int64_t per = (n + chunks - 1) / chunks;
  return {chunks, per};
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  // Not a structured binding: clang 14 (the fuzz build's) cannot capture one in a lambda.
  const std::pair<int64_t, int64_t> split = chunking(n, grain);
  const int64_t chunks = split.first, per = split.second;
  run(chunks, [&](int64_t c, int thread) {
    int64_t b = c * per, e = std::min(n, b + per);
    if (b < e) fn(b, e, thread);
  });
}

void ThreadPool::parallel_for_all(const std::vector<Loop>& loops) {
  // Task list: every loop's chunks one after the other; first[i] is loop i's first task.
  std::vector<int64_t> first(loops.size() + 1, 0), per(loops.size(), 1);
  for (size_t i = 0; i < loops.size(); ++i) {
    int64_t chunks = 0;
    if (loops[i].n > 0) std::tie(chunks, per[i]) = chunking(loops[i].n, loops[i].grain);
    first[i + 1] = first[i] + chunks;
  }
  run(first.back(), [&](int64_t task, int thread) {
    const size_t i = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), task) - first.begin()) - 1;
    const int64_t b = (task - first[i]) * per[i], e = std::min(loops[i].n, b + per[i]);
    if (b < e) loops[i].fn(b, e, thread);
  });
}

int physical_core_count() {
  // Count distinct (physical id, core id) pairs; fall back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int phys = 0;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (line.rfind("physical id", 0) == 0) phys = std::atoi(line.c_str() + colon + 1);
    if (line.rfind("core id", 0) == 0) cores.insert({phys, std::atoi(line.c_str() + colon + 1)});
  }
  int n = static_cast<int>(cores.size());
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, n);
}

}  // namespace moe
