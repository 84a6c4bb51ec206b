// gguf_testing.h: helpers shared by the GGUF tests — a writer-made sample file that exercises every
// value type, a byte builder for hand-assembling files the writer refuses to make, and a deep Value
// comparison. Test-only (included by *_test.cpp, never by the library).
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"

namespace moe::gguf::testing {

// Deterministic, seed-dependent bytes (a 32-bit LCG), so every tensor's content is distinct.
inline std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto& b : out) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

struct SampleTensor {
  const char* name;
  GgmlType type;
  std::vector<int64_t> ne;
};

// Several types (plain and block formats), 1 to 4 dims, sizes not multiples of the alignment.
inline std::vector<SampleTensor> sample_tensors() {
  return {
      {"token_embd.weight", GgmlType::F32, {7}},
      {"blk.0.attn_q.weight", GgmlType::F16, {3, 5}},
      {"blk.0.ffn_gate_exps.weight", GgmlType::Q8_0, {64, 2}},
      {"blk.0.ffn_up_exps.weight", GgmlType::Q4_K, {256, 1, 2}},
      {"output.weight", GgmlType::Q6_K, {256}},
      {"tiny.i8", GgmlType::I8, {1, 1, 1, 1}},
      {"tiny.bf16", GgmlType::BF16, {2, 2, 2, 2}},
  };
}

// Every value type, extremes, empty strings and arrays, bytes that are not UTF-8, nested arrays.
inline std::vector<std::pair<std::string, Value>> sample_metadata() {
  std::vector<std::pair<std::string, Value>> kv;
  kv.emplace_back("general.architecture", Value::string("llama"));
  kv.emplace_back("general.name", Value::string(""));
  kv.emplace_back("test.u8", Value::uint8(255));
  kv.emplace_back("test.i8", Value::int8(-128));
  kv.emplace_back("test.u16", Value::uint16(65535));
  kv.emplace_back("test.i16", Value::int16(-32768));
  kv.emplace_back("test.u32", Value::uint32(4294967295u));
  kv.emplace_back("test.i32", Value::int32(-2147483647 - 1));
  kv.emplace_back("test.u64", Value::uint64(18446744073709551615ull));
  kv.emplace_back("test.i64", Value::int64(-9223372036854775807ll - 1));
  kv.emplace_back("test.f32", Value::float32(-1.5e-39f));  // a subnormal
  kv.emplace_back("test.f64", Value::float64(1e300));
  kv.emplace_back("test.true", Value::boolean(true));
  kv.emplace_back("test.false", Value::boolean(false));
  kv.emplace_back("test.bytes", Value::string(std::string("\xff\xfe\0x\xc3", 5)));
  kv.emplace_back("tokenizer.ggml.tokens", Value::string_array({"<unk>", "", "h\xc3\xa9llo", "\xe2\x96\x81the"}));
  kv.emplace_back("tokenizer.ggml.scores", Value::float32_array({0.0f, -1.25f, 3e38f, -0.0f}));
  kv.emplace_back("tokenizer.ggml.token_type", Value::int32_array({2, 1, 1, 6}));
  kv.emplace_back("test.empty_u8", Value::array_of(ValueType::UINT8, {}));
  kv.emplace_back("test.empty_strings", Value::array_of(ValueType::STRING, {}));
  kv.emplace_back("test.empty_arrays", Value::array_of(ValueType::ARRAY, {}));
  kv.emplace_back("test.u64s", Value::array_of(ValueType::UINT64, {Value::uint64(0), Value::uint64(1ull << 63)}));
  kv.emplace_back("test.f64s", Value::array_of(ValueType::FLOAT64, {Value::float64(0.1), Value::float64(-2)}));
  kv.emplace_back("test.bools", Value::array_of(ValueType::BOOL, {Value::boolean(true), Value::boolean(false)}));
  kv.emplace_back("test.i8s", Value::array_of(ValueType::INT8, {Value::int8(-1), Value::int8(127)}));
  // Three levels: an array of arrays, one of which holds arrays.
  kv.emplace_back("test.nested",
                  Value::array_of(ValueType::ARRAY,
                                  {Value::string_array({"a", ""}),
                                   Value::array_of(ValueType::UINT16, {Value::uint16(7)}),
                                   Value::array_of(ValueType::ARRAY,
                                                   {Value::array_of(ValueType::BOOL, {Value::boolean(true)}),
                                                    Value::array_of(ValueType::INT64, {})}),
                                   Value::array_of(ValueType::STRING, {})}));
  return kv;
}

