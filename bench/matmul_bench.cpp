// matmul_bench.cpp: Google Benchmark of the model's matmul (kernels::matmul, Fast precision) on one
// Mixtral 8x7B expert matrix, ggml shape 4096 x 14336 (14336 rows of 4096 values: ffn_gate / ffn_up),
// in Q4_K, Q2_K and Q8_0, for 1, 4, 16, 64 and 512 tokens: the decode matvec, small batches, and a
// prompt chunk.
//
// One iteration is what the model does per matmul: quantize the tokens' activations
// (prepare_activations) and multiply, on one pool of all physical cores splitting the output rows.
// SetBytesProcessed counts the weight bytes (read once per iteration whatever the token count), so
// bytes/s at 1 token is the streaming rate decode depends on; items are tokens, so items/s at 512 is
// the prompt-processing rate of this matrix. As in decode, where each expert's weights come cold from
// DRAM, the matrix is not reused from cache: iterations rotate over enough copies of it to pass
// 192 MiB (the matrix alone, 18-59 MiB, would partly stay in a 32 MiB L3).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <vector>

#include "bench_data.h"
#include "gguf/ggml_types.h"
#include "kernels/matmul.h"
#include "quant/quant.h"
#include "util/cpu.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace {

using moe::GgmlType;
using moe::kernels::Activations;
using moe::kernels::Precision;
using moe::kernels::TensorView;
using moe::bench::random_floats;

constexpr int64_t kCols = 4096;
constexpr int64_t kRows = 14336;

moe::ThreadPool& pool() {
  static moe::ThreadPool p(moe::physical_core_count());
  return p;
}

// The weight matrices of one type, built once: 64 distinct quantized rows repeated (quantizing all
// 14336 would take longer than the benchmark; repeated content streams from memory all the same), in
// as many copies as it takes to pass kStreamBytes.
constexpr uint64_t kStreamBytes = 192ull << 20;
struct Matrix {
  std::vector<uint8_t> bytes;
  std::vector<TensorView> copies;
};

const Matrix& matrix(GgmlType type) {
  static std::map<GgmlType, std::unique_ptr<Matrix>> cache;
  auto& slot = cache[type];
  if (slot) return *slot;
  slot = std::make_unique<Matrix>();
  const size_t rb = static_cast<size_t>(*moe::row_bytes(type, kCols));
  const size_t matrix_bytes = rb * kRows;
  const size_t n_copies = (kStreamBytes + matrix_bytes - 1) / matrix_bytes;
  slot->bytes = moe::bench::repeated_rows(type, kCols, kRows * static_cast<int64_t>(n_copies));
  for (size_t c = 0; c < n_copies; ++c) {
    TensorView v;
    v.type = type;
    v.data = slot->bytes.data() + c * matrix_bytes;
    v.cols = kCols;
    v.rows = kRows;
    v.count = 1;
    v.row_bytes = rb;
    v.matrix_bytes = matrix_bytes;
    slot->copies.push_back(v);
  }
  return *slot;
}

void matmul_fast(benchmark::State& state, GgmlType type) {
  const int64_t n_tok = state.range(0);
  const Matrix& w = matrix(type);
  const std::vector<float> x = random_floats(n_tok * kCols, 99);
  std::vector<uint8_t> act(static_cast<size_t>(n_tok) * moe::kernels::max_activation_row_bytes(kCols));
  std::vector<float> y(static_cast<size_t>(n_tok * kRows));
  moe::ThreadPool& p = pool();
  size_t next = 0;
  for (auto _ : state) {
    const TensorView& view = w.copies[next];
    next = next + 1 == w.copies.size() ? 0 : next + 1;
    Activations a =
        moe::kernels::prepare_activations(x.data(), n_tok, kCols, type, Precision::Fast, act.data(), act.size(), p);
    moe::kernels::matmul(view, a, y.data(), Precision::Fast, p, nullptr);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.copies[0].matrix_bytes));
  state.SetItemsProcessed(state.iterations() * n_tok);
  state.counters["threads"] = p.size();
  state.SetLabel(moe::isa_name(moe::active_isa()));
}

const bool registered = [] {
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::Q8_0}) {
    auto* b = benchmark::RegisterBenchmark(moe::cat("matmul_4096x14336/", moe::type_name(type)).c_str(), matmul_fast, type);
    b->ArgName("tokens");
    for (int64_t n : {1, 4, 16, 64, 512}) b->Arg(n);
    b->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  return true;
}();

}  // namespace
