// cpu.cpp: run-time ISA detection with GCC's __builtin_cpu_supports.
#include "util/cpu.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace moe {
namespace {

// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c", and
// the fuzz build (scripts/fuzz.sh) compiles this file with clang.
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

Isa probe() {
  __builtin_cpu_init();
  Isa best = Isa::Scalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c() &&
      __builtin_cpu_supports("bmi2"))
    best = Isa::AVX2;
  if (best == Isa::AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni"))
    best = Isa::AVX512;
  if (const char* cap = std::getenv("MOE_ISA")) {
    Isa want = best;
    if (!std::strcmp(cap, "scalar")) want = Isa::Scalar;
    else if (!std::strcmp(cap, "avx2")) want = Isa::AVX2;
    else if (!std::strcmp(cap, "avx512")) want = Isa::AVX512;
    if (want < best) best = want;
  }
  return best;
}

std::atomic<int> g_forced{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512: return "avx512-vnni";
  }
  return "?";
}

Isa detected_isa() {
  static const Isa isa = probe();
  return isa;
}

bool isa_supported(Isa isa) { return isa <= detected_isa(); }

Isa active_isa() {
  int f = g_forced.load(std::memory_order_relaxed);
  return f < 0 ? detected_isa() : static_cast<Isa>(f);
}

void force_isa(Isa isa) {
  if (isa > detected_isa()) isa = detected_isa();
  g_forced.store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace moe
