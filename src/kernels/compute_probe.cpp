// compute_probe.cpp: the in-cache matmul rate (see compute_probe.h).
#include "kernels/compute_probe.h"

#include <chrono>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "quant/quant.h"
#include "util/error.h"

namespace moe::kernels {

KernelRate measure_kernel_rate(ThreadPool& pool, GgmlType type, int64_t n_tok, int64_t cols, int64_t rows_per_thread,
                               double min_seconds) {
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
  std::vector<float> y(static_cast<size_t>(n_tok * rows));
  std::vector<uint8_t> qbuf(static_cast<size_t>(n_tok) * max_activation_row_bytes(cols));

  TensorView w;
  w.type = type;
  w.data = weights.data();
  w.cols = cols;
  w.rows = rows;
  w.row_bytes = row_b;
  w.matrix_bytes = weights.size();
  // Per call as a forward pass does it: quantize the activations, then the matmul.
  auto call = [&] {
    const Activations a = prepare_activations(x.data(), n_tok, cols, type, Precision::Fast, qbuf.data(), qbuf.size(), pool);
    matmul(w, a, y.data(), Precision::Fast, pool, nullptr);
  };
  call();  // untimed: threads awake, weights in cache
  // Five windows of min_seconds / 5 each; the fastest counts (as the bandwidth probe's best pass: on a
  // shared machine a window in which another process took a core says nothing about the kernels).
  using Clock = std::chrono::steady_clock;
  constexpr int kWindows = 5;
  double best = 0;  // seconds per call
  for (int window = 0; window < kWindows; ++window) {
    const auto t0 = Clock::now();
    int64_t calls = 0;
    double secs = 0;
    do {
      call();
      ++calls;
      secs = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (secs < min_seconds / kWindows);
    const double per_call = secs / static_cast<double>(calls);
    if (window == 0 || per_call < best) best = per_call;
  }
  KernelRate r;
  r.type = type;
  r.n_tok = n_tok;
  const double weight_tokens = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(n_tok);
  r.seconds_per_256 = best * 256.0 / weight_tokens;
  return r;
}

}  // namespace moe::kernels
