// kquant_scales.h: the packed six-bit scales of Q3_K and Q4_K/Q5_K unpacked into a 128-bit register of
// bytes, shared by every SIMD file (SSE2 only, so any x86-64 translation unit may include it). The bit
// layouts are documented beside the scalar decoders in quant/dequant_ref.cpp. In an anonymous namespace,
// as quant/vec.h: each SIMD file's copy is compiled with its own flags and never merged by the linker.
#pragma once
#include <emmintrin.h>

#include <cstdint>
#include <cstring>

namespace moe::quant::detail {
namespace {

inline uint32_t read_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 16 Q3_K scales minus 32, as int8 (low nibbles in bytes 0..7, top two bits in bytes 8..11).
inline __m128i q3_K_scales(const uint8_t* packed) {
  const uint32_t a[3] = {read_u32(packed), read_u32(packed + 4), read_u32(packed + 8)};
  const uint32_t k4 = 0x0F0F0F0Fu, k2 = 0x03030303u;
  const uint32_t s0 = (a[0] & k4) | ((a[2] & k2) << 4);
  const uint32_t s1 = (a[1] & k4) | (((a[2] >> 2) & k2) << 4);
  const uint32_t s2 = ((a[0] >> 4) & k4) | (((a[2] >> 4) & k2) << 4);
  const uint32_t s3 = ((a[1] >> 4) & k4) | (((a[2] >> 6) & k2) << 4);
  return _mm_sub_epi8(_mm_setr_epi32(static_cast<int>(s0), static_cast<int>(s1), static_cast<int>(s2),
                                     static_cast<int>(s3)),
                      _mm_set1_epi8(32));
}

// Scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K/Q5_K block, six bits each.
inline __m128i k4_scales_mins(const uint8_t* packed) {
  const uint32_t a[3] = {read_u32(packed), read_u32(packed + 4), read_u32(packed + 8)};
  const uint32_t k6 = 0x3F3F3F3Fu, k4 = 0x0F0F0F0Fu, k2 = 0x03030303u;
  const uint32_t sc_lo = a[0] & k6;                                      // scales 0..3
  const uint32_t sc_hi = (a[2] & k4) | (((a[0] >> 6) & k2) << 4);        // scales 4..7
  const uint32_t m_lo = a[1] & k6;                                       // mins 0..3
  const uint32_t m_hi = ((a[2] >> 4) & k4) | (((a[1] >> 6) & k2) << 4);  // mins 4..7
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo),
                        static_cast<int>(m_hi));
}

}  // namespace
}  // namespace moe::quant::detail
