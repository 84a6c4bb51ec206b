// gguf_test.cpp: the writer and reader agree (round trips of every value type, several tensor types
// and alignments, byte-exact data pointers), the typed getters, the writer's own validation, and the
// real fixtures under ../shared/models: known facts, and a re-write through our writer that must
// reproduce llama.cpp's bytes exactly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "gguf/gguf.h"
#include "gguf/gguf_testing.h"
#include "testutil/fixtures.h"

namespace moe::gguf {
namespace {

using testing::pattern_bytes;
using testing::sample_file;
using testing::sample_metadata;
using testing::sample_tensors;

uint64_t align_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A unique scratch path in the build tree's temp folder.
std::string temp_path(const std::string& stem) {
  auto dir = std::filesystem::temp_directory_path();
  return (dir / (stem + "-" + std::to_string(::getpid()) + ".gguf")).string();
}

class RoundTrip : public ::testing::TestWithParam<uint64_t> {};

TEST_P(RoundTrip, EveryValueTypeAndTensorSurvives) {
  const uint64_t alignment = GetParam();
  std::vector<uint8_t> bytes = sample_file(alignment);
  File f = File::parse(bytes, "sample");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.file_size(), bytes.size());
  EXPECT_EQ(f.data_offset() % alignment, 0u);

  // Metadata in order; the writer adds general.alignment first when it is not the default.
  auto expected = sample_metadata();
  size_t first = 0;
  if (alignment != 32) {
    ASSERT_GE(f.metadata().size(), 1u);
    EXPECT_EQ(f.metadata()[0].first, "general.alignment");
    EXPECT_EQ(f.get_uint("general.alignment"), alignment);
    first = 1;
  }
  ASSERT_EQ(f.metadata().size(), expected.size() + first);
  for (size_t k = 0; k < expected.size(); ++k) {
    EXPECT_EQ(f.metadata()[k + first].first, expected[k].first);
    testing::expect_same_value(f.metadata()[k + first].second, expected[k].second, expected[k].first);
    ASSERT_NE(f.find(expected[k].first), nullptr);
  }

