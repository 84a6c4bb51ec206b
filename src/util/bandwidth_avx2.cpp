// bandwidth_avx2.cpp: the bandwidth-measurement read loop with 256-bit loads (compiled with AVX2 flags,
// called only when the CPU has AVX2). Four accumulators, 128 bytes per iteration: enough loads in flight
// that DRAM, not the adds, sets the pace.
#include <immintrin.h>

#include "util/bandwidth.h"

namespace moe::detail {

uint64_t sum_words_avx2(const uint64_t* words, size_t n_words) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n_words; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i)));
    a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + i + 12)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n_words; ++i) sum += words[i];
  return sum;
}

}  // namespace moe::detail
