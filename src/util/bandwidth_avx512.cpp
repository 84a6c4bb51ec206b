// bandwidth_avx512.cpp: the bandwidth-measurement read loop with 512-bit loads (compiled with AVX-512
// flags, called only when the CPU has them). Four accumulators, 256 bytes (four cache lines) per
// iteration.
#include <immintrin.h>

#include "util/bandwidth.h"

namespace moe::detail {

uint64_t sum_words_avx512(const uint64_t* words, size_t n_words) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n_words; i += 32) {
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(words + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(words + i + 8));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(words + i + 16));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(words + i + 24));
  }
  // Lanes summed through memory: GCC 12's _mm512_reduce_add_epi64 trips -Wuninitialized in its header.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  uint64_t sum = 0;
  for (uint64_t lane : lanes) sum += lane;
  for (; i < n_words; ++i) sum += words[i];
  return sum;
}

}  // namespace moe::detail
