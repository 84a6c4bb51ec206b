// compute_probe.cpp: the in-cache matmul rate (see compute_probe.h).
#include "kernels/compute_probe.h"

#include <time.h>

#include <chrono>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::kernels {

KernelRate measure_kernel_rate(ThreadPool& pool, GgmlType type, int64_t n_tok, int64_t cols, int64_t rows_per_thread,
                               double min_seconds, bool repacked) {
  if (n_tok < 1 || n_tok > 512) fail("compute probe: ", n_tok, " tokens is outside [1, 512]");
  if (rows_per_thread < 1 || rows_per_thread > 4096)
    fail("compute probe: ", rows_per_thread, " rows per thread is outside [1, 4096]");
  if (!quant::can_quantize(type)) fail("compute probe: cannot make weights of type ", type_name(type));
  quant::check_row("compute probe", type, cols);
  const int64_t rows = rows_per_thread * pool.size();
  const auto row_b = static_cast<size_t>(*row_bytes(type, static_cast<uint64_t>(cols)));
  std::vector<uint8_t> weights(row_b * static_cast<size_t>(rows));
  std::mt19937 rng(12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> buf(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : buf) v = normal(rng);
    quant::quantize_row(type, buf.data(), weights.data() + static_cast<size_t>(r) * row_b, cols);
  }
  std::vector<float> x(static_cast<size_t>(n_tok * cols));
  for (float& v : x) v = normal(rng);
  if (repacked) {
    if (!quant::use_repacked(type)) fail("compute probe: no repacked kernels for ", type_name(type), " on this CPU");
    std::vector<uint8_t> packed(weights.size());
    for (int64_t r = 0; r < rows; ++r)
      quant::repack_row(type, weights.data() + static_cast<size_t>(r) * row_b, packed.data() + static_cast<size_t>(r) * row_b, cols);
    weights.swap(packed);
  }

  // Each of the pool's threads multiplies its own slice of rows with matmul on a one-thread pool (which
  // runs inline on that thread) and times itself in thread CPU time, so time taken by other processes
  // is not counted; the rates of the threads add up.
  const int n_threads = pool.size();
  std::vector<double> rate(static_cast<size_t>(n_threads), 0.0);  // weights x tokens per CPU second
  pool.run(n_threads, [&](int64_t task, int) {
    ThreadPool inline_pool(1);
    TensorView w;
    w.type = type;
    w.data = weights.data() + static_cast<size_t>(task * rows_per_thread) * row_b;
    w.cols = cols;
    w.rows = rows_per_thread;
    w.row_bytes = row_b;
    w.matrix_bytes = row_b * static_cast<size_t>(rows_per_thread);
    w.repacked = repacked;
    std::vector<float> y(static_cast<size_t>(n_tok * rows_per_thread));
    std::vector<uint8_t> qbuf(static_cast<size_t>(n_tok) * max_activation_row_bytes(cols));
    // Per call as a forward pass does it: quantize the activations, then the matmul.
    auto call = [&] {
      const Activations a =
          prepare_activations(x.data(), n_tok, cols, type, Precision::Fast, qbuf.data(), qbuf.size(), inline_pool);
      matmul(w, a, y.data(), Precision::Fast, inline_pool, nullptr);
    };
    call();  // untimed: weights and activations in cache
    auto cpu_now = [] {
      timespec ts{};
      ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    // Five windows of min_seconds / 5 of CPU time each; the fastest counts (a window can still lose time
    // to cache pollution by another process on the same core).
    constexpr int kWindows = 5;
    double best = 0;  // CPU seconds per call
    for (int window = 0; window < kWindows; ++window) {
      const double t0 = cpu_now();
      int64_t calls = 0;
      double secs = 0;
      do {
        call();
        ++calls;
        secs = cpu_now() - t0;
      } while (secs < min_seconds / kWindows);
      const double per_call = secs / static_cast<double>(calls);
      if (window == 0 || per_call < best) best = per_call;
    }
    rate[static_cast<size_t>(task)] =
        static_cast<double>(rows_per_thread) * static_cast<double>(cols) * static_cast<double>(n_tok) / best;
  });
  double total = 0;
  for (double r : rate) total += r;
  KernelRate r;
  r.type = type;
  r.n_tok = n_tok;
  r.seconds_per_256 = 256.0 / total;
  return r;
}

}  // namespace moe::kernels