// The sample declared in a writer; tensor bytes come from a producer (see sample_file).
inline Writer sample_writer(uint64_t alignment = 32) {
  Writer w(alignment);
  for (auto& [k, v] : sample_metadata()) w.set(k, v);
  for (const SampleTensor& t : sample_tensors()) w.add_tensor(t.name, t.type, t.ne);
  return w;
}

// The sample file's bytes; tensor k holds pattern_bytes(n, k + 1).
inline std::vector<uint8_t> sample_file(uint64_t alignment = 32) {
  Writer w = sample_writer(alignment);
  return w.to_bytes([](size_t index, std::span<uint8_t> out) {
    auto p = pattern_bytes(out.size(), static_cast<uint32_t>(index + 1));
    std::memcpy(out.data(), p.data(), out.size());
  });
}

// Compares two values deeply; floats by their stored value (FLOAT32 by its float bits).
inline void expect_same_value(const Value& a, const Value& b, const std::string& where) {
  ASSERT_EQ(a.type, b.type) << where;
  switch (a.type) {
    case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::UINT64:
      EXPECT_EQ(a.u, b.u) << where;
      break;
    case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64:
      EXPECT_EQ(a.i, b.i) << where;
      break;
    case ValueType::FLOAT32: {
      float x = static_cast<float>(a.f), y = static_cast<float>(b.f);
      EXPECT_EQ(0, std::memcmp(&x, &y, 4)) << where << ": " << x << " vs " << y;
      break;
    }
    case ValueType::FLOAT64:
      EXPECT_EQ(0, std::memcmp(&a.f, &b.f, 8)) << where << ": " << a.f << " vs " << b.f;
      break;
    case ValueType::BOOL: EXPECT_EQ(a.b, b.b) << where; break;
    case ValueType::STRING: EXPECT_EQ(a.s, b.s) << where; break;
    case ValueType::ARRAY:
      ASSERT_EQ(a.array_type, b.array_type) << where;
      ASSERT_EQ(a.array.size(), b.array.size()) << where;
      for (size_t k = 0; k < a.array.size(); ++k) expect_same_value(a.array[k], b.array[k], where + "[" + std::to_string(k) + "]");
      break;
  }
}

// Hand-assembles GGUF bytes, including the malformed ones the writer refuses to produce.
struct Raw {
  std::vector<uint8_t> b;
  Raw& bytes(const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Raw& u8(uint8_t v) { return bytes(&v, 1); }
  Raw& u32(uint32_t v) { return bytes(&v, 4); }
  Raw& u64(uint64_t v) { return bytes(&v, 8); }
  Raw& str(std::string_view s) { return u64(s.size()).bytes(s.data(), s.size()); }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return bytes("GGUF", 4).u32(version).u64(n_tensors).u64(n_kv);
  }
  Raw& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(static_cast<uint32_t>(ValueType::UINT32)).u32(v); }
  Raw& kv_str(std::string_view key, std::string_view v) { return str(key).u32(static_cast<uint32_t>(ValueType::STRING)).str(v); }
  Raw& tensor(std::string_view name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t x : ne) u64(x);
    return u32(type).u64(offset);
  }
  Raw& pad_to(uint64_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
  Raw& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

}  // namespace moe::gguf::testing
