// safetensors_test.cpp: the reader's round trip with the writer, the shared HF fixture's shards, and
// one rejection test per malformed case, each checking that the error names what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "safetensors/safetensors.h"
#include "safetensors/safetensors_testing.h"
#include "testutil/fixtures.h"

namespace moe::safetensors {
namespace {

using testing::raw_file;

std::string reject(const std::vector<uint8_t>& bytes, const Limits& limits = {}) {
  try {
    File::parse(bytes, "bad.safetensors", limits);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind("bad.safetensors: ", 0), 0u) << m;
    return m;
  }
  ADD_FAILURE() << "accepted a malformed file";
  return "";
}

std::string one(const std::string& fields) { return R"({"t":{)" + fields + "}}"; }

TEST(Safetensors, RoundTripsTheWriter) {
  const std::vector<uint8_t> bytes = testing::sample_file();
  File f = File::parse(bytes, "sample");
  EXPECT_EQ((f.data_offset() - 8) % 8, 0u);  // the header is padded to 8 bytes
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 7u);
  const TensorInfo* e = f.find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, Dtype::BF16);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(e->n_elements, 32u);
  EXPECT_EQ(e->n_bytes(), 64u);
  EXPECT_EQ(e->data[0], 1);
  EXPECT_EQ(e->data[1], 8);
  const TensorInfo* s = f.find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->n_elements, 1u);
  const TensorInfo* z = f.find("empty");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->n_bytes(), 0u);
  EXPECT_EQ(f.find("missing"), nullptr);
  // Sorted by data offset, tiling the data.
  uint64_t at = 0;
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.begin, at);
    at = t.end;
  }
  EXPECT_EQ(f.data_offset() + at, bytes.size());
}

TEST(Safetensors, WriterRefusesInconsistentTensors) {
  Writer w;
  EXPECT_THROW(w.add("a", Dtype::F32, {2}, std::vector<uint8_t>(7)), Error);
  EXPECT_THROW(w.add("", Dtype::F32, {1}, std::vector<uint8_t>(4)), Error);
  EXPECT_THROW(w.add("a", Dtype::F32, {-1}, {}), Error);
  w.add("a", Dtype::F32, {1}, std::vector<uint8_t>(4));
  EXPECT_THROW(w.add("a", Dtype::F32, {1}, std::vector<uint8_t>(4)), Error);
}

TEST(Safetensors, AcceptsMinimalAndPaddedHeaders) {
  EXPECT_TRUE(File::parse(raw_file("{}", {})).tensors().empty());
  EXPECT_EQ(File::parse(raw_file(one(R"("dtype":"F32","shape":[1],"data_offsets":[0,4])") + "    ", {1, 2, 3, 4}))
                .tensors()
                .size(),
            1u);
}

TEST(SafetensorsReject, TooShortForTheLength) {
  EXPECT_NE(reject({1, 2, 3}).find("truncated"), std::string::npos);
}

TEST(SafetensorsReject, HeaderLengthPastTheEnd) {
  auto b = raw_file("{}", {});
  b[0] = 200;
  EXPECT_NE(reject(b).find("runs past the end"), std::string::npos);
}

TEST(SafetensorsReject, HeaderLengthOverTheLimit) {
  auto b = raw_file("{}", {});
  for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = 0xff;
  EXPECT_NE(reject(b).find("over the limit"), std::string::npos);
  Limits small;
  small.max_header_bytes = 4;
  EXPECT_NE(reject(raw_file(one(R"("dtype":"F32","shape":[0],"data_offsets":[0,0])"), {}), small).find("over the limit"),
            std::string::npos);
}

TEST(SafetensorsReject, NotJson) {
  EXPECT_NE(reject(raw_file("{\"a\":", {})).find("not valid JSON"), std::string::npos);
  EXPECT_NE(reject(raw_file("GGUF", {})).find("does not start with '{'"), std::string::npos);
  EXPECT_NE(reject(raw_file("{\"a\":\"\xff\xfe\"}", {})).find("not valid JSON"), std::string::npos);  // bad UTF-8
}

TEST(SafetensorsReject, DeepNesting) {
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_NE(reject(raw_file(deep, {})).find("nests deeper"), std::string::npos);
}

TEST(SafetensorsReject, DuplicateKeys) {
  const std::string t = R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  EXPECT_NE(reject(raw_file("{\"t\":" + t + ",\"t\":" + t + "}", {7})).find("twice"), std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1])"), {7})).find("twice"),
            std::string::npos);
}

TEST(SafetensorsReject, UnknownDtype) {
  EXPECT_NE(reject(raw_file(one(R"("dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1])"), {0})).find("unknown or unsupported dtype"),
            std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":7,"shape":[1],"data_offsets":[0,1])"), {0})).find("dtype"), std::string::npos);
}

TEST(SafetensorsReject, MissingAndExtraFields) {
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","data_offsets":[0,1])"), {0})).find("'shape'"), std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[1])"), {0})).find("data_offsets"), std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1)"), {0})).find("unknown field"),
            std::string::npos);
  EXPECT_NE(reject(raw_file(R"({"t":[1]})", {})).find("not a JSON object"), std::string::npos);
  EXPECT_NE(reject(raw_file("[]", {})).find("does not start"), std::string::npos);
}

TEST(SafetensorsReject, BadShapes) {
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[-1],"data_offsets":[0,0])"), {})).find("shape[0]"), std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[1.5],"data_offsets":[0,0])"), {})).find("shape[0]"), std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1])"), {0})).find("dims"),
            std::string::npos);
  // 2^32 * 2^32 elements wraps to 0 in 64 bits: the multiplication is checked, not trusted.
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0])"), {})).find("overflows"),
            std::string::npos);
  // 2^62 elements of 4 bytes wraps too.
  EXPECT_NE(reject(raw_file(one(R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0])"), {})).find("overflow"),
            std::string::npos);
}

