// blocks.h: the byte layouts of the GGUF block formats, as plain structs. These are format facts: the
// sizes are asserted against the type table, and every kernel (scalar or SIMD) reads blocks through
// these definitions. Scales are IEEE halves stored as uint16_t (util/fp16.h converts them).
#pragma once
#include <cstdint>

namespace moe::quant {

constexpr int kQK = 32;    // elements per block of the legacy formats
constexpr int kQKK = 256;  // elements per super-block of the K-quants

// x[j] = (low nibble of qs[j] - 8) * d, x[j+16] = (high nibble of qs[j] - 8) * d
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQK / 2]; };
// x = q * d + m, nibbles as Q4_0
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[kQK / 2]; };
// 5-bit: low 4 bits as Q4_0, bit 4 of element j in bit j of qh (little-endian u32); x = (q - 16) * d
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
// x = q * d + m, bits as Q5_0
struct BlockQ5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
// x = qs * d
struct BlockQ8_0 { uint16_t d; int8_t qs[kQK]; };
// activation block for Q4_1/Q5_1: s = d * sum(qs)
struct BlockQ8_1 { uint16_t d; uint16_t s; int8_t qs[kQK]; };

// 2-bit K-quant: 16 sub-blocks of 16; scales[i] low nibble = scale, high nibble = min (4 bits each);
// x = d * sc * q - dmin * m
struct BlockQ2_K { uint8_t scales[kQKK / 16]; uint8_t qs[kQKK / 4]; uint16_t d; uint16_t dmin; };
// 3-bit K-quant: low 2 bits in qs, high bit in hmask (set = +0, clear = -4), 16 six-bit signed scales
// packed in 12 bytes (offset 32); x = d * (sc - 32) * q
struct BlockQ3_K { uint8_t hmask[kQKK / 8]; uint8_t qs[kQKK / 4]; uint8_t scales[12]; uint16_t d; };
// 4-bit K-quant: 8 sub-blocks of 32 with six-bit scale and min packed in 12 bytes; x = d*sc*q - dmin*m
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qs[kQKK / 2]; };
// 5-bit K-quant: as Q4_K plus the fifth bits in qh
struct BlockQ5_K { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qh[kQKK / 8]; uint8_t qs[kQKK / 2]; };
// 6-bit K-quant: low 4 bits in ql, high 2 bits in qh, 16 signed 8-bit scales; x = d * sc * (q - 32)
struct BlockQ6_K { uint8_t ql[kQKK / 2]; uint8_t qh[kQKK / 4]; int8_t scales[kQKK / 16]; uint16_t d; };
// activation block for the K-quants: float scale, 256 int8, and the sums of each group of 16
struct BlockQ8_K { float d; int8_t qs[kQKK]; int16_t bsums[kQKK / 16]; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

}  // namespace moe::quant
