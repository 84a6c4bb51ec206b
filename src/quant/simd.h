// simd.h: what each SIMD file (quant/*_avx2.cpp, quant/*_avx512.cpp) offers the dispatcher. Each function
// returns the kernel that file has for a type, or null where it has none; quant.cpp's kernels_for()
// starts from the scalar reference and lets each ISA up to the requested one replace what it has, once
// per matmul. Never call a returned kernel on a CPU without that ISA.
#pragma once
#include "gguf/ggml_types.h"
#include "quant/quant.h"

namespace moe::quant::detail {

// One weight row against one activation row (activation_type(type) blocks, or floats).
DotFn dot_avx2(GgmlType weight_type);
DotFn dot_avx512(GgmlType weight_type);

// One weight row against many tokens' rows, each result bit-identical to the single-token kernel's.
DotTokensFn dot_tokens_avx2(GgmlType weight_type);  // dot_tokens_avx2.cpp
DotTokensFn dot_tokens_avx512(GgmlType weight_type);

// Activation quantization (floats -> act_type blocks), bit-identical to the scalar reference.
QuantizeFn quantizer_avx2(GgmlType act_type);
QuantizeFn quantizer_avx512(GgmlType act_type);

// The sub-block lane kernels (quant/lanes.h): x in the lane layout for lanes_sub_block(type).
DotTokensFn lanes_dot_avx512(GgmlType weight_type);
LanesRowsFn lanes_rows_avx512(GgmlType weight_type);
// The same kernels over repacked rows (lanes.h's repack_row layout; Q2_K, Q3_K, Q4_K, Q6_K and Q8_0).
DotTokensFn lanes_dot_repacked_avx512(GgmlType weight_type);
LanesRowsFn lanes_rows_repacked_avx512(GgmlType weight_type);

}  // namespace moe::quant::detail
