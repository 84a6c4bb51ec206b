// thread_pool.h: one persistent pool of worker threads for every parallel kernel.
// Kernels split work by output rows so that each thread streams its own slice of the weights. The
// calling thread takes part in the work, so a pool of n threads starts n-1 workers. Workers spin
// briefly before sleeping: a decode step issues hundreds of small parallel regions, and waking a thread
// from a condition variable for each would cost more than the work.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace moe {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(task, thread) for every task in [0, n_tasks), tasks handed out dynamically; returns when all
  // are done. `thread` is in [0, size()) and identifies per-thread scratch. Not reentrant: a task must
  // not call run() on the same pool. An exception thrown by a task is rethrown here (the first one).
  void run(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

  // Splits [0, n) into contiguous chunks of at least `grain` items, up to four per thread (handed out
  // dynamically, so a slowed thread takes fewer), and runs fn(begin, end, thread) on each.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end, int thread)>& fn);

  // One loop of parallel_for_all: [0, n) in chunks of at least `grain`, fn(begin, end, thread) on each.
  struct Loop {
    int64_t n = 0;
    int64_t grain = 1;
    std::function<void(int64_t begin, int64_t end, int thread)> fn;
  };
  // Runs several independent loops in ONE parallel region (one hand-out to the workers, one wait),
  // each chunked exactly as parallel_for would chunk it alone, so every fn call sees the same ranges.
  // A decode step is a chain of small matmuls; fusing the ones that share an input halves the
  // synchronisations per layer.
  void parallel_for_all(const std::vector<Loop>& loops);

  // Parallel regions handed to the workers so far (run() calls that woke them; work small enough to
  // run on the calling thread alone is not counted). Each is one synchronisation of all threads.
  uint64_t regions() const { return regions_.load(std::memory_order_relaxed); }

 private:
  // parallel_for's split of [0, n): `chunks` chunks of `per` items (the last may be shorter).
  std::pair<int64_t, int64_t> chunking(int64_t n, int64_t grain) const;
  void worker_loop(int thread);
  void work(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<uint64_t> regions_{0};
  int64_t n_tasks_ = 0;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  std::exception_ptr error_;
  std::mutex error_mu_;
  bool stop_ = false;
};

// Number of physical cores (hyper-threads counted once); at least 1.
int physical_core_count();

}  // namespace moe