  // Tensors in order, packed at aligned offsets, data pointers exactly where the bytes are.
  auto tensors = sample_tensors();
  ASSERT_EQ(f.tensors().size(), tensors.size());
  uint64_t expected_offset = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TensorInfo& t = f.tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, tensors[k].name);
    EXPECT_EQ(t.type, tensors[k].type);
    ASSERT_EQ(t.n_dims, tensors[k].ne.size());
    uint64_t n = 1;
    for (size_t d = 0; d < 4; ++d) {
      int64_t want = d < tensors[k].ne.size() ? tensors[k].ne[d] : 1;
      EXPECT_EQ(t.ne[d], want);
      n *= static_cast<uint64_t>(want);
    }
    EXPECT_EQ(t.n_elements, n);
    const TypeTraits* tr = type_traits(t.type);
    EXPECT_EQ(t.n_bytes, n / static_cast<uint64_t>(tr->block_size) * tr->type_size);
    EXPECT_EQ(t.rows(), n / static_cast<uint64_t>(t.ne[0]));
    expected_offset = align_to(expected_offset, alignment);
    EXPECT_EQ(t.offset, expected_offset);
    expected_offset += t.n_bytes;
    EXPECT_EQ(t.data, bytes.data() + f.data_offset() + t.offset);
    auto want = pattern_bytes(t.n_bytes, static_cast<uint32_t>(k + 1));
    EXPECT_EQ(0, std::memcmp(t.data, want.data(), want.size()));
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
  // The last tensor is padded to the alignment too, as llama.cpp writes files.
  EXPECT_EQ(bytes.size(), f.data_offset() + align_to(expected_offset, alignment));
  // Padding is zeros.
  for (uint64_t p = f.data_offset() + expected_offset; p < bytes.size(); ++p) ASSERT_EQ(bytes[p], 0) << p;
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
  EXPECT_EQ(f.find("absent"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Alignments, RoundTrip, ::testing::Values(1, 8, 32, 64, 4096));

TEST(RoundTrip, EmptyFileAndVersion2) {
  Writer w;
  std::vector<uint8_t> bytes = w.to_bytes();
  EXPECT_EQ(bytes.size(), 32u);  // 24-byte header padded to 32
  File f = File::parse(bytes);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
  // Version 2 has the same layout as 3.
  bytes[4] = 2;
  EXPECT_EQ(File::parse(bytes).version(), 2u);
  // A file without tensors may end right after the header (no padding to a data section).
  testing::Raw r;
  r.header(0, 1).kv_u32("general.alignment", 64);
  File g = File::parse(r.b);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_TRUE(g.tensors().empty());
}

TEST(RoundTrip, StreamedWriteMatchesToBytesAndLeavesNoTempFile) {
  const std::string path = temp_path("moe-gguf-write");
  testing::sample_writer(64).write(path, [](size_t index, std::span<uint8_t> out) {
    auto p = pattern_bytes(out.size(), static_cast<uint32_t>(index + 1));
    std::memcpy(out.data(), p.data(), out.size());
  });
  std::vector<uint8_t> expected = sample_file(64);
  {
    File f = File::open(path);
    ASSERT_EQ(f.file_size(), expected.size());
    EXPECT_EQ(f.name(), path);
    const TensorInfo* t = f.find_tensor("output.weight");
    ASSERT_NE(t, nullptr);
    // A copy of the File keeps the map alive after the original is gone.
    const uint64_t n_bytes = t->n_bytes;
    File copy = f;
    EXPECT_EQ(&copy.tensors(), &f.tensors());  // copies share what was parsed
    f = File();
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_EQ(f.find_tensor("output.weight"), nullptr);
    const TensorInfo* c = copy.find_tensor("output.weight");
    ASSERT_NE(c, nullptr);
    ASSERT_EQ(c->n_bytes, n_bytes);
    auto want = pattern_bytes(n_bytes, 5);
    EXPECT_EQ(0, std::memcmp(c->data, want.data(), want.size()));
  }
  std::string text = moe::testing::read_file(path);
  ASSERT_EQ(text.size(), expected.size());
  EXPECT_EQ(0, std::memcmp(text.data(), expected.data(), expected.size()));
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(path + ".partial"), std::string::npos) << e.path();
  std::filesystem::remove(path);
}

TEST(Open, MissingAndEmptyFilesAreErrorsNamingThePath) {
  EXPECT_NE(error_of([] { File::open("/nonexistent-dir/model.gguf"); }).find("/nonexistent-dir/model.gguf"),
            std::string::npos);
  const std::string path = temp_path("moe-gguf-empty");
  { std::ofstream(path, std::ios::binary); }
  std::string msg = error_of([&] { File::open(path); });
  EXPECT_EQ(msg.rfind(path + ": truncated header", 0), 0u) << msg;
  std::filesystem::remove(path);
}

TEST(RoundTrip, TensorsWithOwnBytesNeedNoProducer) {
  Writer w;
  w.add_tensor("a", GgmlType::F32, {3}, pattern_bytes(12, 9));
  w.add_tensor("b", GgmlType::Q4_0, {32, 2}, pattern_bytes(36, 10));
  auto bytes = w.to_bytes();
  File g = File::parse(bytes);
  EXPECT_EQ(0, std::memcmp(g.find_tensor("b")->data, pattern_bytes(36, 10).data(), 36));
  EXPECT_EQ(g.find_tensor("b")->offset, 32u);
}

TEST(Writer, FailingProducerLeavesNoFile) {
  const std::string path = temp_path("moe-gguf-fail");
  std::filesystem::remove(path);
  Writer w;
  w.add_tensor("a", GgmlType::F32, {4});
  w.add_tensor("b", GgmlType::F32, {4});
  EXPECT_THROW(w.write(path, [](size_t index, std::span<uint8_t>) {
    if (index == 1) throw Error("producer failed");
  }), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial-" + std::to_string(::getpid())));
  // No producer at all for a tensor without bytes is an error too, before anything is written.
  EXPECT_NE(error_of([&] { w.write(path); }).find("no producer"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path));
  // An unwritable destination names the path.
  EXPECT_NE(error_of([&] { w.write("/nonexistent-dir/x.gguf", [](size_t, std::span<uint8_t>) {}); }).find("/nonexistent-dir"),
            std::string::npos);
}

TEST(Writer, ValidatesOnAdd) {
  Writer w;
  w.add_tensor("a", GgmlType::Q4_K, {256, 2});
  EXPECT_NE(error_of([&] { w.add_tensor("a", GgmlType::F32, {1}); }).find("duplicate tensor name 'a'"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", GgmlType::F32, {}); }).find("n_dims = 0"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", GgmlType::F32, {1, 1, 1, 1, 1}); }).find("n_dims = 5"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", GgmlType::F32, {4, 0}); }).find("ne[1] = 0"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", GgmlType::Q4_K, {100}); }).find("ne[0] = 100 is not a multiple of the Q4_K block size 256"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", GgmlType::F32, {1ll << 40, 1ll << 40}); }).find("overflows"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("b", static_cast<GgmlType>(99), {1}); }).find("unknown type"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("", GgmlType::F32, {1}); }).find("empty tensor name"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("c", GgmlType::F32, {2}, std::vector<uint8_t>(7)); }).find("got 7 bytes"),
            std::string::npos);
  EXPECT_EQ(w.tensor_count(), 1u);  // nothing rejected was kept
  EXPECT_EQ(w.tensor_bytes(0), 2u * 144u);
  EXPECT_THROW(w.tensor_bytes(1), Error);
}

