// attention_simd.h: the SIMD attention kernels attention.cpp dispatches to (util/cpu.h decides).
// Never call one on a CPU without its ISA.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace moe::kernels::detail {

// Fast-precision attend_head for F16 K and V rows (AVX2 + F16C); acc is head_dim floats of scratch.
void attend_f16_avx2(const float* q, const PagedRows& k, const PagedRows& v, int64_t first, int64_t hd,
                     int64_t n_ctx, float scale, float* out, float* acc);

}  // namespace moe::kernels::detail
