// safetensors_fuzz.cpp: libFuzzer target for the safetensors reader. Any input must either parse into a
// File whose tensors lie inside the input and tile its data buffer, or be refused with moe::Error; any
// other exception, crash or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "safetensors/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const moe::safetensors::File f = moe::safetensors::File::parse(std::span<const uint8_t>(data, size), "fuzz");
    uint64_t covered = 0, sum = 0;
    for (const auto& t : f.tensors()) {
      if (t.data < data || t.data + t.n_bytes() > data + size) std::abort();
      if (t.n_elements * moe::safetensors::dtype_size(t.dtype) != t.n_bytes()) std::abort();
      if (t.n_bytes() > 0) sum += t.data[0] + t.data[t.n_bytes() - 1];
      covered += t.n_bytes();
    }
    if (f.data_offset() + covered != size) std::abort();
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const moe::Error&) {
  }
  return 0;
}