TEST(Writer, ValidatesMetadataAndAlignment) {
  EXPECT_THROW(Writer(0), Error);
  EXPECT_THROW(Writer(48), Error);
  EXPECT_THROW(Writer(1ull << 21), Error);
  Writer w;
  EXPECT_THROW(w.set("", Value::uint8(1)), Error);
  Value bad = Value::array_of(ValueType::UINT8, {Value::uint8(1)});
  bad.array.push_back(Value::string("x"));  // bypasses array_of's check
  EXPECT_NE(error_of([&] { w.set("k", bad); }).find("array element 1 has type STRING"), std::string::npos);
  EXPECT_THROW(Value::array_of(ValueType::UINT8, {Value::int8(1)}), Error);
  // Five nested levels exceed the reader's limit of four, so the writer refuses them.
  Value v = Value::array_of(ValueType::UINT8, {});
  for (int level = 2; level <= 4; ++level) v = Value::array_of(ValueType::ARRAY, {v});
  w.set("deep4", v);
  EXPECT_NE(error_of([&] { w.set("deep5", Value::array_of(ValueType::ARRAY, {v})); }).find("nested deeper"), std::string::npos);
  EXPECT_THROW(w.set("general.alignment", Value::uint32(24)), Error);
  EXPECT_THROW(w.set("general.alignment", Value::string("32")), Error);

  // Setting general.alignment re-lays-out the tensors; set() replaces in place and keeps the position.
  w.add_tensor("a", GgmlType::F32, {1});
  w.add_tensor("b", GgmlType::F32, {1});
  w.set("x", Value::uint8(1));
  w.set("general.alignment", Value::uint64(128));
  w.set("x", Value::uint8(2));
  auto bytes = w.to_bytes([](size_t, std::span<uint8_t> out) { std::fill(out.begin(), out.end(), 0x5a); });
  File f = File::parse(bytes);
  EXPECT_EQ(f.alignment(), 128u);
  EXPECT_EQ(f.find_tensor("b")->offset, 128u);
  EXPECT_EQ(f.metadata()[1].first, "x");
  EXPECT_EQ(f.get_uint("x"), 2u);
  w.remove("general.alignment");
  File g = File::parse(w.to_bytes([](size_t, std::span<uint8_t>) {}));
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.find_tensor("b")->offset, 32u);
  EXPECT_EQ(g.find("general.alignment"), nullptr);
}