TEST(SafetensorsReject, SizeDisagreesWithOffsets) {
  EXPECT_NE(reject(raw_file(one(R"("dtype":"F32","shape":[2],"data_offsets":[0,4])"), {0, 0, 0, 0})).find("take 8 bytes"),
            std::string::npos);
}

TEST(SafetensorsReject, OffsetsBackwardsOrPastTheEnd) {
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[0],"data_offsets":[2,1])"), {0, 0})).find("ends before"),
            std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[8],"data_offsets":[0,8])"), {0, 0})).find("past the end"),
            std::string::npos);
  EXPECT_NE(reject(raw_file(one(R"("dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0])"), {0})).find("ends before"),
            std::string::npos);
}

TEST(SafetensorsReject, OverlapsHolesAndTrailingBytes) {
  const std::string a = R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})";
  EXPECT_NE(reject(raw_file("{" + a + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", {0, 0, 0})).find("overlaps"),
            std::string::npos);
  EXPECT_NE(reject(raw_file("{" + a + R"(,"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {0, 0})).find("overlaps"),
            std::string::npos);
  EXPECT_NE(reject(raw_file("{" + a + R"(,"b":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}})", {0, 0, 0, 0})).find("hole"),
            std::string::npos);
  EXPECT_NE(reject(raw_file("{" + a + "}", {0, 0, 0})).find("cover 2 bytes"), std::string::npos);
}

TEST(SafetensorsReject, BadMetadataAndNames) {
  EXPECT_NE(reject(raw_file(R"({"__metadata__":{"a":1}})", {})).find("not a string"), std::string::npos);
  EXPECT_NE(reject(raw_file(R"({"__metadata__":[]})", {})).find("__metadata__"), std::string::npos);
  EXPECT_NE(reject(raw_file(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", {})).find("empty name"), std::string::npos);
}

TEST(SafetensorsReject, TooManyTensors) {
  Limits l;
  l.max_tensors = 1;
  std::vector<uint8_t> b = testing::sample_file();
  EXPECT_NE(reject(b, l).find("over the limit"), std::string::npos);
}

TEST(SafetensorsCheckpoint, ReadsTheShardedFixture) {
  MOE_REQUIRE_FIXTURE("models/hf/tiny-mixtral-hf/model.safetensors.index.json");
  Checkpoint c = Checkpoint::open_dir(moe::testing::fixture("models/hf/tiny-mixtral-hf"));
  EXPECT_EQ(c.shards().size(), 2u);
  const TensorInfo* e = c.find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, Dtype::F16);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{512, 256}));
  EXPECT_NE(c.find("model.layers.1.block_sparse_moe.experts.7.w2.weight"), nullptr);
  EXPECT_NE(c.find("lm_head.weight"), nullptr);
}

class CheckpointDir : public ::testing::Test {
 protected:
  moe::testing::TempDir dir;
  void shard(const std::string& name, const std::vector<std::string>& tensors) {
    Writer w;
    for (const auto& t : tensors) w.add(t, Dtype::BF16, {2}, {1, 2, 3, 4});
    w.write(dir.file(name));
  }
  std::string open_error() {
    try {
      Checkpoint::open_dir(dir.dir());
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "accepted a bad checkpoint";
    return "";
  }
};

TEST_F(CheckpointDir, SingleFileAndShards) {
  shard("model.safetensors", {"x"});
  EXPECT_NE(Checkpoint::open_dir(dir.dir()).find("x"), nullptr);
  shard("a.safetensors", {"p"});
  shard("b.safetensors", {"q"});
  dir.write("model.safetensors.index.json", R"({"metadata":{},"weight_map":{"p":"a.safetensors","q":"b.safetensors"}})");
  Checkpoint c = Checkpoint::open_dir(dir.dir());
  EXPECT_EQ(c.shards().size(), 2u);
  EXPECT_NE(c.find("q"), nullptr);
  EXPECT_EQ(c.find("x"), nullptr);  // the index wins over a stray model.safetensors
}

TEST_F(CheckpointDir, RejectsBadIndexes) {
  shard("a.safetensors", {"p"});
  shard("b.safetensors", {"p"});
  dir.write("model.safetensors.index.json", R"({"weight_map":{"p":"../a.safetensors"}})");
  EXPECT_NE(open_error().find("not a plain file name"), std::string::npos);
  dir.write("model.safetensors.index.json", R"({"weight_map":{"p":"a.safetensors","r":"a.safetensors"}})");
  EXPECT_NE(open_error().find("does not hold it"), std::string::npos);
  dir.write("model.safetensors.index.json", R"({"weight_map":{"p":"a.safetensors","q":"b.safetensors"}})");
  EXPECT_NE(open_error().find("in two shards"), std::string::npos);
  dir.write("model.safetensors.index.json", R"({"weight_map":{"p":"c.safetensors"}})");
  EXPECT_NE(open_error().find("c.safetensors"), std::string::npos);
  dir.write("model.safetensors.index.json", R"({"weight_map":[]})");
  EXPECT_NE(open_error().find("weight_map"), std::string::npos);
  dir.write("model.safetensors.index.json", "{");
  EXPECT_NE(open_error().find("not valid JSON"), std::string::npos);
  std::filesystem::remove(dir.file("model.safetensors.index.json"));
  EXPECT_NE(open_error().find("neither"), std::string::npos);
}

}  // namespace
}  // namespace moe::safetensors
