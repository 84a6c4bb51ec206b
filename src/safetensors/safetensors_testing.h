// safetensors_testing.h: test helpers of the safetensors layer: a raw file built from header text and a
// data buffer (to write malformed headers the writer refuses to produce), and a valid sample file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "safetensors/safetensors.h"

namespace moe::safetensors::testing {

// u64 length + header text + data bytes, exactly as given (no padding, no checks).
inline std::vector<uint8_t> raw_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  for (size_t i = 0; i < header.size(); ++i) out[8 + i] = static_cast<uint8_t>(header[i]);
  for (size_t i = 0; i < data.size(); ++i) out[8 + header.size() + i] = data[i];
  return out;
}

// A valid file with metadata and tensors of several dtypes and ranks (a scalar, an empty tensor too).
inline std::vector<uint8_t> sample_file() {
  Writer w;
  w.set_metadata("format", "pt");
  auto fill = [](size_t n, uint8_t seed) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
    return b;
  };
  w.add("model.embed_tokens.weight", Dtype::BF16, {4, 8}, fill(64, 1));
  w.add("model.norm.weight", Dtype::F32, {8}, fill(32, 2));
  w.add("layers.0.q.weight", Dtype::F16, {2, 2, 2}, fill(16, 3));
  w.add("qweight", Dtype::I32, {2, 1}, fill(8, 4));
  w.add("scalar", Dtype::F64, {}, fill(8, 5));
  w.add("empty", Dtype::U8, {0, 3}, {});
  w.add("bytes", Dtype::I8, {5}, fill(5, 6));
  return w.to_bytes();
}

}  // namespace moe::safetensors::testing