TEST(Getters, TypedAccessAndErrorsNameTheKey) {
  auto bytes = sample_file();
  File f = File::parse(bytes, "sample.gguf");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("general.name"), "");
  EXPECT_EQ(f.get_int("test.i8"), -128);
  EXPECT_EQ(f.get_int("test.u32"), 4294967295ll);
  EXPECT_EQ(f.get_uint("test.u8"), 255u);
  EXPECT_EQ(f.get_uint("test.u64"), 18446744073709551615ull);
  EXPECT_EQ(f.get_int("test.i64"), INT64_MIN);
  EXPECT_EQ(f.get_float("test.f64"), 1e300);
  EXPECT_EQ(f.get_float("test.f32"), static_cast<double>(-1.5e-39f));
  EXPECT_EQ(f.get_bool("test.true"), true);
  EXPECT_EQ(f.get_bool("test.false"), false);
  EXPECT_EQ(f.get_string("test.bytes"), std::string("\xff\xfe\0x\xc3", 5));
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"<unk>", "", "h\xc3\xa9llo", "\xe2\x96\x81the"}));
  EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores"), (std::vector<float>{0.0f, -1.25f, 3e38f, -0.0f}));
  EXPECT_EQ(f.get_float_array("test.f64s"), (std::vector<float>{0.1f, -2.0f}));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{2, 1, 1, 6}));
  EXPECT_EQ(f.get_int_array("test.i8s"), (std::vector<int64_t>{-1, 127}));
  EXPECT_EQ(f.get_int_array("test.empty_u8"), std::vector<int64_t>{});
  EXPECT_EQ(f.get_string_array("test.empty_strings"), std::vector<std::string>{});
  EXPECT_FALSE(f.get_int("absent").has_value());
  EXPECT_FALSE(f.get_string_array("absent").has_value());

  auto expect_error = [&](const std::function<void()>& fn, const std::string& part) {
    std::string msg = error_of(fn);
    EXPECT_EQ(msg.rfind("sample.gguf: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
  };
  expect_error([&] { f.get_int("test.u64"); }, "key 'test.u64' = 18446744073709551615 does not fit");
  expect_error([&] { f.get_uint("test.i8"); }, "key 'test.i8' = -128 is negative");
  expect_error([&] { f.get_int("general.name"); }, "key 'general.name' has type STRING, expected an integer");
  expect_error([&] { f.get_float("test.u8"); }, "key 'test.u8' has type UINT8");
  expect_error([&] { f.get_bool("test.u8"); }, "key 'test.u8' has type UINT8, expected BOOL");
  expect_error([&] { f.get_string("test.true"); }, "key 'test.true' has type BOOL, expected STRING");
  expect_error([&] { f.get_string_array("tokenizer.ggml.scores"); }, "key 'tokenizer.ggml.scores' is an array of FLOAT32");
  expect_error([&] { f.get_float_array("tokenizer.ggml.tokens"); }, "is an array of STRING");
  expect_error([&] { f.get_int_array("general.name"); }, "has type STRING, expected an array of integers");
  expect_error([&] { f.get_int_array("test.u64s"); }, "key 'test.u64s'[1] = 9223372036854775808 does not fit");

  Value v = Value::uint64(1ull << 63);
  EXPECT_FALSE(v.as_int().has_value());
  EXPECT_EQ(Value::int16(-5).as_int(), -5);
  EXPECT_FALSE(Value::float32(1).as_int().has_value());
  EXPECT_TRUE(Value::float64(1).is_float());
  EXPECT_TRUE(Value::uint16(1).is_integer());
  EXPECT_FALSE(Value::boolean(true).is_integer());
  EXPECT_STREQ(value_type_name(ValueType::FLOAT64), "FLOAT64");
}

// ---- real fixtures ------------------------------------------------------------------------------------

// Rewrites `f` through our writer: the metadata in order, the tensors in order with their bytes.
std::vector<uint8_t> rewrite(const File& f) {
  Writer w;
  for (const auto& [k, v] : f.metadata()) w.set(k, v);
  for (const TensorInfo& t : f.tensors())
    w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims));
  return w.to_bytes([&](size_t index, std::span<uint8_t> out) {
    std::memcpy(out.data(), f.tensors()[index].data, out.size());
  });
}

void check_common(const File& f) {
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value());
  EXPECT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ(f.get_float_array("tokenizer.ggml.scores")->size(), 512u);
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type")->size(), 512u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_DOUBLE_EQ(*f.get_float("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_NE(t.data, nullptr);
    EXPECT_LE(f.data_offset() + t.offset + t.n_bytes, f.file_size()) << t.name;
  }
}

TEST(Fixtures, Stories260K) {
  MOE_REQUIRE_FIXTURE("models/stories260K.gguf");
  File f = File::open(moe::testing::fixture("models/stories260K.gguf"));
  check_common(f);
  EXPECT_EQ(f.get_uint("llama.block_count"), 5u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 64u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), 172u);
  EXPECT_FALSE(f.find("llama.expert_count"));
  EXPECT_EQ(f.tensors().size(), 48u);  // 3 global + 9 per block × 5
  const TensorInfo* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, GgmlType::F32);
  EXPECT_EQ(emb->n_dims, 2u);
  EXPECT_EQ(emb->ne[0], 64);
  EXPECT_EQ(emb->ne[1], 512);
  const TensorInfo* down = f.find_tensor("blk.4.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->ne[0], 172);
  EXPECT_EQ(down->ne[1], 64);
  EXPECT_EQ(f.find_tensor("blk.5.ffn_down.weight"), nullptr);
  // Every norm weight of a trained model is finite and mostly positive.
  const TensorInfo* norm = f.find_tensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  std::vector<float> w(64);
  std::memcpy(w.data(), norm->data, 256);
  int positive = 0;
  for (float x : w) positive += x > 0;
  EXPECT_GT(positive, 48);
}

