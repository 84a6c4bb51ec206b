// lanes_bench.cpp: Google Benchmark of the repacked sub-block lane kernels (quant::lanes_rows_repacked,
// what matmul runs for Q2_K, Q3_K, Q4_K, Q6_K and Q8_0 on AVX-512 VNNI) on one thread, by token count:
// 1 is decode, 2-6 the group kernels of small batches, 8 and 16 the 4-row x 3-token micro-kernel.
//
// Two shapes, both reporting weight bytes per second (each row is read once per call whatever the token
// count) and time per call:
// - lanes_l2/<type>/tokens:N: 64 rows of 4096 values, over and over, so the rows stay in L2: the
//   kernel's issue rate (ns per tile and row = time / (64 x tiles per row)).
// - lanes_stream/<type>/tokens:N: 14336-row matrices (an expert's gate/up shape), rotated until the
//   weights pass 192 MiB, so they stream from DRAM as in decode: the rate one thread can feed.
// The one-token figures are what BENCHMARKS.md's issue-18 fourth part compares (a store-forwarding stall
// in the Q4_K tile header showed there as 16.5 instead of ~8 ns per tile in L2).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_data.h"
#include "gguf/ggml_types.h"
#include "quant/lanes.h"
#include "quant/quant.h"
#include "util/error.h"

namespace {

using moe::GgmlType;

constexpr int64_t kCols = 4096;
constexpr int64_t kMaxTokens = 16;

// `rows` repacked rows of `type` (64 distinct rows repeated) and lane-layout activations for 16 tokens.
struct LaneData {
  size_t row_bytes = 0, act_stride = 0;
  std::vector<uint8_t> w, x;
};

LaneData lane_data(GgmlType type, int64_t rows) {
  LaneData d;
  const std::vector<uint8_t> gguf = moe::bench::repeated_rows(type, kCols, rows);
  const size_t gguf_row = static_cast<size_t>(*moe::row_bytes(type, kCols));
  d.row_bytes = moe::quant::repacked_row_bytes(type, kCols);
  d.w.resize(d.row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    moe::quant::repack_row(type, gguf.data() + static_cast<size_t>(r) * gguf_row, d.w.data() + static_cast<size_t>(r) * d.row_bytes, kCols);
  const int sub = moe::quant::lanes_sub_block(type);
  d.act_stride = moe::quant::lanes_row_bytes(sub, kCols);
  d.x.resize(d.act_stride * kMaxTokens);
  const std::vector<float> f = moe::bench::random_floats(kCols * kMaxTokens, 7);
  for (int64_t t = 0; t < kMaxTokens; ++t)
    moe::quant::quantize_activations_lanes(sub, moe::quant::activation_type(type), f.data() + t * kCols,
                                           d.x.data() + static_cast<size_t>(t) * d.act_stride, kCols);
  return d;
}

void lanes(benchmark::State& state, GgmlType type, bool stream) {
  if (!moe::quant::use_repacked(type)) return state.SkipWithError("the repacked lane kernels need AVX-512 VNNI");
  const int64_t n_tok = state.range(0);
  const int64_t rows = stream ? 14336 : 64;
  const int64_t copies = stream ? (int64_t{192} << 20) / static_cast<int64_t>(rows * moe::quant::repacked_row_bytes(type, kCols)) + 1 : 1;
  const LaneData d = lane_data(type, rows * copies);
  std::vector<float> y(static_cast<size_t>(rows * kMaxTokens));
  int64_t next = 0;
  for (auto _ : state) {
    const uint8_t* w = d.w.data() + static_cast<size_t>(next * rows) * d.row_bytes;
    next = next + 1 == copies ? 0 : next + 1;
    moe::quant::lanes_rows_repacked(type, kCols, w, d.row_bytes, rows, d.x.data(), d.act_stride, n_tok, y.data(),
                                    static_cast<size_t>(rows));
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * rows * static_cast<int64_t>(d.row_bytes));
  state.SetItemsProcessed(state.iterations() * n_tok);
}

const bool registered = [] {
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q6_K, GgmlType::Q8_0})
    for (bool stream : {false, true}) {
      auto* b = benchmark::RegisterBenchmark(
          moe::cat(stream ? "lanes_stream/" : "lanes_l2/", moe::type_name(type)).c_str(), lanes, type, stream);
      b->ArgName("tokens");
      for (int64_t n : {1, 2, 3, 4, 5, 6, 8, 16}) b->Arg(n);
      b->Unit(stream ? benchmark::kMillisecond : benchmark::kMicrosecond);
    }
  return true;
}();

}  // namespace
