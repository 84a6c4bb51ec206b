// layout_test.cpp: the planned file size equals, byte for byte, what gguf::Writer writes for the same
// metadata and tensors, for every mix; and the synthetic vocabulary is well formed.
#include "plan/layout.h"

#include <gtest/gtest.h>

#include <set>

#include "util/error.h"

namespace moe::plan {
namespace {

uint64_t written_size(const Metadata& kv, const std::vector<PlannedTensor>& tensors) {
  gguf::Writer w;
  for (const auto& [k, v] : kv) w.set(k, v);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.ne);
  return w.to_bytes([](size_t, std::span<uint8_t> out) { std::fill(out.begin(), out.end(), uint8_t{0}); }).size();
}

TEST(Layout, EqualsWriterForEveryMix) {
  const auto& hp = find_preset("tiny-mixtral").hp;
  const Vocab vocab = synthetic_vocab(hp.n_vocab);
  for (const auto& mix : quant_mixes()) {
    WeightsLayout l = layout_of_synth(hp, mix, vocab, "tiny");
    EXPECT_EQ(l.file_bytes, written_size(synth_metadata(hp, mix, "tiny", vocab), l.tensors)) << mix.name;
    uint64_t sum = 0;
    for (const auto& t : l.tensors) sum += t.bytes;
    EXPECT_EQ(sum, l.tensor_bytes);
  }
}

TEST(Layout, OddSizesAndAlignment) {
  // Tensors whose sizes are not multiples of the alignment, with a non-default alignment: padding
  // between tensors and after the last one must match the writer.
  for (uint64_t alignment : {32u, 64u, 4096u}) {
    Metadata kv = {{"general.architecture", gguf::Value::string("llama")},
                   {"general.alignment", gguf::Value::uint32(static_cast<uint32_t>(alignment))},
                   {"x.list", gguf::Value::int32_array({1, 2, 3})}};
    std::vector<PlannedTensor> ts = {{"a", {7}, GgmlType::F32, GgmlType::F32, 0},
                                     {"b", {33, 3}, GgmlType::F16, GgmlType::F16, 0},
                                     {"c", {64, 5}, GgmlType::Q4_0, GgmlType::Q4_0, 0}};
    WeightsLayout l = layout_file(kv, ts);
    EXPECT_EQ(l.alignment, alignment);
    EXPECT_EQ(l.tensor_bytes, 28u + 33u * 3u * 2u + 2u * 18u * 5u);
    EXPECT_EQ(l.file_bytes, written_size(kv, l.tensors)) << alignment;
  }
}

TEST(Layout, RejectsRowsThatDoNotFitTheBlock) {
  EXPECT_THROW(layout_file({}, {{"a", {48, 2}, GgmlType::Q4_0, GgmlType::Q4_0, 0}}), Error);
}

TEST(Layout, SyntheticVocab) {
  Vocab v = synthetic_vocab(32000);
  ASSERT_EQ(v.tokens.size(), 32000u);
  ASSERT_EQ(v.scores.size(), 32000u);
  ASSERT_EQ(v.types.size(), 32000u);
  EXPECT_EQ(v.tokens[0], "<unk>");
  EXPECT_EQ(v.tokens[1], "<s>");
  EXPECT_EQ(v.tokens[2], "</s>");
  EXPECT_EQ(v.tokens[3], "<0x00>");
  EXPECT_EQ(v.tokens[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(v.tokens[258], "<0xFF>");
  EXPECT_EQ(v.types[258], 6);
  EXPECT_EQ(v.types[259], 1);
  std::set<std::string> distinct(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(distinct.size(), v.tokens.size());
  EXPECT_THROW(synthetic_vocab(258), Error);
  const auto& hp = find_preset("mixtral-8x7b").hp;
  EXPECT_THROW(synth_metadata(hp, find_mix("Q4_0"), "x", synthetic_vocab(300)), Error);
}

}  // namespace
}  // namespace moe::plan
