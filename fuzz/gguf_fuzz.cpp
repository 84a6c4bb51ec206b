// gguf_fuzz.cpp: libFuzzer target for the GGUF reader. Any byte string must either parse or be
// refused with a moe::Error, within the reader's memory budget; a parsed file's metadata and tensor
// table are then read back through every typed getter, which must agree with what the parser checked.
// fuzz-link: moe_gguf
#include <cstddef>
#include <cstdint>
#include <span>

#include "gguf/gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  try {
    gguf::File file = gguf::File::parse(std::span<const uint8_t>(data, size), "<fuzz>");
    for (const auto& [key, value] : file.metadata()) {
      // Each getter either returns the value or throws a moe::Error naming the key's type.
      try { (void)file.get_int(key); } catch (const Error&) {}
      try { (void)file.get_float(key); } catch (const Error&) {}
      try { (void)file.get_string(key); } catch (const Error&) {}
      try { (void)file.get_bool(key); } catch (const Error&) {}
      try { (void)file.get_string_array(key); } catch (const Error&) {}
      try { (void)file.get_float_array(key); } catch (const Error&) {}
      try { (void)file.get_int_array(key); } catch (const Error&) {}
      if (file.find(key) == nullptr) __builtin_trap();  // every key must be found again
    }
    uint64_t sum = 0;
    for (const auto& t : file.tensors()) {
      if (file.find_tensor(t.name) == nullptr) __builtin_trap();
      // The parser promised the bytes are inside the file: touch the first and the last.
      if (t.n_bytes) sum += t.data[0] + t.data[t.n_bytes - 1];
    }
    (void)sum;
  } catch (const Error&) {
  }
  return 0;
}
