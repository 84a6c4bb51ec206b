// compute_probe.h: how fast this machine's matmul kernels run when memory is not the limit. `moe bench`
// sets this beside the bandwidth roofline: decode is memory-bound only where streaming the weights takes
// longer than computing with them, and on few fast-memory cores the unpacking and dot products can
// cost more than the reads. The probe runs the real matmul (kernels::matmul, Fast precision: the same
// activation quantizer, kernels and dispatch a forward pass uses) on a small weight matrix of random
// blocks that stays in the core's L2, for 1 token and for a group of tokens, on every thread of the pool
// at once, each thread on its own rows and timed in its own CPU time: the figure is what the kernels
// do per core, not what a loaded machine's scheduler leaves of it (the pool's synchronisation, a few
// microseconds per matmul, is not included).
#pragma once
#include <cstdint>

#include "gguf/ggml_types.h"
#include "util/thread_pool.h"

namespace moe::kernels {

struct KernelRate {
  GgmlType type = GgmlType::F32;
  int64_t n_tok = 1;              // tokens per matmul
  double seconds_per_256 = 0;     // seconds per 256 weights per token with all threads (1 / sum of their rates)
  double weights_per_s() const { return seconds_per_256 > 0 ? 256.0 / seconds_per_256 : 0; }
};

// Each pool thread runs matmuls of its own rows_per_thread rows of a cols-wide matrix (weights quantized
// from random floats, activations random) with n_tok tokens for at least min_seconds of its CPU time
// (after one untimed call), in five windows, keeping its fastest; the threads' rates add up. Throws moe::Error for a type matmul cannot multiply or bad sizes
// (cols not whole blocks, n_tok outside [1, 512], rows_per_thread outside [1, 4096]).
// `repacked`: the rows repacked as load repacks them (quant::repack_row, model/repack.h), so the figure
// is the kernels a repacked model runs (Error if quant::use_repacked(type) is false).
KernelRate measure_kernel_rate(ThreadPool& pool, GgmlType type, int64_t n_tok, int64_t cols = 4096,
                               int64_t rows_per_thread = 64, double min_seconds = 0.2, bool repacked = false);

}  // namespace moe::kernels