TEST(Fixtures, Stories260KMoe) {
  MOE_REQUIRE_FIXTURE("models/stories260K-moe.gguf");
  File f = File::open(moe::testing::fixture("models/stories260K-moe.gguf"));
  check_common(f);
  EXPECT_EQ(f.get_uint("llama.block_count"), 5u);
  EXPECT_EQ(f.get_uint("llama.expert_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.expert_used_count"), 2u);
  const TensorInfo* gate = f.find_tensor("blk.0.ffn_gate_exps.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->n_dims, 3u);
  EXPECT_EQ((std::array<int64_t, 4>{gate->ne[0], gate->ne[1], gate->ne[2], gate->ne[3]}),
            (std::array<int64_t, 4>{64, 172, 8, 1}));
  const TensorInfo* router = f.find_tensor("blk.4.ffn_gate_inp.weight");
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->ne[0], 64);
  EXPECT_EQ(router->ne[1], 8);
}

// llama.cpp's file type numbers for each fixture's quantization mix.
const std::map<std::string, uint32_t> kFileTypes = {
    {"F16", 1}, {"Q4_0", 2}, {"Q4_1", 3}, {"Q8_0", 7}, {"Q5_0", 8}, {"Q5_1", 9}, {"Q2_K", 10},
    {"Q3_K_S", 11}, {"Q3_K_M", 12}, {"Q3_K_L", 13}, {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16},
    {"Q5_K_M", 17}, {"Q6_K", 18},
};

class TinyMixtral : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyMixtral, KnownFactsAndByteExactRewrite) {
  const std::string rel = "models/tiny-mixtral/tiny-mixtral." + GetParam() + ".gguf";
  MOE_REQUIRE_FIXTURE(rel);
  File f = File::open(moe::testing::fixture(rel));
  check_common(f);
  EXPECT_EQ(f.get_uint("general.file_type"), kFileTypes.at(GetParam()));
  EXPECT_EQ(f.get_uint("llama.expert_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.expert_used_count"), 2u);
  EXPECT_EQ(f.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 256u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 4u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 1e6);
  EXPECT_EQ(f.tensors().size(), 23u);  // 3 global + 10 per block × 2
  for (const char* name : {"blk.0.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight"}) {
    const TensorInfo* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->n_dims, 3u);
    EXPECT_EQ((std::array<int64_t, 4>{t->ne[0], t->ne[1], t->ne[2], t->ne[3]}), (std::array<int64_t, 4>{256, 256, 8, 1}));
  }
  // The file names their base type: plain formats use it for every expert tensor.
  const TensorInfo* gate = f.find_tensor("blk.0.ffn_gate_exps.weight");
  std::string base = GetParam().substr(0, GetParam().find("_K") == std::string::npos ? std::string::npos : GetParam().find("_K") + 2);
  EXPECT_EQ(type_name(gate->type), base);
  const TensorInfo* router = f.find_tensor("blk.0.ffn_gate_inp.weight");
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->type, GgmlType::F32);
  EXPECT_EQ(router->ne[1], 8);

  // Our writer lays files out exactly as llama.cpp does: a rewrite reproduces every byte.
  std::vector<uint8_t> again = rewrite(f);
  ASSERT_EQ(again.size(), f.file_size());
  MappedFile original(moe::testing::fixture(rel));
  EXPECT_EQ(0, std::memcmp(again.data(), original.data(), again.size()));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TinyMixtral,
                         ::testing::Values("F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M",
                                           "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"));

TEST(Fixtures, StoriesRewriteIsByteExact) {
  for (const char* rel : {"models/stories260K.gguf", "models/stories260K-moe.gguf"}) {
    MOE_REQUIRE_FIXTURE(rel);
    File f = File::open(moe::testing::fixture(rel));
    std::vector<uint8_t> again = rewrite(f);
    MappedFile original(moe::testing::fixture(rel));
    ASSERT_EQ(again.size(), original.size()) << rel;
    EXPECT_EQ(0, std::memcmp(again.data(), original.data(), again.size())) << rel;
  }
}

}  // namespace
}  // namespace moe::gguf
