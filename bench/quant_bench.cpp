// quant_bench.cpp: Google Benchmark micro-benchmarks of the block-format dot products (the kernels of
// quant::kernels_for, resolved once per benchmark as matmul resolves them once per call) for every weight
// type and every ISA this CPU has, single thread.
//
// Two shapes, both reporting weight bytes per second (SetBytesProcessed counts weight bytes only; the
// activation row is small and stays in cache, as in a real matrix-vector product):
// - quant_dot_row/<type>/<isa>: one 4096-wide row, over and over. The row is in L1/L2, so this is the
//   kernel's compute throughput.
// - quant_dot_matrix/<type>/<isa>: a matrix-vector product over 14336 x 4096 matrices (one Mixtral
//   expert's w1/w3 shape), repeated until the weights pass 192 MiB, so they stream from DRAM as in decode.
//   This is the number that bounds tokens per second.
// Plus quant_activations/<type>/<isa>: quantizing one 4096-float activation row (reported in float bytes).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_data.h"
#include "quant/quant.h"
#include "util/cpu.h"
#include "util/error.h"

namespace {

using moe::GgmlType;
using moe::Isa;
using moe::bench::random_floats;

constexpr int64_t kCols = 4096;
constexpr int64_t kExpertRows = 14336;
constexpr uint64_t kStreamBytes = 192ull << 20;

const GgmlType kWeightTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                                 GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                                 GgmlType::F16,  GgmlType::BF16, GgmlType::F32};

size_t row_size(GgmlType type) { return static_cast<size_t>(*moe::row_bytes(type, kCols)); }

std::vector<uint8_t> weight_rows(GgmlType type, int64_t rows) { return moe::bench::repeated_rows(type, kCols, rows); }

std::vector<uint8_t> activation_row(GgmlType weight_type) {
  const GgmlType act = moe::quant::activation_type(weight_type);
  const std::vector<float> x = random_floats(kCols, 1234);
  std::vector<uint8_t> out(static_cast<size_t>(*moe::row_bytes(act, kCols)));
  moe::quant::quantize_activations_isa(Isa::Scalar, act, x.data(), out.data(), kCols);
  return out;
}

bool skip_unsupported(benchmark::State& state, Isa isa) {
  if (moe::isa_supported(isa)) return false;
  state.SkipWithError("this CPU lacks the ISA");
  return true;
}

void dot_row(benchmark::State& state, GgmlType type, Isa isa) {
  if (skip_unsupported(state, isa)) return;
  const std::vector<uint8_t> w = weight_rows(type, 1);
  const std::vector<uint8_t> x = activation_row(type);
  const moe::quant::DotFn dot = moe::quant::kernels_for(type, isa).dot;
  for (auto _ : state) {
    float r = dot(kCols, w.data(), x.data());
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
}

void dot_matrix(benchmark::State& state, GgmlType type, Isa isa) {
  if (skip_unsupported(state, isa)) return;
  const uint64_t expert_bytes = row_size(type) * kExpertRows;
  const int64_t experts = static_cast<int64_t>((kStreamBytes + expert_bytes - 1) / expert_bytes);
  const int64_t rows = experts * kExpertRows;
  const std::vector<uint8_t> w = weight_rows(type, rows);
  const std::vector<uint8_t> x = activation_row(type);
  std::vector<float> y(static_cast<size_t>(rows));
  const size_t rb = row_size(type);
  const moe::quant::DotFn dot = moe::quant::kernels_for(type, isa).dot;
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = w.data() + rb * static_cast<size_t>(r);
      y[static_cast<size_t>(r)] = dot(kCols, row, x.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
  state.SetLabel(moe::cat(experts, " x 14336x4096"));
}

void activations(benchmark::State& state, GgmlType act, Isa isa) {
  if (skip_unsupported(state, isa)) return;
  const std::vector<float> x = random_floats(kCols, 99);
  std::vector<uint8_t> out(static_cast<size_t>(*moe::row_bytes(act, kCols)));
  const moe::quant::QuantizeFn quantize = moe::quant::activation_quantizer(act, isa);
  for (auto _ : state) {
    quantize(x.data(), out.data(), kCols);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kCols * static_cast<int64_t>(sizeof(float)));
}

// Registration only (no SIMD runs before main): one benchmark per type and ISA.
const bool kRegistered = [] {
  const Isa isas[] = {Isa::Scalar, Isa::AVX2, Isa::AVX512};
  for (GgmlType type : kWeightTypes)
    for (Isa isa : isas) {
      const std::string suffix = moe::cat("/", moe::type_name(type), "/", moe::isa_name(isa));
      benchmark::RegisterBenchmark(moe::cat("quant_dot_row", suffix).c_str(), dot_row, type, isa);
      benchmark::RegisterBenchmark(moe::cat("quant_dot_matrix", suffix).c_str(), dot_matrix, type, isa)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(0.5);
    }
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K})
    for (Isa isa : isas)
      benchmark::RegisterBenchmark(moe::cat("quant_activations/", moe::type_name(act), "/", moe::isa_name(isa)).c_str(),
                                   activations, act, isa);
  return true;
}();

}  // namespace
