// dot_avx512.cpp: the AVX512 entry points with no kernels yet: each returns false, so quant.cpp uses the
// scalar reference for every type. The SIMD engineer's kernels replace this file.
#include "quant/simd.h"

namespace moe::quant::detail {

bool vec_dot_avx512(GgmlType, int64_t, const void*, const void*, float*) { return false; }
bool quantize_activations_avx512(GgmlType, const float*, void*, int64_t) { return false; }

}  // namespace moe::quant::detail
