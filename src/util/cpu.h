// cpu.h: which SIMD instruction sets this CPU has, asked once at run time. Kernels pick their path
// from best_isa(); tests force each available path with force_isa() to compare it with the scalar one.
#pragma once

namespace moe {

enum class Isa { Scalar = 0, AVX2 = 1, AVX512 = 2 };  // AVX512 means F+BW+VL+DQ+VNNI

const char* isa_name(Isa isa);
Isa detected_isa();                 // the best this CPU supports (honours MOE_ISA=scalar|avx2|avx512 to cap it)
Isa active_isa();                   // what kernels use now: detected_isa() unless forced
void force_isa(Isa isa);            // for tests and benchmarks; capped at detected_isa()
bool isa_supported(Isa isa);

}  // namespace moe
