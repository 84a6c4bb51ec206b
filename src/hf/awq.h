// awq.h: AutoAWQ's GEMM layout (the format of TheBloke's AWQ checkpoints) and its lossless expansion.
//
// A linear layer y = W x with W [out][in] is stored as three tensors:
//   qweight [in][out/8] int32: for input i, word j holds the 4-bit q of outputs 8j..8j+7, output 8j+r in
//                              nibble kNibbleOf[r] (AutoAWQ packs in the order 0,2,4,6,1,3,5,7)
//   qzeros  [in/group][out/8] int32: the 4-bit zero points, packed the same way
//   scales  [in/group][out] fp16
// and W[o][i] = (q[i][o] - z[i/group][o]) * s[i/group][o].
//
// expand() writes W as float32. That is exact, not a second rounding: q - z is an integer in [-15, 15]
// (at most 4 significant bits) and s an fp16 (11), so the product has at most 15 significant bits and
// float32 holds it exactly. It costs 32 bits per weight instead of ~4.25; awq_test.cpp proves the
// exactness bit for bit on random packed data.
#pragma once
#include <cstdint>
#include <vector>

namespace moe::hf::awq {

// Nibble that holds output 8j + r of a packed word (the inverse of AutoAWQ's order 0,2,4,6,1,3,5,7).
inline constexpr int kNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// The 4-bit value of output `o` in a row of packed words (little-endian int32s, possibly unaligned).
inline unsigned nibble(const uint8_t* row_words, int64_t o) {
  const uint8_t* w = row_words + 4 * (o / 8);
  const uint32_t word = static_cast<uint32_t>(w[0]) | static_cast<uint32_t>(w[1]) << 8 |
                        static_cast<uint32_t>(w[2]) << 16 | static_cast<uint32_t>(w[3]) << 24;
  return (word >> (4 * kNibbleOf[o % 8])) & 0xFu;
}

// W [out][in] as float32 from the three packed tensors (raw bytes as stored in the file).
void expand(const uint8_t* qweight, const uint8_t* qzeros, const uint8_t* scales, int64_t in, int64_t out,
            int64_t group, float* w);

// The inverse, for tests that build their own AWQ checkpoints: packs q [in][out] and z [in/group][out]
// (values 0..15) into qweight / qzeros bytes.
std::vector<uint8_t> pack(const std::vector<uint8_t>& values, int64_t rows, int64_t out);

}  // namespace moe::hf::awq
