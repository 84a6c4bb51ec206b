// quant_golden_test.cpp: rung 2 of the correctness ladder. For every tiny-mixtral file llama.cpp
// quantized, the first values of every tensor must dequantize to exactly the floats gguf-py's reference
// decoder produced (../shared/golden/tiny-mixtral.<TYPE>.deq.{json,f32}), compared bit for bit.
//
// No tolerance is needed for any type: every decoded value is at most two float operations
// ((d*sc)*q - dmin*m) done in the same order as gguf-py's numpy code, and the products are even exact
// in float (a half has 11 significant bits, sc and q at most 7 and 6: 24 bits at most), so only the
// final subtraction rounds. That also makes fused multiply-add contraction harmless here (checked: the
// reference built with -mfma and contraction on passes too); the reference files switch contraction
// off anyway, since GCC contracts a*b - c in C++ even with -std=c++20 whenever the target has FMA.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "quant/quant.h"
#include "testutil/fixtures.h"
#include "util/fp16.h"

namespace moe::quant {
namespace {

struct GoldenEntry {
  std::string tensor, type;
  int64_t offset_floats = 0, count = 0;
};

// The index is a fixed, flat shape ({"tensors": [{"tensor": s, "type": s, "offset_floats": n,
// "count": n}, ...]}), so a few string scans read it without a JSON dependency in this module.
std::string string_field(const std::string& obj, const std::string& key) {
  size_t k = obj.find("\"" + key + "\"");
  if (k == std::string::npos) throw std::runtime_error("golden index: no " + key + " in " + obj);
  size_t open = obj.find('"', obj.find(':', k) + 1);
  size_t close = obj.find('"', open + 1);
  return obj.substr(open + 1, close - open - 1);
}
int64_t int_field(const std::string& obj, const std::string& key) {
  size_t k = obj.find("\"" + key + "\"");
  if (k == std::string::npos) throw std::runtime_error("golden index: no " + key + " in " + obj);
  return std::stoll(obj.substr(obj.find(':', k) + 1));
}
std::vector<GoldenEntry> parse_index(const std::string& json) {
  std::vector<GoldenEntry> out;
  size_t pos = json.find("\"tensors\"");
  if (pos == std::string::npos) throw std::runtime_error("golden index: no tensors array");
  while ((pos = json.find('{', pos)) != std::string::npos) {
    size_t end = json.find('}', pos);
    std::string obj = json.substr(pos, end - pos + 1);
    out.push_back({string_field(obj, "tensor"), string_field(obj, "type"), int_field(obj, "offset_floats"),
                   int_field(obj, "count")});
    pos = end;
  }
  return out;
}

class GoldenDequant : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenDequant, BitExactWithGgufPy) {
  const std::string variant = GetParam();
  const std::string index_rel = "golden/tiny-mixtral." + variant + ".deq.json";
  const std::string values_rel = "golden/tiny-mixtral." + variant + ".deq.f32";
  const std::string model_rel = "models/tiny-mixtral/tiny-mixtral." + variant + ".gguf";
  MOE_REQUIRE_FIXTURE(index_rel);
  MOE_REQUIRE_FIXTURE(values_rel);
  MOE_REQUIRE_FIXTURE(model_rel);

  const std::vector<GoldenEntry> entries = parse_index(testing::read_file(testing::fixture(index_rel)));
  const std::string golden = testing::read_file(testing::fixture(values_rel));
  const gguf::File file = gguf::File::open(testing::fixture(model_rel));
  ASSERT_FALSE(entries.empty());

  for (const GoldenEntry& e : entries) {
    SCOPED_TRACE(variant + " " + e.tensor + " (" + e.type + ")");
    const gguf::TensorInfo* t = file.find_tensor(e.tensor);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(type_name(t->type), e.type);
    ASSERT_TRUE(is_supported(t->type));
    ASSERT_LE(static_cast<uint64_t>(e.count), t->n_elements);
    ASSERT_LE(static_cast<size_t>(e.offset_floats + e.count) * 4, golden.size());

    std::vector<float> got(static_cast<size_t>(e.count));
    dequantize_row(t->type, t->data, got.data(), e.count);
    const char* want = golden.data() + e.offset_floats * 4;
    if (std::memcmp(got.data(), want, got.size() * 4) != 0) {
      for (size_t i = 0; i < got.size(); ++i) {
        float w;
        std::memcpy(&w, want + 4 * i, 4);
        ASSERT_EQ(f32_to_bits(got[i]), f32_to_bits(w)) << "first difference at value " << i << ": got " << got[i]
                                                       << ", gguf-py " << w;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFiles, GoldenDequant,
                         ::testing::Values("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M",
                                           "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"));

// The goldens above contain every format a llama.cpp file can hold here except BF16, whose decoding is
// by definition the upper half of a float32.
TEST(Dequant, Bf16IsTheUpperHalfOfAFloat) {
  const uint16_t src[4] = {0x3f80, 0xc040, 0x0001, 0x7f80};
  float dst[4];
  dequantize_row(GgmlType::BF16, src, dst, 4);
  EXPECT_EQ(dst[0], 1.0f);
  EXPECT_EQ(dst[1], -3.0f);
  EXPECT_EQ(f32_to_bits(dst[2]), 0x00010000u);
  EXPECT_EQ(dst[3], std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace moe::quant
