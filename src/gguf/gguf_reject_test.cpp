// gguf_reject_test.cpp: one hand-made bad file per class of malformation the reader must refuse, each
// asserting that the error names the file and the offending field. Files are hand-assembled with the
// Raw builder (most are things the writer refuses to make) or made by the writer and then patched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "gguf/gguf.h"
#include "gguf/gguf_testing.h"

namespace moe::gguf {
namespace {

using testing::Raw;

constexpr uint32_t kF32 = 0, kQ4_K = 12;

// Parses `bytes` as "bad.gguf" and returns the error text, or fails the test when it parses.
std::string reject(const std::vector<uint8_t>& bytes, const Limits& limits = {}) {
  // An exact-size heap copy, so that AddressSanitizer flags any read past the end.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size() + 1]);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  try {
    File::parse(std::span<const uint8_t>(copy.get(), bytes.size()), "bad.gguf", limits);
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
    return msg;
  }
  ADD_FAILURE() << "the file was accepted";
  return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE((text).find(part), std::string::npos) << "message: " << (text)

// A valid single-tensor file whose tensor info is under test: one F32 tensor of 4 floats.
Raw one_tensor(const std::vector<uint64_t>& ne, uint32_t type = kF32, uint64_t offset = 0, size_t data_bytes = 16) {
  Raw r;
  r.header(1, 1).kv_str("general.architecture", "llama").tensor("w", ne, type, offset).pad_to(32).zeros(data_bytes);
  return r;
}

TEST(Reject, ValidBaseFilesParse) {
  // The templates below are valid when not corrupted, so each rejection is caused by its one change.
  EXPECT_NO_THROW(File::parse(one_tensor({4}).b));
  EXPECT_NO_THROW(File::parse(one_tensor({256}, kQ4_K, 0, 144).b));
}

TEST(Reject, BadMagic) {
  Raw r = one_tensor({4});
  std::memcpy(r.b.data(), "GGML", 4);
  EXPECT_CONTAINS(reject(r.b), "not a GGUF file: magic is 'GGML'");
}

TEST(Reject, Version1) {
  Raw r = one_tensor({4});
  r.b[4] = 1;
  EXPECT_CONTAINS(reject(r.b), "GGUF version 1 is not supported");
}

TEST(Reject, UnknownAndBigEndianVersions) {
  Raw r = one_tensor({4});
  r.b[4] = 4;
  EXPECT_CONTAINS(reject(r.b), "unsupported GGUF version 4");
  r.b[4] = 0;
  r.b[7] = 3;
  EXPECT_CONTAINS(reject(r.b), "big-endian");
}

TEST(Reject, TruncatedHeader) {
  Raw r = one_tensor({4});
  for (size_t n : {0, 3, 4, 8, 23}) {
    std::vector<uint8_t> cut(r.b.begin(), r.b.begin() + static_cast<long>(n));
    EXPECT_CONTAINS(reject(cut), cat("the file has ", n, " bytes, a GGUF header needs 24"));
  }
}

TEST(Reject, HugeKvCount) {
  Raw r;
  r.header(0, 1ull << 60).kv_u32("a", 1);
  std::string msg = reject(r.b);
  EXPECT_CONTAINS(msg, "n_kv = 1152921504606846976");
  // Just one more entry than the bytes could hold is caught too.
  Raw s;
  s.header(0, 2).kv_u32("a", 1);
  EXPECT_CONTAINS(reject(s.b), "n_kv = 2");
}

TEST(Reject, HugeTensorCount) {
  Raw r;
  r.header(UINT64_MAX, 0).zeros(64);
  EXPECT_CONTAINS(reject(r.b), "n_tensors = 18446744073709551615");
  Raw s = one_tensor({4});
  std::memcpy(s.b.data() + 8, "\x00\x00\x00\x00\x00\x10\x00\x00", 8);  // 2^44
  EXPECT_CONTAINS(reject(s.b), "n_tensors = 17592186044416");
}

TEST(Reject, StringLengthPastEnd) {
  Raw r;
  r.header(0, 1).str("general.name").u32(static_cast<uint32_t>(ValueType::STRING)).u64(1000).bytes("abc", 3);
  std::string msg = reject(r.b);
  EXPECT_CONTAINS(msg, "key 'general.name': string length 1000 runs past the end");
  // A key length past the end names the entry by number.
  Raw k;
  k.header(0, 1).u64(1ull << 62).zeros(16);
  EXPECT_CONTAINS(reject(k.b), "metadata entry #0: key length 4611686018427387904 runs past the end");
  // A tensor name.
  Raw t;
  t.header(1, 0).u64(500).zeros(40);
  EXPECT_CONTAINS(reject(t.b), "tensor #0: name length 500 runs past the end");
}

TEST(Reject, StringOverLimit) {
  Limits limits;
  limits.max_string_bytes = 4;
  Raw r;
  r.header(0, 1).kv_str("k", "hello");
  EXPECT_CONTAINS(reject(r.b, limits), "key 'k': string length 5 exceeds the limit of 4 bytes");
}

TEST(Reject, HugeArrayCount) {
  Raw r;
  r.header(0, 1).str("tokenizer.ggml.scores").u32(static_cast<uint32_t>(ValueType::ARRAY));
  r.u32(static_cast<uint32_t>(ValueType::FLOAT32)).u64(1ull << 40).zeros(64);
  EXPECT_CONTAINS(reject(r.b), "key 'tokenizer.ggml.scores': array count 1099511627776 of FLOAT32 needs at least 4 bytes");
  // Within the file but over the limit.
  Limits limits;
  limits.max_array_elements = 8;
  Raw s;
  s.header(0, 1).str("a").u32(static_cast<uint32_t>(ValueType::ARRAY)).u32(0).u64(16).zeros(16);
  EXPECT_CONTAINS(reject(s.b, limits), "key 'a': array count 16 exceeds the limit of 8 elements");
}

TEST(Reject, MetadataOverItsMemoryBudget) {
  // The case scaled down: an array of one-byte elements costs sizeof(Value) (>100 bytes) each
  // once parsed; 2 M of them (a 2 MB file) would take over 200 MB, more than the default budget of
  // 64 MiB + 8 x the file size, and are refused before anything is allocated, naming the key.
  constexpr uint64_t kCount = 2'000'000;
  Raw r;
  r.header(0, 2).kv_str("general.architecture", "llama");
  r.str("x.bytes").u32(static_cast<uint32_t>(ValueType::ARRAY)).u32(static_cast<uint32_t>(ValueType::UINT8)).u64(kCount);
  r.zeros(kCount);
  std::string e = reject(r.b);
  EXPECT_CONTAINS(e, "key 'x.bytes': array would take the metadata past its memory budget of ");
  EXPECT_CONTAINS(e, "67108864 + 8 x the file's ");
  // The budget grows with the file: with 64 bytes per file byte the same array parses.
  Limits generous;
  generous.metadata_budget_per_file_byte = 64 + sizeof(Value);
  File f = File::parse(std::span<const uint8_t>(r.b.data(), r.b.size()), "ok.gguf", generous);
  EXPECT_EQ(f.find("x.bytes")->array.size(), kCount);
  // Strings count by their length: the second of three 16-byte strings crosses a budget of 60 bytes
  // plus what the entry and its array take.
  Limits tight;
  tight.metadata_budget_per_file_byte = 0;
  tight.metadata_budget_base = sizeof(std::pair<std::string, Value>) + 3 * sizeof(Value) + 20;
  Raw s;
  s.header(0, 1).str("t").u32(static_cast<uint32_t>(ValueType::ARRAY)).u32(static_cast<uint32_t>(ValueType::STRING));
  s.u64(3).str("0123456789abcdef").str("0123456789abcdef").str("0123456789abcdef");
  EXPECT_CONTAINS(reject(s.b, tight), "key 't'[1]: string would take the metadata past its memory budget");
}

TEST(Reject, ArrayElementErrorsNameTheIndex) {
  // The third string of an array runs past the end.
  Raw r;
  r.header(0, 1).str("tokenizer.ggml.tokens").u32(static_cast<uint32_t>(ValueType::ARRAY));
  r.u32(static_cast<uint32_t>(ValueType::STRING)).u64(3).str("a").str("b").u64(99);
  EXPECT_CONTAINS(reject(r.b), "key 'tokenizer.ggml.tokens'[2]: string length 99 runs past the end");
}

TEST(Reject, NestedArrayDepth) {
  // Five arrays, one inside the other (the limit is four).
  Raw r;
  r.header(0, 1).str("deep").u32(static_cast<uint32_t>(ValueType::ARRAY));
  for (int level = 0; level < 4; ++level) r.u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(1);
  r.u32(static_cast<uint32_t>(ValueType::UINT8)).u64(0);
  EXPECT_CONTAINS(reject(r.b), "key 'deep'[0][0][0]: arrays nested deeper than the limit of 4 levels");
  // Four levels are fine.
  Raw ok;
  ok.header(0, 1).str("deep").u32(static_cast<uint32_t>(ValueType::ARRAY));
  for (int level = 0; level < 3; ++level) ok.u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(1);
  ok.u32(static_cast<uint32_t>(ValueType::UINT8)).u64(0);
  EXPECT_NO_THROW(File::parse(ok.b));
}

TEST(Reject, NDims) {
  EXPECT_CONTAINS(reject(one_tensor({}).b), "tensor 'w': n_dims = 0 is not between 1 and 4");
  EXPECT_CONTAINS(reject(one_tensor({4, 1, 1, 1, 1}).b), "tensor 'w': n_dims = 5 is not between 1 and 4");
}

TEST(Reject, ZeroDimension) {
  EXPECT_CONTAINS(reject(one_tensor({4, 0}).b), "tensor 'w': ne[1] = 0");
}

TEST(Reject, NegativeDimension) {
  EXPECT_CONTAINS(reject(one_tensor({UINT64_MAX}).b), "tensor 'w': ne[0] = 18446744073709551615 is negative");
}

TEST(Reject, ElementCountOverflow) {
  EXPECT_CONTAINS(reject(one_tensor({1ull << 40, 1ull << 40}).b),
                  "tensor 'w': element count overflows (ne = {1099511627776, 1099511627776})");
}

TEST(Reject, ByteSizeOverflow) {
  // 2^62 F32 elements is a valid count, but 2^64 bytes.
  EXPECT_CONTAINS(reject(one_tensor({1ull << 62}).b), "tensor 'w': byte size overflows 64 bits");
}

TEST(Reject, UnknownTensorType) {
  EXPECT_CONTAINS(reject(one_tensor({4}, 99).b), "tensor 'w': unknown tensor type id 99");
  EXPECT_CONTAINS(reject(one_tensor({4}, 4).b), "tensor 'w': unknown tensor type id 4");  // removed Q4_2
}

TEST(Reject, RowNotDivisibleByBlockSize) {
  EXPECT_CONTAINS(reject(one_tensor({100}, kQ4_K).b), "tensor 'w': ne[0] = 100 is not a multiple of the Q4_K block size 256");
}

TEST(Reject, MisalignedOffset) {
  EXPECT_CONTAINS(reject(one_tensor({4}, kF32, 1, 64).b), "tensor 'w': offset 1 is not a multiple of the alignment 32");
}

TEST(Reject, DataPastEnd) {
  std::string msg = reject(one_tensor({4}, kF32, 0, 15).b);
  EXPECT_CONTAINS(msg, "tensor 'w': data at offset 0 (16 bytes) runs past the end of the file");
  // An offset that makes data_offset + offset overflow.
  EXPECT_CONTAINS(reject(one_tensor({4}, kF32, UINT64_MAX - 31).b), "tensor 'w': data at offset 18446744073709551584");
  // A size that does.
  EXPECT_CONTAINS(reject(one_tensor({1ull << 61}).b), "tensor 'w': data at offset 0 (9223372036854775808 bytes) runs past");
}

std::vector<uint8_t> with_alignment_value(uint32_t value_type, uint64_t value, size_t value_bytes) {
  Raw r;
  r.header(1, 1).str("general.alignment").u32(value_type).bytes(&value, value_bytes);
  r.tensor("w", {4}, kF32, 0).pad_to(64).zeros(64);
  return r.b;
}

TEST(Reject, BadAlignment) {
  const uint32_t u32 = static_cast<uint32_t>(ValueType::UINT32);
  EXPECT_CONTAINS(reject(with_alignment_value(u32, 48, 4)), "key 'general.alignment': alignment 48 is not a power of two");
  EXPECT_CONTAINS(reject(with_alignment_value(u32, 0, 4)), "key 'general.alignment': alignment 0 is not a positive power of two");
  EXPECT_CONTAINS(reject(with_alignment_value(u32, 1u << 21, 4)),
                  "key 'general.alignment': alignment 2097152 exceeds the limit of 1048576");
  EXPECT_CONTAINS(reject(with_alignment_value(static_cast<uint32_t>(ValueType::INT32), 0xffffffffu, 4)),
                  "key 'general.alignment': alignment -1 is not a positive power of two");
  EXPECT_CONTAINS(reject(with_alignment_value(static_cast<uint32_t>(ValueType::FLOAT32), 0x42000000u, 4)),
                  "key 'general.alignment': has type FLOAT32, expected an integer");
  // Any integer type with a good value is accepted.
  EXPECT_EQ(File::parse(with_alignment_value(static_cast<uint32_t>(ValueType::UINT64), 64, 8)).alignment(), 64u);
  EXPECT_EQ(File::parse(with_alignment_value(static_cast<uint32_t>(ValueType::UINT8), 1, 1)).alignment(), 1u);
}

TEST(Reject, DuplicateKey) {
  Raw r;
  r.header(0, 3).kv_u32("a", 1).kv_u32("b", 2).kv_u32("a", 3);
  EXPECT_CONTAINS(reject(r.b), "duplicate metadata key 'a'");
}

TEST(Reject, DuplicateTensorName) {
  Raw r;
  r.header(2, 0).tensor("w", {4}, kF32, 0).tensor("w", {4}, kF32, 32).pad_to(32).zeros(64);
  EXPECT_CONTAINS(reject(r.b), "duplicate tensor name 'w'");
}

TEST(Reject, OverlappingTensors) {
  Raw r;
  r.header(2, 0).tensor("a", {16}, kF32, 0).tensor("b", {4}, kF32, 32).pad_to(32).zeros(128);
  EXPECT_CONTAINS(reject(r.b), "tensors 'a' [0, 64) and 'b' [32, 48) overlap");
  // Sharing the very same bytes is an overlap too; touching ends are not.
  Raw same;
  same.header(2, 0).tensor("a", {8}, kF32, 0).tensor("b", {8}, kF32, 0).pad_to(32).zeros(64);
  EXPECT_CONTAINS(reject(same.b), "overlap");
  Raw touching;
  touching.header(2, 0).tensor("a", {8}, kF32, 32).tensor("b", {8}, kF32, 0).pad_to(32).zeros(64);
  EXPECT_NO_THROW(File::parse(touching.b));
}

TEST(Reject, UnknownValueType) {
  Raw r;
  r.header(0, 1).str("general.x").u32(13).u32(0);
  EXPECT_CONTAINS(reject(r.b), "key 'general.x': unknown value type 13");
  Raw a;
  a.header(0, 1).str("general.y").u32(static_cast<uint32_t>(ValueType::ARRAY)).u32(0xffffffffu).u64(0);
  EXPECT_CONTAINS(reject(a.b), "key 'general.y': unknown array element type 4294967295");
}

TEST(Reject, EmptyKeyAndEmptyTensorName) {
  Raw r;
  r.header(0, 1).kv_u32("", 1);
  EXPECT_CONTAINS(reject(r.b), "metadata entry #0: empty key");
  Raw t;
  t.header(1, 0).tensor("", {4}, kF32, 0).pad_to(32).zeros(16);
  EXPECT_CONTAINS(reject(t.b), "tensor #0: empty tensor name");
}

TEST(Reject, BoolOtherThanZeroOrOne) {
  Raw r;
  r.header(0, 1).str("flag").u32(static_cast<uint32_t>(ValueType::BOOL)).u8(2);
  EXPECT_CONTAINS(reject(r.b), "key 'flag': BOOL value 2 is neither 0 nor 1");
}

TEST(Reject, TruncatedInsideTensorInfo) {
  Raw r = one_tensor({4});
  // Header 24 + kv (8 + 20 + 4 + 8 + 5) = 69; name (8 + 1), n_dims 4 → cut inside ne[0].
  std::vector<uint8_t> cut(r.b.begin(), r.b.begin() + 69 + 9 + 4 + 3);
  EXPECT_CONTAINS(reject(cut), "tensor 'w': truncated: the ne needs 8 bytes at offset 82");
}

TEST(Reject, HostileNamesAreEscapedInMessages) {
  Raw r;
  r.header(2, 0).tensor("a\n\x1b[31m", {4}, kF32, 0).tensor("a\n\x1b[31m", {4}, kF32, 32).pad_to(32).zeros(64);
  std::string msg = reject(r.b);
  EXPECT_CONTAINS(msg, "duplicate tensor name 'a\\x0a\\x1b[31m'");
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(Reject, PatchedWriterFile) {
  // The writer's sample with its n_dims of "output.weight" patched to 7: the error names that tensor.
  std::vector<uint8_t> bytes = testing::sample_file();
  const std::string name = "output.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  size_t n_dims_at = static_cast<size_t>(it - bytes.begin()) + name.size();
  ASSERT_EQ(bytes[n_dims_at], 1);
  bytes[n_dims_at] = 7;
  EXPECT_CONTAINS(reject(bytes), "tensor 'output.weight': n_dims = 7 is not between 1 and 4");
}

}  // namespace
}  // namespace moe::gguf
