// dot_avx2.cpp: the AVX2 entry points with no kernels yet: each returns false, so quant.cpp uses the
// scalar reference for every type. The SIMD engineer's kernels replace this file.
#include "quant/simd.h"

namespace moe::quant::detail {

bool vec_dot_avx2(GgmlType, int64_t, const void*, const void*, float*) { return false; }
bool quantize_activations_avx2(GgmlType, const float*, void*, int64_t) { return false; }

}  // namespace moe::quant::detail
