// awq.cpp: AutoAWQ GEMM expansion and packing (see awq.h).
#include "hf/awq.h"

#include "util/fp16.h"

namespace moe::hf::awq {

void expand(const uint8_t* qweight, const uint8_t* qzeros, const uint8_t* scales, int64_t in, int64_t out,
            int64_t group, float* w) {
  const int64_t words = out / 8;
  for (int64_t i = 0; i < in; ++i) {
    const uint8_t* qrow = qweight + 4 * words * i;
    const int64_t g = i / group;
    const uint8_t* zrow = qzeros + 4 * words * g;
    const uint8_t* srow = scales + 2 * out * g;
    for (int64_t o = 0; o < out; ++o) {
      const int q = static_cast<int>(nibble(qrow, o));
      const int z = static_cast<int>(nibble(zrow, o));
      const uint16_t sb = static_cast<uint16_t>(srow[2 * o] | srow[2 * o + 1] << 8);
      w[o * in + i] = static_cast<float>(q - z) * fp16_to_fp32(sb);
    }
  }
}

std::vector<uint8_t> pack(const std::vector<uint8_t>& values, int64_t rows, int64_t out) {
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * out / 2), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      const uint32_t v = values[static_cast<size_t>(r * out + o)] & 0xFu;
      const int shift = 4 * kNibbleOf[o % 8];
      uint8_t* word = bytes.data() + 4 * (r * (out / 8) + o / 8);
      word[shift / 8] = static_cast<uint8_t>(word[shift / 8] | (v << (shift % 8)));
    }
  return bytes;
}

}  // namespace moe::hf::awq
